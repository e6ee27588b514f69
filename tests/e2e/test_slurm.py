"""Jobs through Hydra's submitit launcher (and plain sbatch) on a real single-node local SLURM: stops,
requeues and failures. Sweeps and multi-process jobs: tests/e2e/test_slurm_two_nodes.py."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN, job_ids, run_cli, sacct_states, start_requeued_job_now

# One xdist worker runs every SLURM test: they share one local cluster (the session's slurm_partition).
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm")]


def slurm_args(partition, sweep_dir, *extra):
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.timeout_min=10",
        "hardware.cpus_per_task=1",
        "hardware.mem_gb=2",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def test_preempted_job_requeues_and_resumes(slurm_partition, tmp_path):
    """SIGUSR2: a checkpoint at the end of the step, a requeue, a resume. (Sharded, across two nodes:
    tests/e2e/test_slurm_two_nodes.py.)"""
    steps = 60  # stopped after step 5: 55 steps (10 s and more) for the signal to arrive
    args = [
        sys.executable,
        "-m",
        "rlvr.run",
        "-m",
        *TINY_RUN,
        f"algorithm.max_steps={steps}",
        "algorithm.save_steps=0",
        "eval.before=false",
        *slurm_args(slurm_partition, tmp_path),
    ]
    caller = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "0" / "metrics.jsonl"
        wait_for_steps(metrics)
        [job_id] = job_ids(tmp_path)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        start_requeued_job_now(job_id)
        out, err = caller.communicate(timeout=300)
    finally:
        caller.kill()
    assert caller.returncode == 0, out[-2000:] + err[-3000:]
    log = (tmp_path / "0" / "run.log").read_text()
    assert "SIGUSR2" in log and "resuming from" in log
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"loss"' in line]
    assert logged == list(range(1, steps + 1))  # the step counter continued; no step repeated


def test_crashing_job_names_its_override_and_log(slurm_partition, tmp_path):
    result = run_cli("rlvr.run", "-m", *TINY_RUN, *slurm_args(slurm_partition, tmp_path, "dataset.source=/nope/a.jsonl,builtin:arithmetic"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "rlvr: error: dataset file not found: /nope/a.jsonl" in output  # the job's own one-line error
    assert "#0 : " in output and "dataset.source=/nope/a.jsonl" in output  # the launcher names the override
    assert str(tmp_path / ".submitit") in output  # and the caller gets the job's log path
    summary = run_cli("rlvr.sweep_report", str(tmp_path))
    assert "job 0 (" in summary.stdout and "dataset.source=/nope/a.jsonl" in summary.stdout


def wait_for_steps(metrics, steps=5, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= steps):
        time.sleep(0.3)


def assert_stopped_with_a_checkpoint(run_dir):
    assert "stopped by SIGTERM after saving checkpoint-" in (run_dir / "run.log").read_text()
    [checkpoint] = (run_dir / "checkpoints").glob("checkpoint-*")
    assert (checkpoint / "COMPLETE").exists()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, int(checkpoint.name.split("-")[1]) + 1))  # nothing trained since it is lost


def test_plain_scancel_of_a_submitit_job_saves_a_checkpoint(slurm_partition, tmp_path):
    """`scancel` sends SIGTERM, then SIGKILL after KillWait: the step ends and is saved in between."""
    args = [
        sys.executable,
        "-m",
        "rlvr.run",
        "-m",
        *TINY_RUN,
        "algorithm.max_steps=400",
        "algorithm.save_steps=0",
        "eval.before=false",
        "model.warmup_sft_steps=0",
        *slurm_args(slurm_partition, tmp_path),
    ]
    caller = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_steps(tmp_path / "0" / "metrics.jsonl")
        [job_id] = job_ids(tmp_path)
        subprocess.run(["scancel", job_id], check=True)
        caller.communicate(timeout=120)
    finally:
        caller.kill()
    assert all(state.startswith("CANCELLED") for state in sacct_states(job_id).values())
    assert_stopped_with_a_checkpoint(tmp_path / "0")


def test_plain_scancel_of_an_sbatch_job_saves_a_checkpoint(slurm_partition, tmp_path):
    run_dir = tmp_path / "run"
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={slurm_partition}",
            "--cpus-per-task=1",
            "--mem=2G",
            f"--output={tmp_path}/slurm-%j.out",
            "launchers/sbatch_run.sh",
            *TINY_RUN,
            "algorithm.max_steps=400",
            "algorithm.save_steps=0",
            "eval.before=false",
            "model.warmup_sft_steps=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "RLVR_RUN_DIR": str(run_dir),
            "HF_HUB_OFFLINE": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
    )
    job_id = submitted.stdout.strip()
    wait_for_steps(run_dir / "metrics.jsonl")
    subprocess.run(["scancel", job_id], check=True)
    deadline = time.time() + 120  # CANCELLED at once; its processes end within KillWait (COMPLETING meanwhile)
    while time.time() < deadline and subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip():
        time.sleep(0.3)
    assert all(state.startswith("CANCELLED") for state in sacct_states(job_id).values())
    assert_stopped_with_a_checkpoint(run_dir)
