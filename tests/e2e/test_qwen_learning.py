"""Learning, not only plumbing, through the real Qwen tokenizer and chat template: the built-in
addition task (`experiment=addition_chat_qwen`) after its SFT warm-up, on CPU in minutes."""

import json

import pytest

from conftest import completed_run

pytestmark = pytest.mark.slow


def test_grpo_raises_greedy_accuracy_through_the_chat_template(tmp_path):
    # 60 of the preset's 200 GRPO steps (constant learning rate: the same policy at step 60 as in a
    # 200-step run). Greedy accuracy every 20 steps, seed 0 (this test): 0.69 after the warm-up, then
    # 0.90, 0.88, 0.95, 0.96 (step 80), 0.90 (100) ... 0.96 (200); run again alone, 0.93 after 60 steps and
    # after 80. Seeds 1 and 3 had passed +0.2 by step 20 and were +0.55 and +0.27 at step 60.
    completed_run(
        tmp_path, "experiment=addition_chat_qwen", "logging=disabled", "algorithm.max_steps=60", timeout=1800
    )  # a hang guard only
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_steps"] == 60
    # The target: at least 0.2 over the warm-up's greedy accuracy (seeds 0-3 gained 0.27-0.52 in 200 steps: docs/performance.md).
    assert metrics["eval_after_accuracy"] - metrics["eval_before_accuracy"] >= 0.2, metrics
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert (
        rollouts[0]["prompt_text"]
        == "<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n"
        + rollouts[0]["prompt"][-1]["content"]
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    last = [r for r in rollouts if r["step"] > metrics["train_steps"] - 10]
    assert sum(r["stop"] == "<|im_end|>" for r in last) / len(last) >= 0.9  # the turn ends where the model was taught
