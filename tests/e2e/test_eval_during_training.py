"""Evaluation every `eval.every_steps` training steps, and what a resume does with it."""

import json

import pytest

from conftest import TINY_RUN, completed_run
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.slow

EVERY_2 = [
    *TINY_RUN,
    "eval=pass_at_k",
    "eval.n=2",
    "eval.ks=[1,2]",
    "eval.every_steps=2",
    "eval.before=false",
    "dataset.max_eval_samples=4",
    "algorithm.save_steps=2",
]


def eval_steps(run_dir):
    return [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl") if "eval/mean@2" in row]


def test_eval_rows_every_n_steps_survive_a_resume_once_each(tmp_path):
    completed_run(tmp_path, *EVERY_2, "algorithm.max_steps=4")
    assert eval_steps(tmp_path) == [2, 4]
    rows = read_jsonl(tmp_path / "eval" / "step-4.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and all(len(r["samples"]) == 2 for r in rows)
    assert (tmp_path / "plots" / "eval.png").stat().st_size > 1000
    # step 4 is the last: the eval after training is its eval, not the same completions generated again
    assert read_jsonl(tmp_path / "eval" / "after.jsonl") == rows
    assert "eval after (transformers)" not in (tmp_path / "run.log").read_text()
    after = json.loads((tmp_path / "metrics.json").read_text())
    step_4 = next(row for row in read_jsonl(tmp_path / "metrics.jsonl") if row["step"] == 4 and "eval/mean@2" in row)
    assert {k: after[f"eval_after_{k[len('eval/') :]}"] for k in step_4 if k.startswith("eval/")} == {
        k: v for k, v in step_4.items() if k.startswith("eval/")
    }
    # a crash after step 4's eval, before its checkpoint; an earlier start had evaluated at step 5
    for done in ("metrics.json", "train_result.json"):
        (tmp_path / done).unlink()
    for path in (tmp_path / "checkpoints" / "checkpoint-4").iterdir():
        path.unlink()
    (tmp_path / "checkpoints" / "checkpoint-4").rmdir()
    (tmp_path / "eval" / "step-5.jsonl").write_text("{}\n")
    completed_run(tmp_path, *EVERY_2, "algorithm.max_steps=6")
    assert eval_steps(tmp_path) == [2, 4, 6]  # step 4 evaluated again, logged once
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in row] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "eval").glob("step-*")) == ["step-2.jsonl", "step-4.jsonl", "step-6.jsonl"]
