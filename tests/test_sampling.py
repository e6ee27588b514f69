"""rlvr.sampling draws exactly what HF `generate` draws with the same seed, and leaves the RNG where it does."""

import pytest
import torch
from omegaconf import OmegaConf

from rlvr.config import TinyModelConfig
from rlvr.sampling import left_pad, sample

SETTINGS = {
    "trl_default": {},
    "all_warpers": {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.02, "repetition_penalty": 1.2},
}


class BoostEos:
    """A user logits processor: pushes EOS up after a few tokens, so rows finish at different steps."""

    def __init__(self, eos: int, prompt_width: int):
        self.eos, self.prompt_width = eos, prompt_width

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_width >= 2:
            scores[:, self.eos] += 1.5
        return scores


@pytest.fixture(scope="module")
def tiny():
    from rlvr.models import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0).eval()
    prompts = [tokenizer(p)["input_ids"] for p in ("3+5=", "12+7=", "1+1=", "40+41=")]  # different lengths
    return model, tokenizer, prompts


def hf_generate(model, tokenizer, prompts, n, max_new, processor=None, **settings):
    """What TRL's `_generate_single_turn` does: repeat each prompt n times, left-pad, generate, cut at EOS."""
    from transformers import GenerationConfig, LogitsProcessorList

    ids, mask = left_pad([p for p in prompts for _ in range(n)], tokenizer.pad_token_id)
    config = GenerationConfig(max_new_tokens=max_new, do_sample=True, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=[tokenizer.eos_token_id], disable_compile=True,
                              **{"temperature": 1.0, "top_k": 0, "top_p": 1.0, **settings})
    extra = {"logits_processor": LogitsProcessorList([processor])} if processor else {}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)
    rows = out[:, ids.shape[1]:].tolist()
    return [row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row for row in rows]


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("boost_eos", [False, True])
def test_same_draws_as_generate(tiny, name, boost_eos):
    model, tokenizer, prompts = tiny
    width = max(map(len, prompts))
    processor = (lambda: BoostEos(tokenizer.eos_token_id, width)) if boost_eos else (lambda: None)
    settings = SETTINGS[name]
    torch.manual_seed(123)
    expected = hf_generate(model, tokenizer, prompts, 4, 12, processor(), **settings)
    expected_rng = torch.get_rng_state()
    torch.manual_seed(123)
    got = sample(model, prompts, 4, 12, eos_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
                 logits_processor=processor(), **settings)
    assert got == expected
    assert torch.equal(torch.get_rng_state(), expected_rng)  # the next step samples the same too
    if boost_eos:
        assert len({len(c) for c in got}) > 1  # rows did finish at different steps


def test_one_generation_per_prompt_is_plain_batched_sampling(tiny):
    model, tokenizer, prompts = tiny
    torch.manual_seed(7)
    expected = hf_generate(model, tokenizer, prompts, 1, 5)
    torch.manual_seed(7)
    assert sample(model, prompts, 1, 5, eos_token_ids=[tokenizer.eos_token_id],
                  pad_token_id=tokenizer.pad_token_id) == expected


def test_left_pad_to_multiple():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0, pad_to_multiple_of=4)
    assert ids.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
