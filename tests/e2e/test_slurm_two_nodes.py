"""rlvr across two nodes of a real SLURM cluster on this machine (launchers/slurm-up-2node.sh: two
slurmd with hostnames n1 and n2), every job through Hydra's submitit launcher. Both nodes share the
machine's two cores: one task and one CPU per node, and these tests run one at a time with the other
SLURM tests."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN, job_ids, rank_weight_digests, run_cli, sacct_states, squeue_state, start_requeued_job_now

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm")]


def on_two_nodes(sweep_dir: Path, *extra: str) -> list[str]:
    return [
        "-m",
        *TINY_RUN,
        "hydra/launcher=slurm",
        "hydra.launcher.partition=two",
        "hydra.launcher.timeout_min=10",
        "hardware.cpus_per_task=1",
        "hardware.mem_gb=2",
        "hardware.nodes=2",
        "hardware.tasks_per_node=1",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def rank_hosts(sweep_dir: Path) -> dict[int, str]:
    """{global rank: host name} from each task's submitit log (of the latest start, after a requeue)."""
    hosts = {}
    for log in (sweep_dir / ".submitit").glob("*/*_log.out"):
        for host, rank in re.findall(r"hostname=(\w+), .*global_rank=(\d+)\(", log.read_text()):
            hosts[int(rank)] = host
    return hosts


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def trained_steps(run_dir: Path) -> list[int]:
    return [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl") if "loss" in row]


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "final_model" / "model.safetensors")


def test_a_sweep_whose_jobs_span_both_nodes_trains_as_one_node_with_two_tasks(two_nodes, tmp_path):
    """Two values, each job data-parallel across n1 and n2: both complete on n[1-2], rank 0 on n1 and
    rank 1 on n2, one writer of every log, eval rows split across the nodes; and beta=0.04's weights
    equal those of the same job as 2 tasks on one node (same seed) within 1e-5."""
    sweep = tmp_path / "two_nodes"
    result = run_cli("rlvr.run", *on_two_nodes(sweep, "algorithm.beta=0.0,0.04", "algorithm.save_steps=0"), env=two_nodes)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    [array] = {job_id.split("_")[0] for job_id in job_ids(sweep)}  # a sweep is one array job
    assert sacct_states(array, env=two_nodes) == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED"}
    nodes = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", array, "-o", "NodeList"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **two_nodes},
    ).stdout.split()
    assert nodes == ["n[1-2]", "n[1-2]"]
    report = (sweep / "sweep_summary.md").read_text()
    assert "| 0 | algorithm.beta=0.0 | completed |" in report and "| 1 | algorithm.beta=0.04 | completed |" in report
    for job in ("0", "1"):
        assert trained_steps(sweep / job) == [1, 2, 3, 4]  # one writer: no step logged twice
        assert [row["rank"] for row in read_jsonl(sweep / job / "eval" / "after.jsonl")] == [0, 1] * 8
    one_node = tmp_path / "one_node"
    result = run_cli(
        "rlvr.run",
        *on_two_nodes(one_node, "algorithm.beta=0.04", "algorithm.save_steps=0", "hardware.nodes=1", "hardware.tasks_per_node=2"),
        env=two_nodes,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert rank_hosts(one_node) == {0: "n1", 1: "n1"}
    digests = rank_weight_digests(one_node)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1]
    assert trained_steps(one_node / "0") == [1, 2, 3, 4]
    assert len((one_node / "0" / "rollouts.jsonl").read_text().splitlines()) == 4 * 2 * 16  # both ranks' completions
    across, alone = final_weights(sweep / "1"), final_weights(one_node / "0")
    assert across.keys() == alone.keys()
    largest = max((across[k] - alone[k]).abs().max().item() for k in across)
    print(f"largest weight difference, two nodes vs one node with two tasks: {largest:.3g}")
    assert largest <= 1e-5


def test_an_fsdp_job_holds_half_the_model_on_each_node(two_nodes, tmp_path):
    """ZeRO-3's two-node job is the preempted one below."""
    result = run_cli(
        "rlvr.run", *on_two_nodes(tmp_path, "hardware.sharding=fsdp", "eval.before=false", "algorithm.save_steps=0"), env=two_nodes
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert_half_the_model_on_each_node(tmp_path)


def assert_half_the_model_on_each_node(sweep_dir: Path) -> None:
    """Rank 0 on n1 and rank 1 on n2, each holding half the parameters, and the final model loads whole in one process."""
    assert rank_hosts(sweep_dir) == {0: "n1", 1: "n2"}
    log = (sweep_dir / "0" / "run.log").read_text()
    assert "sharding: process 0 holds 50.0% of the parameters" in log
    assert "sharding: process 1 holds 50.0% of the parameters" in log
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sweep_dir / "0" / "final_model")  # whole, in one process
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in final_weights(sweep_dir / "0").values())


def wait_for_steps(run_dir: Path, steps: int, timeout: float = 180) -> None:
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and len(trained_steps(run_dir)) >= steps):
        time.sleep(0.3)
    assert metrics.exists() and len(trained_steps(run_dir)) >= steps, f"fewer than {steps} steps in {timeout} s"


def launch(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rlvr.run", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **env},
    )


def test_a_preempted_two_node_zero3_job_saves_on_both_nodes_requeues_and_resumes(two_nodes, tmp_path):
    """SIGUSR2: both nodes save their shards of the same step's checkpoint, the job requeues onto both
    nodes again and resumes; no step is repeated or lost, and each node held half the model."""
    steps = 12  # stopped at step 3 or later: the rest trains after the requeue
    caller = launch(
        on_two_nodes(tmp_path, f"algorithm.max_steps={steps}", "algorithm.save_steps=0", "eval.before=false", "hardware.sharding=zero3"),
        two_nodes,
    )
    try:
        wait_for_steps(tmp_path / "0", 3)
        [job_id] = job_ids(tmp_path)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, env={**os.environ, **two_nodes})
        start_requeued_job_now(job_id, two_nodes)
        out, err = caller.communicate(timeout=300)
    finally:
        caller.kill()
    assert caller.returncode == 0, out[-2000:] + err[-3000:]
    log = (tmp_path / "0" / "run.log").read_text()
    assert "SIGUSR2" in log and "resuming from" in log
    saved = re.findall(r"after saving checkpoint-(\d+)", log)
    [checkpoint] = {int(step) for step in saved}
    shards = sorted(p.name for p in (tmp_path / "0" / "checkpoints" / f"checkpoint-{checkpoint}").rglob("*optim_states*"))
    assert len(shards) == 2, shards  # one per node's rank
    assert trained_steps(tmp_path / "0") == list(range(1, steps + 1))
    assert_half_the_model_on_each_node(tmp_path)


def test_the_run_dir_lock_follows_the_job_across_nodes_and_refuses_another(two_nodes, tmp_path):
    """A one-node job runs on n1 (suspended meanwhile, so that it holds its lock however long this takes);
    a DIFFERENT job for the same run dir on n2 is refused in one line. The first job's task is killed
    (its lock left behind on n1); requeued while n1 is drained, the same job comes back on n2, takes
    its own lock over and finishes from its checkpoint."""
    one_node = ["hardware.nodes=1", "algorithm.max_steps=16", "algorithm.save_steps=4", "eval.before=false", "eval.after=false"]
    env = {**os.environ, **two_nodes}
    first = launch(on_two_nodes(tmp_path, *one_node), two_nodes)
    drained = False
    try:
        wait_for_steps(tmp_path / "0", 5)
        [job_id] = job_ids(tmp_path)
        assert rank_hosts(tmp_path) == {0: "n1"}
        subprocess.run(["scontrol", "suspend", job_id], check=True, env=env)
        second = run_cli(
            "rlvr.run",
            *on_two_nodes(
                tmp_path / "second", *one_node, f"hydra.sweep.subdir={tmp_path / '0'}", "+hydra.launcher.additional_parameters.nodelist=n2"
            ),
            env=two_nodes,
        )
        assert second.returncode == 2, second.stderr[-3000:]
        assert re.search(r"rlvr: error: .*is in use by another run: pid \d+ on n1", second.stderr), second.stderr[-3000:]
        subprocess.run(["scontrol", "resume", job_id], check=True, env=env)
        subprocess.run(["scontrol", "update", "NodeName=n1", "State=DRAIN", "Reason=rlvr-test"], check=True, env=env)
        drained = True
        os.kill(rank_process(job_id, 0), 9)
        first.communicate(timeout=180)  # the launching command gives up on the job: it ended without a result
        sacct_states(job_id, env=two_nodes)
        subprocess.run(["scontrol", "requeue", job_id], check=True, env=env)
        start_requeued_job_now(job_id, two_nodes)
        deadline = time.time() + 300
        while squeue_state(job_id, two_nodes) and time.time() < deadline:
            time.sleep(0.5)
        assert sacct_states(job_id, env=two_nodes) == {job_id: "COMPLETED"}
    finally:
        first.kill()
        if drained:
            subprocess.run(["scontrol", "update", "NodeName=n1", "State=RESUME"], check=False, env=env)
    log = (tmp_path / "0" / "run.log").read_text()
    assert re.search(r"taking over the lock of an earlier start of this job \(pid \d+ on n1\)", log), log[-3000:]
    assert rank_hosts(tmp_path)[0] == "n2"
    assert trained_steps(tmp_path / "0") == list(range(1, 17))


def rank_process(job_id: str, rank: int) -> int:
    """The pid of the task of `job_id` with global rank `rank` (SLURM_PROCID), found in /proc: a process of a
    step (SLURM_STEP_ID), not the batch script's `srun`, whose command line and environment match too."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        variables = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if (
            variables.get(b"SLURM_JOB_ID") == job_id.encode()
            and variables.get(b"SLURM_PROCID") == str(rank).encode()
            and b"SLURM_STEP_ID" in variables
            and b"submitit.core._submit" in command
        ):
            return int(pid)
    raise AssertionError(f"no process of rank {rank} of job {job_id}")


def test_a_node_dying_mid_run_ends_the_job_names_the_rank_and_leaves_it_resumable(two_nodes, tmp_path):
    """kill -9 of rank 1 (on n2): no rank waits in a collective; the launching command exits naming the rank;
    the same command continues from the newest complete checkpoint."""
    args = on_two_nodes(tmp_path, "algorithm.max_steps=200", "algorithm.save_steps=4", "eval.before=false", "eval.after=false")
    caller = launch(args, two_nodes)
    try:
        wait_for_steps(tmp_path / "0", 9)
        [job_id] = job_ids(tmp_path)
        os.kill(rank_process(job_id, 1), 9)
        killed = time.monotonic()
        out, err = caller.communicate(timeout=180)
        ended_after = time.monotonic() - killed
    finally:
        caller.kill()
    assert caller.returncode == 1, err[-3000:]
    named = rf"rlvr: job 0 \(run dir {re.escape(str(tmp_path / '0'))}\): rank 1 of submitit job {job_id} ended without a result"
    assert re.search(rf"{named} .*\(state: FAILED\)", err), err[-3000:]  # the sweep's job, read from the rank's error stream
    assert sacct_states(job_id, env=two_nodes) == {job_id: "FAILED"}
    print(f"the launching command ended {ended_after:.0f} s after the kill")
    checkpoints = sorted((tmp_path / "0" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    newest = int(checkpoints[-1].name.split("-")[1])
    assert newest >= 8 and (checkpoints[-1] / "COMPLETE").exists()
    args[args.index("algorithm.max_steps=200")] = f"algorithm.max_steps={newest + 2}"
    resumed = run_cli("rlvr.run", *args, env=two_nodes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume from checkpoint-{newest})" in (tmp_path / "0" / "run.log").read_text()
    assert trained_steps(tmp_path / "0") == list(range(1, newest + 3))  # the lost steps trained and logged once
