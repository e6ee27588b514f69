"""The sweep report's eval columns and comparison plot, on a fabricated sweep dir."""

import csv
import json

import pytest
import yaml

from rlvr.sweep_report import write_report


def fake_job(sweep_dir, job, overrides, metrics):
    """A job dir whose run completed with `metrics`."""
    from rlvr.tracking.run_dir import record_end

    (sweep_dir / str(job) / ".hydra").mkdir(parents=True)
    (sweep_dir / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (sweep_dir / str(job) / "metrics.json").write_text(json.dumps(metrics))
    record_end(sweep_dir / str(job), "completed")


def eval_metrics(accuracy, mean, pass4, maj4):
    return {
        "eval_after_accuracy": accuracy,
        "eval_after_accuracy_se": 0.05,
        "train_seconds": 3.0,
        "eval_after_mean@4": mean,
        "eval_after_mean@4_se": 0.02,
        "eval_after_pass@1": mean,
        "eval_after_pass@1_se": 0.02,
        "eval_after_pass@4": pass4,
        "eval_after_pass@4_se": 0.03,
        "eval_after_maj@4": maj4,
        "eval_after_maj@4_ci_low": maj4 - 0.1,
        "eval_after_maj@4_ci_high": maj4 + 0.05,
    }


def test_eval_columns_and_comparison_plot(tmp_path):
    fake_job(tmp_path, 0, ["seed=1", "algorithm.beta=0.0"], eval_metrics(0.5, 0.4, 0.75, 0.5))
    fake_job(tmp_path, 1, ["seed=1", "algorithm.beta=0.04"], eval_metrics(0.6, 0.55, 0.875, 0.625))
    (tmp_path / "2").mkdir()  # a failed job: no metrics.json
    write_report(tmp_path)

    table = (tmp_path / "sweep_summary.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[-4:] == ["eval_after_mean@4", "eval_after_pass@1", "eval_after_pass@4", "eval_after_maj@4"]
    job1 = [c.strip() for c in table[3].strip("|").split("|")]
    assert job1[header.index("eval_after_accuracy")] == "0.6 ± 0.05"
    assert job1[-4:] == ["0.55 ± 0.02", "0.55 ± 0.02", "0.875 ± 0.03", "0.625 [0.525, 0.675]"]
    assert [c.strip() for c in table[4].strip("|").split("|")][-4:] == [""] * 4  # the failed job

    with open(tmp_path / "sweep_summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[1]["eval_after_pass@4"]) == 0.875 and float(rows[1]["eval_after_maj@4_ci_low"]) == 0.525
    assert float(rows[0]["eval_after_pass@4_se"]) == 0.03
    assert (tmp_path / "sweep_eval.png").stat().st_size > 1000
    assert (tmp_path / "sweep_summary.png").exists()


def test_the_cli_on_a_dir_without_job_dirs_is_one_line_exit_2(tmp_path, capsys):
    from rlvr.sweep_report import main

    with pytest.raises(SystemExit) as info:
        main([str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"rlvr-sweep-report: error: {tmp_path} holds no job dirs (0/, 1/, ...): name the sweep dir of a -m run (hydra.sweep.dir)"
    )


def test_a_stopped_job_is_listed_as_stopped_with_its_command_and_a_failed_or_killed_continuation_as_failed(tmp_path):
    from rlvr.tracking.run_dir import record_end

    fake_job(tmp_path, 0, ["seed=0"], {"train_seconds": 3.0})
    (tmp_path / "1").mkdir()
    record_end(tmp_path / "1", "stopped by Ctrl-C")
    fake_job(tmp_path, 2, ["seed=2"], {"train_seconds": 3.0})  # an earlier start's metrics; the latest start failed
    record_end(tmp_path / "2", "failed")
    fake_job(tmp_path, 3, ["seed=3"], {"train_seconds": 3.0})  # the same, and the latest start was killed
    with open(tmp_path / "3" / "run_info.jsonl", "a") as info:
        info.write('{"mode": "resume"}\n')
    assert [row["status"] for row in write_report(tmp_path)] == ["completed", "stopped", "failed", "failed"]
    report = (tmp_path / "sweep_summary.md").read_text()
    continues = f"the same command with hydra.run.dir={tmp_path / '1'} continues it from its newest complete checkpoint"
    assert report.split("Stopped jobs:\n")[1] == f"- job 1 (): stopped by Ctrl-C; {continues}\n"


def test_a_jobs_torn_file_fails_its_row_naming_the_file_and_the_others_are_reported(tmp_path):
    """A torn metrics.json or run_info.jsonl, or a hand-edited overrides.yaml, was a traceback for the whole report."""
    for job in range(4):
        fake_job(tmp_path, job, [f"seed={job}"], {"train_seconds": 3.0})
    (tmp_path / "1" / "metrics.json").write_text('{"eval_after')
    (tmp_path / "2" / "run_info.jsonl").write_text("garbage\n")
    (tmp_path / "3" / ".hydra" / "overrides.yaml").write_text("[unclosed")
    rows = write_report(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "failed", "failed", "failed"]
    for row, name in zip(rows[1:], ["metrics.json", "run_info.jsonl", ".hydra/overrides.yaml"]):
        assert row["logs"].startswith(f"{tmp_path / str(row['job']) / name} unreadable: "), row["logs"]
    assert "- job 1 (seed=1): " in (tmp_path / "sweep_summary.md").read_text()


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [([0.5], "a JSON list, not an object of metrics"), ({"train_seconds": "3.0"}, 'train_seconds is "3.0", not a number')],
)
def test_a_jobs_hand_edited_metrics_json_fails_its_row_saying_what_it_holds(tmp_path, metrics, problem):
    """A metrics.json holding a list was a TypeError for the whole report; a string value a cell of the table."""
    for job in range(2):
        fake_job(tmp_path, job, [f"seed={job}"], {"train_seconds": 3.0, "train_reward_last20": None})
    (tmp_path / "1" / "metrics.json").write_text(json.dumps(metrics))
    rows = write_report(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert rows[1]["logs"] == f"{tmp_path / '1' / 'metrics.json'} unreadable: {problem}"
    assert "| 0 | seed=0 | completed | nan | 3 |" in (tmp_path / "sweep_summary.md").read_text()  # a null: NaN


def test_a_jobs_corrupt_metrics_jsonl_leaves_its_curve_out_and_the_report_is_written(tmp_path, capsys):
    """A line in the middle of a job's metrics.jsonl that is not JSON was a DataError traceback for the whole report."""
    for job in range(2):
        fake_job(tmp_path, job, [f"seed={job}"], {"train_seconds": 3.0})
        (tmp_path / str(job) / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "rew\n{"step": 3, "reward": 0.7}\n')
    (tmp_path / "0" / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": 0.6}\n')
    rows = write_report(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert (tmp_path / "sweep_summary.md").exists() and (tmp_path / "sweep_rewards.png").exists()
    assert capsys.readouterr().err.startswith(f"sweep report: job 1's reward curve left out: {tmp_path / '1' / 'metrics.jsonl'} line 2")


def test_the_swept_column_holds_whole_values_and_the_swept_key_of_a_one_job_sweep(tmp_path, monkeypatch):
    """It split overrides at spaces (a swept prompt showed as `dataset.system_prompt='Add`, the shared
    words dropped), a `|` in a value cut the markdown row, and a sweep of one job showed nothing swept."""
    from rlvr.launcher import SWEPT_KEYS_VAR

    monkeypatch.delenv(SWEPT_KEYS_VAR, raising=False)  # as when the report is written by hand
    prompts = ["dataset.system_prompt='Add then answer'", "dataset.system_prompt='Sum then answer'", "dataset.system_prompt='x | y'"]
    for job, prompt in enumerate(prompts):
        fake_job(tmp_path, job, ["seed=1", prompt], {"train_seconds": 3.0})
    rows = write_report(tmp_path)
    assert [r["swept"] for r in rows] == prompts and rows[0]["overrides"] == f"seed=1 {prompts[0]}"
    assert "| 2 | dataset.system_prompt='x \\| y' | completed | 3 |" in (tmp_path / "sweep_summary.md").read_text()

    one = tmp_path / "one"
    fake_job(one, 0, ["seed=1", "algorithm.beta=0.04"], {"train_seconds": 3.0})
    assert write_report(one)[0]["swept"] == ""  # nothing says what was swept
    (one / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": ["seed=1"]}, "sweeper": {"params": {"algorithm.beta": "choice(0.0, 0.04)"}}}})
    )
    assert write_report(one)[0]["swept"] == "algorithm.beta=0.04"


def test_a_job_a_live_process_runs_is_listed_as_running_not_failed(tmp_path):
    import os
    import socket
    import subprocess

    from rlvr.tracking.run_dir import LOCK_NAME, RUN_INFO, process_start_time

    fake_job(tmp_path, 0, ["seed=0"], {"train_seconds": 3.0})
    (tmp_path / "1" / ".hydra").mkdir(parents=True)
    (tmp_path / "1" / RUN_INFO).write_text('{"mode": "new"}\n')  # started, not ended
    runner = subprocess.Popen(["sleep", "60"])
    try:
        holder = {"host": socket.gethostname(), "pid": runner.pid, "pid_started": process_start_time(runner.pid)}
        (tmp_path / "1" / LOCK_NAME).write_text(json.dumps(holder))
        assert [r["status"] for r in write_report(tmp_path)] == ["completed", "running"]
        report = (tmp_path / "sweep_summary.md").read_text()
        assert "| 1 |  | running |" in report and "Failed jobs" not in report
        (tmp_path / "1" / LOCK_NAME).write_text(json.dumps(holder | {"pid": os.getpid(), "pid_started": process_start_time(os.getpid())}))
        assert write_report(tmp_path)[1]["status"] == "failed"  # this process's own lock: a job it ran, which ended without a line
    finally:
        runner.kill()
        runner.wait()
    (tmp_path / "1" / LOCK_NAME).write_text(json.dumps(holder))
    assert write_report(tmp_path)[1]["status"] == "failed"  # its process is gone: killed


def test_a_sweep_that_ran_no_job_is_one_line_exit_2(tmp_path, capsys):
    from omegaconf import OmegaConf

    from rlvr.sweep_report import SweepReport

    with pytest.raises(SystemExit) as info:
        SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert info.value.code == 2
    assert capsys.readouterr().err == f"rlvr: error: the sweep ran no job (a sweep of no values, e.g. range(0,0)): nothing in {tmp_path}\n"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "seed=1").mkdir()  # a job of hydra.sweep.subdir=${hydra.job.override_dirname}: it ran
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
