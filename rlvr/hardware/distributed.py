"""Jobs with several processes: a submitit job's tasks become torch.distributed ranks
(`export_torch_distributed`; accelerate, inside TRL, starts the process group from the exported
RANK/WORLD_SIZE/MASTER_ADDR), the rendezvous port, what the ranks agree on, and the group's close.
"""

from __future__ import annotations

from collections.abc import Callable

import contextlib
import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def job_tasks() -> int:
    """Tasks of the submitit job (local executor) or SLURM job step this process belongs to; 1 outside one."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":  # hydra/launcher=local: submitit's own processes
        return int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    if "SLURM_PROCID" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def task_rank() -> int:
    """This process's rank in its job, also before `export_torch_distributed` sets RANK (a start
    refused earlier): torchrun's, submitit's local executor's, or SLURM's; 0 outside a job."""
    local = ["SUBMITIT_LOCAL_GLOBALID"] if os.environ.get("SUBMITIT_EXECUTOR") == "local" else []
    for variable in ["RANK", *local, "SLURM_PROCID"]:
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def rendezvous_port(job_id: str) -> int:
    """The port of a job's torch.distributed rendezvous on its first task's host: the same on every task
    (drawn with the job id as seed, as submitit does), from `rendezvous_port_range`."""
    import random

    return random.Random(job_id).randint(*rendezvous_port_range())


def rendezvous_port_range() -> tuple[int, int]:
    """Where rendezvous ports are drawn: below the range the kernel hands out to outgoing connections
    (ip_local_port_range), unlike submitit's 20000-60000: inside it one of the host's own connections
    (another job's gloo sockets) may hold the port, rank 0 fails with EADDRINUSE, and its siblings wait
    for a rendezvous that never opens."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):  # not Linux: the usual IANA ephemeral range
        low, high = 49152, 65535
    if low - 20000 >= 1000:
        return 20000, low - 1
    if 65535 - high >= 1000:
        return high + 1, 65535
    return 20000, 60000


def own_master_port() -> None:
    """MASTER_PORT, unless set, for a one-process run that opens a torch.distributed group of its own
    (TRL's colocated vLLM engine): a port free now, drawn from `rendezvous_port_range`. TRL would take
    torchrun's default 29500 whenever it is free at the moment it looks, so two runs starting together
    on one machine both chose it and the later one died with EADDRINUSE."""
    import random
    import socket

    if "MASTER_PORT" in os.environ:
        return
    draw = random.Random()  # seeded by the OS: every run draws its own
    for _ in range(100):
        port = draw.randint(*rendezvous_port_range())
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        break
    os.environ["MASTER_PORT"] = str(port)


def shell_rendezvous_ignored() -> bool:
    """Whether this process is a job of a `-m` run (a submitit task), whose rendezvous is its own: a
    MASTER_PORT exported in the launching shell would be every job's, and a second job on a host failed
    to open it (its other ranks waited for ever). A plain sbatch script's MASTER_ADDR/MASTER_PORT are kept."""
    return "SUBMITIT_FOLDER" in os.environ


def torchrun_launched() -> bool:
    """Whether torchrun's agent started this process (accelerate launch runs that agent too)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def export_torch_distributed() -> int:
    """World size of this job; with more than one task, the torch.distributed variables are exported
    (submitit's, with this job's own port). torchrun's processes keep torchrun's."""
    if torchrun_launched():  # torchrun's, also inside a multi-task allocation
        return int(os.environ.get("WORLD_SIZE", "1"))
    if job_tasks() <= 1:
        if shell_rendezvous_ignored():  # a one-process job that opens a group of its own draws its port (`own_master_port`)
            os.environ.pop("MASTER_PORT", None)
        return int(os.environ.get("WORLD_SIZE", "1"))
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # submitit reads SLURM's variables (sbatch path too)
    import submitit

    from rlvr.errors import ConfigError

    shell = {key: os.environ.pop(key) for key in ("MASTER_ADDR", "MASTER_PORT") if key in os.environ}
    env = submitit.helpers.TorchDistributedEnvironment()
    if "MASTER_PORT" in shell and not shell_rendezvous_ignored():
        if not shell["MASTER_PORT"].isdigit() or not 0 < int(shell["MASTER_PORT"]) < 65536:
            raise ConfigError(f"MASTER_PORT={shell['MASTER_PORT']!r} (from the environment) must be a port number, 1 to 65535")
        env.master_addr, env.master_port = shell.get("MASTER_ADDR", env.master_addr), int(shell["MASTER_PORT"])
    else:
        env.master_port = rendezvous_port(str(submitit.JobEnvironment().job_id))
        if "MASTER_PORT" in shell and env.rank == 0:
            log.warning(
                "MASTER_PORT=%s from the launching shell is not used: each job of a -m run draws a port of its own (%d)",
                shell["MASTER_PORT"],
                env.master_port,
            )
    env = env.export(overwrite=True)  # this job's ranks, whatever the launching shell had exported
    log.info("rank %d of %d (master %s:%s)", env.rank, env.world_size, env.master_addr, env.master_port)
    return env.world_size


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def process_count() -> int:
    """Processes of this job; with several, torch.distributed is started (through accelerate, as the
    Trainer would start it) if nothing has yet, so that they can exchange results."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    return dist.get_world_size()


def agreed_run_dir(run_dir: Path) -> Path:
    """Rank 0's run dir, for every process of a torchrun or `accelerate launch` launch. Each of its
    processes resolves `hydra.run.dir` itself, and `${now:...}` differs between processes started
    either side of a second's turn: each would take a dir of its own and wait there for rank 0's lock
    for ever. The empty dir Hydra made for this process's own name is removed. A submitit job's tasks
    share the dir their launching process chose."""
    if job_tasks() > 1 or process_count() < 2:
        return run_dir
    import torch.distributed as dist

    chosen = [str(run_dir.absolute())]
    dist.broadcast_object_list(chosen, src=0)
    agreed = Path(chosen[0])
    if agreed != run_dir.absolute():
        log.info("rank %d: run dir %s, rank 0's (this process had resolved %s)", rank(), agreed, run_dir)
        with contextlib.suppress(OSError):  # not empty: left as it is
            run_dir.rmdir()
    return agreed


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def agreed_stop(requested: int | None) -> int | None:
    """The stop signal every process acts on at the end of a step: the one any of them received (if
    they differ, the highest number: SIGTERM over SIGUSR2 over Ctrl-C). A signal reaches a job's
    processes at slightly different moments; one that got it only after its step ended would train
    another step while the others save, and a sharded save's collectives would wait for it for ever.
    One small all-reduce per step, only with several processes."""
    if process_count() < 2:
        return requested
    import torch
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([requested or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


# What close_process_group runs once every process has arrived, before it closes the group.
_BEFORE_CLOSE: list[Callable[[], None]] = []


def before_closing_process_group(fn: Callable[[], None]) -> None:
    """Run `fn` at the end of a run that succeeded, after every process arrived and before the process
    group is closed (a colocated vLLM engine's shutdown, which closes torch's default group itself)."""
    _BEFORE_CLOSE.append(fn)


def close_process_group() -> None:
    """At the end of a run that succeeded: every process waits until all have done their work, then
    torch.distributed's process group is closed, while the interpreter is whole. Left to the
    interpreter's exit, gloo's process group is torn down in whatever order its finalizers run, a
    process possibly closing its connections while a peer still finishes with them; ZeRO-3 runs were
    seen to abort (SIGABRT) after all their work."""
    import torch.distributed as dist

    barrier()
    while _BEFORE_CLOSE:
        _BEFORE_CLOSE.pop()()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def weights_digest(model) -> str:
    """A short hash of every parameter, to check that data-parallel ranks hold the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
