"""Reward-model chat templates render as open-instruct's (the last message ends with EOS), and the score
is read at that EOS, also for a tokenizer that pads with its eos token."""

import pytest
import torch
from omegaconf import OmegaConf

from rlvr.config import ModelConfig
from rlvr.data.preferences import CHAT_TEMPLATES
from rlvr.models.loading import build_tiny_tokenizer, load_reward_model

# open-instruct's dataset_transformation.py CHAT_TEMPLATES, verbatim.
OPEN_INSTRUCT = {
    "simple_concat_with_space": (
        "{% for message in messages %}"
        "{{ ' ' if not loop.first else '' }}"
        "{{ message['content'] }}"
        "{% if loop.last and not add_generation_prompt %}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "simple_chat": (
        "{% for message in messages %}"
        "{{ '\n\n' if not loop.first else '' }}"
        "{{ message['role'].capitalize() + ': ' + message['content'] }}"
        "{% if loop.last and not add_generation_prompt %}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}
PAIR = [{"role": "user", "content": "What is 3+5?"}, {"role": "assistant", "content": "8"}]


@pytest.mark.parametrize("name", sorted(CHAT_TEMPLATES))
def test_templates_render_as_open_instructs(name):
    tokenizer = build_tiny_tokenizer()
    rendered = tokenizer.apply_chat_template(PAIR, chat_template=CHAT_TEMPLATES[name], tokenize=False)
    assert rendered == tokenizer.apply_chat_template(PAIR, chat_template=OPEN_INSTRUCT[name], tokenize=False)
    assert rendered.endswith("8" + tokenizer.eos_token)


def test_score_is_read_at_eos_when_the_tokenizer_pads_with_eos(tmp_path):
    """A tokenizer whose pad is its eos (load_pretrained's fallback) gets a pad token of its own, so the
    sequence-classification head reads the EOS, not the token before it."""
    model, tokenizer = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)
    tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(tmp_path), tokenizer.save_pretrained(tmp_path)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": str(tmp_path)})
    model, tokenizer = load_reward_model(cfg, seed=0)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    texts = [
        tokenizer.apply_chat_template(m, chat_template=CHAT_TEMPLATES["simple_chat"], tokenize=False)
        for m in (PAIR, PAIR[:1] + [{"role": "assistant", "content": "it is 8, I think"}])
    ]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        scores = model(**batch).logits[:, 0]
        hidden = model.base_model(**batch).last_hidden_state
    eos_at = [max(i for i, t in enumerate(row) if t == tokenizer.eos_token_id) for row in batch["input_ids"].tolist()]
    at_eos = model.score(hidden[torch.arange(2), eos_at])[:, 0]
    torch.testing.assert_close(scores, at_eos)
