"""What a run finds in its run dir after a crash, a full disk or a signal: checks that need no training."""

import json
import os
import signal

import pytest

from rlvr.errors import ConfigError
from rlvr.hardware.checkpoints import COMPLETE, latest_complete_checkpoint, rotate_checkpoints
from rlvr.hardware.stops import phase, stops_reported


def checkpoint(checkpoint_dir, step, complete=True):
    """A checkpoint laid out as the Trainer writes one: weights, optimizer, trainer state."""
    import torch
    from safetensors.torch import save_file

    path = checkpoint_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.ones(64, 64)}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64, 64)}}, "param_groups": [{"params": [0]}]}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        (path / COMPLETE).write_text(f"{step}\n")
    return path


def cut(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def reported(caplog) -> list[str]:
    """rlvr's own log lines (checking the training state imports transformers, whose first import may
    log a warning of a library's own)."""
    return [r.getMessage() for r in caplog.records if r.name == "rlvr.hardware.checkpoints"]


@pytest.mark.parametrize(
    ("file", "why"),
    [
        ("model.safetensors", "model.safetensors: {cut} bytes where its header maps {whole}"),
        ("optimizer.pt", "optimizer.pt: File is not a zip file"),
        ("trainer_state.json", "trainer_state.json: Unterminated string"),
    ],
)
def test_a_corrupt_complete_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog, file, why):
    older, newest = checkpoint(tmp_path, 2), checkpoint(tmp_path, 4)
    whole = (newest / file).stat().st_size
    cut(newest / file)
    why = why.format(cut=(newest / file).stat().st_size, whole=whole)
    assert latest_complete_checkpoint(tmp_path) == older
    [warning] = reported(caplog)
    assert warning.startswith(f"{newest} is marked complete but is corrupt ({why}") and "previous complete" in warning
    assert not (newest / COMPLETE).exists() and (newest / "CORRUPT").exists()  # its step, trained again, is rewritten unmarked
    assert latest_complete_checkpoint(tmp_path) == older and len(reported(caplog)) == 1  # reported once


def test_with_no_usable_checkpoint_the_run_starts_over(tmp_path):
    cut(checkpoint(tmp_path, 2) / "model.safetensors", 0.001)
    assert latest_complete_checkpoint(tmp_path) is None


def test_rotation_never_deletes_the_last_complete_checkpoint(tmp_path):
    """rlvr rotates after COMPLETE: here checkpoint-6 is being written (no marker yet)."""
    checkpoint(tmp_path, 2), checkpoint(tmp_path, 3, complete=False), checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 6, complete=False)
    rotate_checkpoints(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    (tmp_path / "checkpoint-6" / COMPLETE).write_text("6\n")
    rotate_checkpoints(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6"]


@pytest.mark.parametrize(("stop", "code", "said"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stop_outside_training_is_one_line_naming_the_phase(tmp_path, capsys, stop, code, said):
    with pytest.raises(SystemExit) as exit_info:
        with stops_reported(tmp_path), phase("the SFT warm-up"):
            os.kill(os.getpid(), stop)
            signal.pause()  # returns after the handler ran, which raises
    assert exit_info.value.code == code
    assert capsys.readouterr().err == (
        f"rlvr: {said} during the SFT warm-up: stopped at once; the same command with "
        f"hydra.run.dir={tmp_path} continues from its newest complete checkpoint, if any\n"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back


def _agree(rank_index, world, port, requested, results):
    import torch.distributed as dist

    from rlvr.hardware.distributed import agreed_stop

    os.environ.update(RANK=str(rank_index), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank_index, world_size=world)
    try:
        results[rank_index] = [agreed_stop(r) for r in requested[rank_index]]
    finally:
        dist.destroy_process_group()


def test_every_process_acts_on_a_stop_signal_any_of_them_received():
    """Rank 0 got SIGUSR2 in a step that rank 1 finished without it; then SIGTERM beside a SIGUSR2;
    then nothing: both ranks agree each time (without it, rank 1 would train on while rank 0 saves)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    requested = {0: [signal.SIGUSR2, signal.SIGUSR2, None], 1: [None, signal.SIGTERM, None]}
    results = mp.Manager().dict()
    mp.spawn(_agree, args=(2, port, requested, results), nprocs=2)
    assert results[0] == results[1] == [signal.SIGUSR2, signal.SIGTERM, None]


def test_the_rendezvous_port_is_the_jobs_own_and_outside_the_outgoing_connection_range():
    """Every task of a job draws the same port; none falls where the host's own connections take theirs."""
    from pathlib import Path

    from rlvr.hardware.distributed import rendezvous_port

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [rendezvous_port(str(job)) for job in range(14000, 16000)]
    assert ports[:10] == [rendezvous_port(str(job)) for job in range(14000, 14010)]
    assert not any(low <= port <= high for port in ports) and all(1024 < port <= 65535 for port in ports)
    assert len(set(ports)) > 1500  # spread: two jobs on one host rarely share one


def test_a_one_process_run_takes_a_free_rendezvous_port_of_its_own_which_trl_keeps(monkeypatch):
    """TRL's colocated vLLM engine opens a process group even in one process; left to TRL, two runs
    starting together both took 29500. rlvr draws a port that nothing holds, and keeps a port the user set."""
    import socket

    from trl.trainer.utils import ensure_master_addr_port

    from rlvr.hardware import distributed

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # kept by TRL; monkeypatch puts back what was there before
    monkeypatch.setenv("MASTER_PORT", "0")  # recorded by monkeypatch first, so that the ports set below are undone
    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as neighbour:
            neighbour.bind(("", taken + 1))  # free: the draw below has one port left to take
        monkeypatch.setattr(distributed, "rendezvous_port_range", lambda: (taken, taken + 1))
        for _ in range(10):  # each draw of the two ports is random: a port held is never the one taken
            monkeypatch.delenv("MASTER_PORT", raising=False)
            distributed.own_master_port()
            assert os.environ["MASTER_PORT"] == str(taken + 1)
    ensure_master_addr_port()
    assert os.environ["MASTER_PORT"] == str(taken + 1)

    monkeypatch.setenv("MASTER_PORT", "23456")
    distributed.own_master_port()
    assert os.environ["MASTER_PORT"] == "23456"


def slurm_task(monkeypatch, **extra):
    """This process as task 1 of 2 of SLURM job 77 on one node (what srun exports), `extra` on top."""
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "CUDA_VISIBLE_DEVICES",
        "SUBMITIT_FOLDER",
    ):
        monkeypatch.setenv(key, "")  # recorded, so that monkeypatch removes what export writes
        monkeypatch.delenv(key)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}
    slurm |= {"SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1", "SUBMITIT_EXECUTOR": "slurm"}
    for key, value in (slurm | extra).items():
        monkeypatch.setenv(key, value)


def test_a_plain_sbatch_scripts_rendezvous_is_kept_and_a_sweep_jobs_is_its_own(monkeypatch, tmp_path):
    """submitit refused any of these variables already set (a RuntimeError traceback for every job); a
    `-m` job (SUBMITIT_FOLDER) now replaces the shell's port with its own, a plain script keeps its own."""
    from rlvr.hardware.distributed import export_torch_distributed, rendezvous_port

    slurm_task(monkeypatch, MASTER_ADDR="node1-ib", MASTER_PORT="23456", RANK="0")
    assert export_torch_distributed() == 2
    assert [os.environ[k] for k in ("RANK", "MASTER_ADDR", "MASTER_PORT")] == ["1", "node1-ib", "23456"]
    slurm_task(monkeypatch, MASTER_PORT="23456", SUBMITIT_FOLDER=str(tmp_path))
    export_torch_distributed()
    assert [os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT")] == ["node1", str(rendezvous_port("77"))]
    slurm_task(monkeypatch, MASTER_PORT="29k")
    with pytest.raises(ConfigError, match=r"^MASTER_PORT='29k' \(from the environment\) must be a port number"):
        export_torch_distributed()


def test_torchruns_processes_inside_a_multi_task_allocation_keep_torchruns_ranks(monkeypatch):
    from rlvr.hardware.distributed import export_torch_distributed

    slurm_task(monkeypatch, TORCHELASTIC_RUN_ID="x", RANK="5", WORLD_SIZE="8", MASTER_PORT="29500")
    assert export_torch_distributed() == 8
    assert [os.environ[k] for k in ("RANK", "MASTER_PORT")] == ["5", "29500"]
