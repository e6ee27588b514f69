"""The reasoning vocabulary end to end: `experiment=vocab_reasoning` offline, its artefacts, the saved
model reloading and generating under its processor, LoRA, and the 0-vs-N sweep with its comparison plot."""

import json

import pytest
import torch

from conftest import TINY_RUN, completed_run, one_line_error, refused_in_process, run_cli
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.slow
VOCAB_RUN = ["experiment=vocab_reasoning", *TINY_RUN, "model.warmup_sft_steps=60", "algorithm.max_completion_length=12"]


@pytest.fixture(scope="module")
def vocab_run(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("vocab"), *VOCAB_RUN)


def test_run_logs_vocabulary_usage_and_plots_it(vocab_run):
    logged = [m for m in read_jsonl(vocab_run / "metrics.jsonl") if "reward" in m]
    assert len(logged) == 4
    assert all(m["vocab/reasoning_outside_think"] == 0 for m in logged)
    assert sum(m["vocab/think_tokens_per_completion"] for m in logged) > 0  # the warm-up taught <think>
    assert any(m["vocab/reasoning_share_in_think"] > 0 for m in logged)
    for name in ["plots/vocab_usage.png", "plots/embedding_drift.png", "reasoning_vocab.json"]:
        assert (vocab_run / name).stat().st_size > 100, name
    final = json.loads((vocab_run / "reasoning_vocab.json").read_text())
    assert final["standard_size"] == 262 and len(final["source_ids"]) == len(final["relative_drift"]) == 64


def test_rollouts_are_standard_text_with_reasoning_positions(vocab_run):
    rows = read_jsonl(vocab_run / "rollouts.jsonl")
    assert any(row["reasoning_token_positions"] for row in rows)
    marked = [row for row in rows if row["reasoning_token_positions"]]
    assert all("<think>" in row["completion"] for row in marked)


def test_saved_model_reloads_and_generates_under_its_processor(vocab_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from rlvr.evaluation.engine import generate_batch
    from rlvr.models.vocab import ReasoningVocab

    model = AutoModelForCausalLM.from_pretrained(vocab_run / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(vocab_run / "final_model")
    vocab = ReasoningVocab.of(model)
    assert vocab is not None and vocab.size == 64
    texts = generate_batch(model, tokenizer, ["2+3=", "4+4="], max_new_tokens=12)[0]
    assert len(texts) == 2
    ids = tokenizer(["2+3="] * 16, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(
        **ids,
        do_sample=True,
        max_new_tokens=12,
        logits_processor=LogitsProcessorList([vocab.processor()]),
        pad_token_id=tokenizer.pad_token_id,
    )
    completions = out[:, ids["input_ids"].shape[1] :]
    inside = vocab.think_mask(completions, torch.zeros(16, dtype=torch.bool))
    assert not ((completions >= vocab.standard_size) & ~inside).any()


def test_lora_run_with_a_reasoning_vocabulary(tmp_path):
    """TRL's disable_dropout reaches the LoRA dropout: training scores each token as it was sampled (the
    gap was ~1e-3 at the second step with the dropout on, which is refused)."""
    lora = [*VOCAB_RUN, "model.lora.enabled=true", "model.lora.r=4", "algorithm.save_steps=0", "eval.before=false"]
    refused = refused_in_process(*lora, f"hydra.run.dir={tmp_path}")
    assert one_line_error(refused).startswith("rlvr: error: model.lora.dropout=0.05 with a reasoning vocabulary")
    completed_run(tmp_path, *lora, "+algorithm.trl.disable_dropout=true")
    logged = [m for m in read_jsonl(tmp_path / "metrics.jsonl") if "reward" in m]
    assert logged and all(m["vocab/reasoning_outside_think"] == 0 for m in logged)
    assert all(m["vocab/logprob_gap"] < 1e-5 for m in logged), [m["vocab/logprob_gap"] for m in logged]


def test_fine_grained_grpo_with_a_reasoning_vocabulary(tmp_path):
    scalar = refused_in_process(*VOCAB_RUN, "algorithm=fgrpo", "eval.before=false", f"hydra.run.dir={tmp_path}")
    assert one_line_error(scalar).startswith("rlvr: error: reward.functions.gsm8k_flexible (LastNumberReward) scores whole completions")
    completed_run(tmp_path, *VOCAB_RUN, "algorithm=fgrpo", "reward=fgrpo_spans", "algorithm.max_steps=3", "eval.before=false")
    logged = [m for m in read_jsonl(tmp_path / "metrics.jsonl") if "reward" in m]
    assert len(logged) == 3 and all(m["vocab/reasoning_outside_think"] == 0 for m in logged)
    # spans index the reward text (reasoning ids mapped back); a shorter, unmapped text would clip them
    assert all(m["fgrpo/spans_malformed"] == 0 for m in logged)


def test_sweep_over_vocabulary_size_compares_reward_curves(tmp_path):
    result = run_cli(
        "rlvr.run",
        "-m",
        *VOCAB_RUN,
        "algorithm.max_steps=3",
        "eval.before=false",
        "model.reasoning_vocab_size=0,16",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "sweep_summary.md").read_text()
    assert "model.reasoning_vocab_size=0 | completed" in report and "model.reasoning_vocab_size=16 | completed" in report
    assert (tmp_path / "sweep_rewards.png").stat().st_size > 1000
    assert not any("vocab/" in k for m in read_jsonl(tmp_path / "0" / "metrics.jsonl") for k in m)
