"""Learning, not only plumbing, through the real Qwen tokenizer and chat template: the built-in
addition task (`experiment=addition_chat_qwen`) after its SFT warm-up, on CPU in minutes."""

import json

import pytest

from conftest import completed_run

pytestmark = pytest.mark.slow


def test_grpo_raises_greedy_accuracy_through_the_chat_template(tmp_path):
    completed_run(tmp_path, "experiment=addition_chat_qwen", "logging=disabled", timeout=1800)  # a hang guard only
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # The target: at least 0.2 over the warm-up's greedy accuracy (seeds 0-3 gained 0.27-0.52: docs/performance.md).
    assert metrics["eval_after_accuracy"] - metrics["eval_before_accuracy"] >= 0.2, metrics
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert (
        rollouts[0]["prompt_text"]
        == "<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n"
        + rollouts[0]["prompt"][-1]["content"]
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    last = [r for r in rollouts if r["step"] >= metrics["train_steps"] - 10]
    assert sum(r["stop"] == "<|im_end|>" for r in last) / len(last) >= 0.9  # the turn ends where the model was taught
