"""Rerunning a `-m` command continues its sweep: a finished job's result is reused, and a job dir is
never continued at another point of the sweep (an interrupted search whose sampler drew again)."""

import json

import pytest
import yaml

from conftest import TINY_RUN, interrupted, one_line_error, run_cli
from rlvr.tracking.outputs import read_json, read_jsonl

pytestmark = pytest.mark.slow
SHORT = [*TINY_RUN, "algorithm.max_steps=2", "eval.before=false", "logging.plots=false"]


def read_yaml(path):
    return yaml.safe_load(path.read_text())


def sweep(tmp_path, *args: str):
    return run_cli("rlvr.run", "-m", *SHORT, *args, f"hydra.sweep.dir={tmp_path}")


def addition_rows(path, answer=lambda a, b: a + b):
    path.write_text("".join(json.dumps({"question": f"{a}+{b}=", "answer": str(answer(a, b))}) + "\n" for a in range(6) for b in range(6)))
    return path


def test_a_finished_jobs_result_is_reused_by_a_rerun_of_its_command_and_not_after_its_data_changed(tmp_path):
    data = addition_rows(tmp_path / "train.jsonl")
    runs = tmp_path / "sweep"
    on_data = [f"dataset.source={data}", "dataset.eval_holdout=8", f"hydra.sweep.dir={runs}"]
    first = sweep(runs, "seed=1,2", *on_data)
    assert first.returncode == 0, first.stderr[-3000:]
    starts = {job: read_jsonl(runs / job / "run_info.jsonl") for job in ("0", "1")}
    again = sweep(runs, "seed=1,2", *on_data)
    assert again.returncode == 0, again.stderr[-3000:]
    for job in ("0", "1"):
        assert f"rlvr: {runs / job} holds this job, finished with the same config: its metrics.json is the result" in again.stderr
        assert read_jsonl(runs / job / "run_info.jsonl") == starts[job]  # nothing ran
    assert "already holds" not in again.stderr
    assert read_json(runs / "0" / "metrics.json")["train_steps"] == 2
    # A -m command of one point (nothing swept) reuses it too: it was refused as "already holds a run trained to step 2"
    single = sweep(runs, "seed=1", *on_data)
    assert single.returncode == 0, single.stderr[-3000:]
    assert f"rlvr: {runs / '0'} holds this job, finished with the same config" in single.stderr
    # Its training file rewritten: refused naming the file (it said "already holds a run ... raise algorithm.max_steps")
    addition_rows(data, answer=lambda a, b: 7)
    changed = sweep(runs, "seed=1,2", *on_data)
    assert changed.returncode != 0
    for job in ("0", "1"):
        [line] = [x for x in changed.stderr.splitlines() if x.startswith(f"rlvr: error: the final model in {runs / job} ")]
        assert f"was trained with other values of what it depends on (data_files.{data}: " in line
        assert line.endswith("continue with the same values, or start a new run (a new hydra.sweep.dir)")
    # "rlvr: job 0 (...) failed", not "failed; its log: .../0/run.log": the refused start left the finished run's log alone
    assert changed.stderr.endswith(") failed\n") and "its log:" not in changed.stderr
    assert "\nrlvr: job 0 (" in changed.stderr and "\nrlvr: job 1 (" in changed.stderr  # each job refused, not the first alone


def test_a_job_dir_is_not_continued_at_another_point_of_the_sweep(tmp_path):
    """A 2-job sweep (each job's config, result and report row), then a rerun at other points."""
    first = sweep(tmp_path, "algorithm.beta=0.0,0.01")
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    assert [read_yaml(p / "config_resolved.yaml")["algorithm"]["beta"] for p in jobs] == [0.0, 0.01]
    assert [read_json(p / "metrics.json")["train_steps"] for p in jobs] == [2, 2]
    report = (tmp_path / "sweep_summary.md").read_text()
    assert "| 0 | algorithm.beta=0.0 | completed |" in report and "| 1 | algorithm.beta=0.01 | completed |" in report
    assert (tmp_path / "sweep_summary.csv").read_text().count("completed") == 2
    assert (tmp_path / "sweep_summary.png").stat().st_size > 1000
    # Job 0's point moved (0.0 -> 0.02; a continued run may raise beta): refused; job 1 is continued to the raised max_steps.
    rerun = sweep(tmp_path, "algorithm.beta=0.02,0.01", "algorithm.max_steps=3")
    assert one_line_error(rerun) == (
        f"rlvr: error: {tmp_path / '0' / 'checkpoints' / 'checkpoint-2'} was trained at another point of this sweep "
        "(algorithm.beta: 0.0 -> 0.02): rerun the sweep with the same values to continue it, "
        "or give it a new hydra.sweep.dir"
    )
    assert read_json(tmp_path / "1" / "metrics.json")["train_steps"] == 3
    assert read_json(tmp_path / "0" / "metrics.json")["train_steps"] == 2


def test_a_sweep_stopped_by_ctrl_c_is_continued_whole_by_the_command_its_line_gives(tmp_path):
    """The basic launcher runs the sweep in one process: Ctrl-C in job 1 stops it whole. Its stop line
    (the log, run_info.jsonl, the report) gives the same -m command, not job 1's alone, which left job 2
    out; the report is written; and that command keeps job 0, resumes job 1 and runs job 2."""
    # stopped once job 1 logs its first step: 11 steps left for the Ctrl-C to arrive
    args = ["-m", *SHORT, "algorithm.max_steps=12", "algorithm.save_steps=0", "seed=1,2,3", f"hydra.sweep.dir={tmp_path}"]
    code, stderr = interrupted(args, lambda: (tmp_path / "1" / "metrics.jsonl").exists())
    assert code == 130, stderr[-3000:]
    assert read_jsonl(tmp_path / "1" / "run_info.jsonl")[-1]["continue"] == (
        f"the same -m command with hydra.sweep.dir={tmp_path} continues it from its newest complete checkpoint"
    )
    assert (tmp_path / "sweep_summary.md").exists() and not (tmp_path / "2").exists()
    again = run_cli("rlvr.run", *args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"rlvr: {tmp_path / '0'} holds this job, finished with the same config" in again.stderr
    assert [read_jsonl(tmp_path / job / "run_info.jsonl")[-2]["mode"] for job in ("1", "2")] == ["resume", "new"]
    assert all(read_json(tmp_path / job / "metrics.json")["train_steps"] == 12 for job in ("0", "1", "2"))
