"""A user's reward inside a real run: bad output stops it in one line, a dying reward process is reported."""

import os

import pytest

from conftest import TINY_RUN, one_line_error, run_cli

pytestmark = pytest.mark.slow

USER_REWARDS = """
import os


def infinite(completions, **kwargs):
    return [float("inf")] * len(completions)


def crashes(completions, **kwargs):
    os._exit(3)


def judges_even_lengths(completions, **kwargs):
    return [None if len(c) % 2 else 1.0 for c in completions]
"""


def run_with_reward(tmp_path, function: str, *args: str):
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    return run_cli(
        "rlvr.run",
        *TINY_RUN,
        "eval.before=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"reward.functions.gsm8k_flexible._target_=user_rewards.{function}",
        *args,
        env={"PYTHONPATH": path},
    )


def test_a_reward_returning_inf_stops_the_run_before_the_loss(tmp_path):
    result = run_with_reward(tmp_path, "infinite")
    line = one_line_error(result)
    assert result.stderr.rstrip().splitlines()[-1] == line  # last: the training bar was drawn again below it
    assert line.startswith("rlvr: error: reward 'gsm8k_flexible' returned inf for row 0 (prompt ")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step trained on it


def test_an_isolated_reward_whose_process_dies_is_reported_and_stops_the_run(tmp_path):
    result = run_with_reward(tmp_path, "crashes", "+reward.functions.gsm8k_flexible.timeout_s=5", "reward.checks.none_patience=2")
    line = one_line_error(result)
    assert "its worker process died (exit code 3)" in result.stdout + result.stderr
    assert line == (
        "rlvr: error: reward 'gsm8k_flexible' returned None for every completion in 2 training steps in a row: "
        "it scores nothing (reward.checks.none_patience=2)"
    )


def test_a_completion_no_reward_gives_a_verdict_on_has_no_reward_and_is_out_of_the_means(tmp_path):
    """Its reward was 0.0 in rollouts.jsonl and the eval rows, pulling eval_*_reward down (TRL leaves it out)."""
    import json

    result = run_with_reward(tmp_path, "judges_even_lengths", "eval.before=true", "algorithm.max_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for name in ("before", "after") for line in (run / "eval" / f"{name}.jsonl").read_text().splitlines()]
    for row in rollouts + evals:
        assert row["reward"] == (None if len(row["completion"]) % 2 else 1.0), row
    assert {row["reward"] for row in rollouts + evals} == {None, 1.0}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_before_reward"] == metrics["eval_after_reward"] == 1.0
