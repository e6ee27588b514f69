"""Prompts against the model's context (or a shorter vLLM engine's): dropped and counted before training, a 5 MB row untokenized."""

from types import SimpleNamespace

import datasets
import pytest
from omegaconf import OmegaConf

from rlvr.config import Config
from rlvr.data.lengths import fit_to_context, prompt_tokens
from rlvr.errors import ConfigError, DataError
from rlvr.models.loading import build_tiny_tokenizer

TOKENIZER = build_tiny_tokenizer()  # one token per byte: token counts are easy to reason about
MODEL = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=256))


def run_cfg(*overrides):
    return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.from_dotlist(["algorithm.max_completion_length=56", *overrides]))


def prompts(*texts):
    return datasets.Dataset.from_dict({"prompt": list(texts), "answer": ["1"] * len(texts)})


def test_a_prompt_longer_than_context_minus_completion_is_dropped_and_counted():
    train = prompts("a" * 200, "b" * 201, "c" * 5)  # 256 - 56 = 200 tokens of room
    evaluation = prompts("d" * 201, "e")
    train, evaluation, metrics = fit_to_context(train, evaluation, MODEL, TOKENIZER, run_cfg())
    assert train["prompt"] == ["a" * 200, "c" * 5] and evaluation["prompt"] == ["e"]
    assert metrics == {"train_prompts_dropped_too_long": 1, "eval_prompts_dropped_too_long": 1}


def test_eval_prompts_get_the_room_eval_max_new_tokens_leaves():
    _, evaluation, metrics = fit_to_context(prompts("x"), prompts("d" * 201, "e" * 250), MODEL, TOKENIZER, run_cfg("eval.max_new_tokens=6"))
    assert evaluation["prompt"] == ["d" * 201, "e" * 250] and metrics["eval_prompts_dropped_too_long"] == 0


def test_chat_prompts_are_counted_with_their_template():
    chat = [{"role": "user", "content": "a" * 190}]  # 190 characters, past 200 tokens once rendered
    rendered = TOKENIZER.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt_tokens([chat], TOKENIZER, 200) == [len(TOKENIZER(rendered, add_special_tokens=False)["input_ids"])]
    with pytest.raises(
        DataError,
        match=r"every train prompt is longer than 200 tokens \(the model's 256-token context "
        r"minus algorithm.max_completion_length=56\)",
    ):
        fit_to_context(prompts(chat), None, MODEL, TOKENIZER, run_cfg())


def test_a_shorter_vllm_engine_context_sets_the_room_with_vllm_rollouts_only():
    train = prompts("a" * 44, "b" * 45)  # 100 - 56 = 44 tokens of room in the engine
    vllm = ["algorithm.rollout=vllm", "algorithm.trl.vllm_max_model_length=100"]
    kept, _, metrics = fit_to_context(train, None, MODEL, TOKENIZER, run_cfg(*vllm))
    assert kept["prompt"] == ["a" * 44] and metrics == {"train_prompts_dropped_too_long": 1}
    assert fit_to_context(train, None, MODEL, TOKENIZER, run_cfg(vllm[1]))[0]["prompt"] == train["prompt"]  # rollout=hf
    longer = ["algorithm.rollout=vllm", "algorithm.trl.vllm_max_model_length=1000"]  # the model's 256 still hold
    assert fit_to_context(train, None, MODEL, TOKENIZER, run_cfg(*longer))[0]["prompt"] == train["prompt"]
    with pytest.raises(
        ConfigError, match=r"^algorithm.max_completion_length=56 leaves no room for a prompt in algorithm.trl.vllm_max_model_length=50"
    ):
        fit_to_context(train, None, MODEL, TOKENIZER, run_cfg("algorithm.rollout=vllm", "algorithm.trl.vllm_max_model_length=50"))


class RecordingTokenizer:
    """TOKENIZER, recording the texts it is asked to tokenize."""

    def __init__(self):
        self.texts = []

    def get_vocab(self):
        return TOKENIZER.get_vocab()

    def __call__(self, texts, **kwargs):
        self.texts += texts
        return TOKENIZER(texts, **kwargs)


def test_a_5_mb_prompt_is_dropped_without_being_tokenized():
    huge = "7+" * 2_500_000
    tokenizer = RecordingTokenizer()
    train, _, metrics = fit_to_context(prompts(huge, "1+1="), None, MODEL, tokenizer, run_cfg())
    assert tokenizer.texts == ["1+1="]
    assert train["prompt"] == ["1+1="] and metrics == {"train_prompts_dropped_too_long": 1}


@pytest.mark.parametrize(
    ("override", "key"),
    [("algorithm.max_completion_length=100000", "algorithm.max_completion_length"), ("eval.max_new_tokens=256", "eval.max_new_tokens")],
)
def test_a_completion_length_the_context_cannot_hold_is_one_line(override, key):
    with pytest.raises(ConfigError, match=f"^{key}=\\d+ leaves no room for a prompt in the model's 256-token context: lower it$"):
        fit_to_context(prompts("1+1="), None, MODEL, TOKENIZER, run_cfg(override))
