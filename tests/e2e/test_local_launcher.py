"""`-m hydra/launcher=local` jobs (2 processes on one machine through submitit) end as a single
process does: rlvr's line on top, its exit code, and a stop's command to continue that works as pasted."""

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_RUN, one_line_error, refused_in_process, run_cli
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.slow

TWO_PROCESSES = ["-m", "hydra/launcher=local", "hardware.tasks_per_node=2"]


def job_line(stderr: str) -> str:
    """The line the launching process prints about its job."""
    [line] = [line for line in stderr.splitlines() if line.startswith("rlvr: job 0 (")]
    return line


def test_a_refused_job_is_rlvrs_line_and_exit_code_2(tmp_path):
    """Two refused jobs: each job's line in the sweep report points at its own logs, both ranks'."""
    result = run_cli("rlvr.run", *TWO_PROCESSES, *TINY_RUN, "algorithm.learning_rate=-1,-2", f"hydra.sweep.dir={tmp_path}")
    assert one_line_error(result) == "rlvr: error: algorithm.learning_rate=-1.0 must be > 0"
    assert result.stderr.startswith("rlvr: error:")  # on top: nothing of Hydra's or submitit's above it
    line = job_line(result.stderr)
    assert "algorithm.learning_rate=-1) failed; its log: " in line and str(tmp_path / ".submitit") in line
    report = (tmp_path / "sweep_summary.md").read_text()
    assert "| 0 | algorithm.learning_rate=-1 | failed |" in report
    for job, rate in ((0, "-1.0"), (1, "-2.0")):
        [failed] = [line for line in report.splitlines() if line.startswith(f"- job {job} (")]
        logs = failed.split("): ", 1)[1].split()
        assert logs[0] == str(tmp_path / str(job) / "run.log")
        assert len(logs) == 3 and all(log.endswith("_log.err") for log in logs[1:])  # one per rank
        for log in logs:
            assert f"algorithm.learning_rate={rate} must be > 0" in open(log).read()


def loss_rows(run_dir):
    path = run_dir / "metrics.jsonl"
    return [row for row in map(json.loads, path.read_text().splitlines()) if "loss" in row] if path.exists() else []


def test_a_sigterm_stop_is_one_line_whose_command_continues_the_run(tmp_path):
    """FSDP over 2 processes: the command printed relaunches it the same way (the job's own one-process
    `hydra.run.dir=` hint is refused in one line, writing nothing). A MASTER_PORT the launching shell
    exports, here one that another process holds, is replaced by the job's own port."""
    held = socket.socket()
    held.bind(("", 0))
    held.listen()
    shell = {**os.environ, "HF_HUB_OFFLINE": "1", "MASTER_PORT": str(held.getsockname()[1])}
    args = [
        sys.executable,
        "-m",
        "rlvr.run",
        *TWO_PROCESSES,
        "hardware.sharding=fsdp",
        *TINY_RUN,
        "algorithm.max_steps=16",
        "algorithm.save_steps=0",
        "eval.before=false",
        f"hydra.sweep.dir={tmp_path}",
    ]
    caller = subprocess.Popen(args, cwd=ROOT, env=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "0"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(loss_rows(run_dir)) < 3:
            time.sleep(0.2)
        [job] = [p.name for p in (tmp_path / ".submitit").iterdir() if p.name.isdigit()]
        os.kill(int(job), signal.SIGTERM)  # the job's controller (submitit's job id), as `scancel` signals a job
        _, stderr = caller.communicate(timeout=300)
    finally:
        caller.kill()
    assert caller.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.startswith("rlvr: job 0 (")
    line = job_line(stderr)
    assert ") stopped by SIGTERM; its log: " in line
    command = shlex.split(line.split("continues it from its newest complete checkpoint, if any: ")[1])
    assert command[:4] == ["python", "-m", "rlvr.run", "-m"] and "hardware.sharding=fsdp" in command
    said = (run_dir / "run.log").read_text()  # the job's own log gives the same command, not hydra.run.dir=
    assert f"running {shlex.join(command)} continues from it" in said and "hydra.run.dir=" not in said
    assert f"MASTER_PORT={shell['MASTER_PORT']} from the launching shell is not used" in said
    [checkpoint] = (run_dir / "checkpoints").glob("checkpoint-*")
    saved = int(checkpoint.name.split("-")[1])
    assert 3 <= saved < 16 and [row["step"] for row in loss_rows(run_dir)] == list(range(1, saved + 1))
    report = (tmp_path / "sweep_summary.md").read_text()
    assert "| 0 |  | stopped |" in report  # not "failed"
    [stopped] = [line for line in report.splitlines() if line.startswith("- job 0 (")]
    assert stopped.endswith(f"): stopped by SIGTERM; running {shlex.join(command)} continues it from its newest complete checkpoint")

    plain = refused_in_process(
        *TINY_RUN,
        "hardware.tasks_per_node=2",
        "hardware.sharding=fsdp",
        "algorithm.max_steps=16",
        "algorithm.save_steps=0",
        "eval.before=false",
        f"hydra.run.dir={run_dir}",
    )
    assert "but this is one process: start it with -m hydra/launcher=local" in one_line_error(plain)
    assert [r.get("mode") or r["ended"] for r in read_jsonl(run_dir / "run_info.jsonl")] == ["new", "stopped by SIGTERM"]

    pasted = subprocess.run(  # `python` of the venv the user runs
        [sys.executable, *command[1:]], cwd=ROOT, env=shell, capture_output=True, text=True, timeout=600
    )
    held.close()
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    assert [row["step"] for row in loss_rows(run_dir)] == list(range(1, 17))  # continued; no step repeated
    records = read_jsonl(run_dir / "run_info.jsonl")
    assert [r.get("mode") or r["ended"] for r in records] == ["new", "stopped by SIGTERM", "resume", "completed"]
    assert "| 0 |  | completed |" in (tmp_path / "sweep_summary.md").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 16


def test_a_job_whose_launching_process_is_killed_alone_stops_after_a_checkpoint(tmp_path):
    """`kill` of the launching process only (not its process group, as a terminal's Ctrl-C is): its
    job used to train on unattended, holding its run dir's lock."""
    # Steps long enough (1024 completions) for the stop to land long before the end.
    args = [sys.executable, "-m", "rlvr.run", "-m", "hydra/launcher=local", *TINY_RUN, "algorithm.max_steps=400", "algorithm.save_steps=0"]
    args += ["algorithm.per_device_train_batch_size=1024", "algorithm.num_generations=8", "eval.before=false"]
    caller = subprocess.Popen(
        [*args, f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tmp_path / "0"
    job = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(loss_rows(run_dir)) < 2:
            time.sleep(0.2)
        [job] = [int(p.name) for p in (tmp_path / ".submitit").iterdir() if p.name.isdigit()]  # the job's controller
        caller.kill()
        while time.time() < deadline and (run_dir / ".rlvr.lock").exists():
            time.sleep(0.2)
        assert not (run_dir / ".rlvr.lock").exists()
    finally:
        caller.kill()
        if job is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job, signal.SIGKILL)
    assert read_jsonl(run_dir / "run_info.jsonl")[-1]["ended"] == "stopped by SIGTERM"
    [checkpoint] = (run_dir / "checkpoints").glob("checkpoint-*")
    assert 2 <= int(checkpoint.name.split("-")[1]) < 400
    said = f"the process that launched this job (pid {caller.pid}) is gone: stopping as SIGTERM stops it"
    assert said in (run_dir / "run.log").read_text()
