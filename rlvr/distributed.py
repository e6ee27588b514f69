"""Jobs with several processes, and jobs that stop and come back (SLURM preemption, time limits, crashes).

- `export_torch_distributed`: inside a submitit job with several tasks, export RANK/WORLD_SIZE/
  MASTER_ADDR... from SLURM's environment; accelerate (inside TRL) then starts torch.distributed
  (NCCL on GPU, gloo on CPU) and trains data-parallel.
- Checkpoints are marked complete only after the Trainer has finished writing them (`COMPLETE`
  file, written on `on_save`); a run resumes from the newest complete one in its run dir.
- On SIGUSR2 (SLURM's warning before a time limit, or `scancel --signal=USR2`), the run saves a
  checkpoint at the end of the current step and then hands over to submitit's own handler, which
  requeues the job; the requeued job resumes from that checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGUSR2 after a checkpoint; launchers/sbatch_run.sh requeues on it


def export_torch_distributed() -> int:
    """World size of this job; with more than one task, the torch.distributed variables are exported."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "SLURM_PROCID" not in os.environ:
        return int(os.environ.get("WORLD_SIZE", "1"))
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # submitit reads SLURM's variables (sbatch path too)
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment().export()
    log.info("rank %d of %d (master %s:%s)", env.rank, env.world_size, env.master_addr, env.master_port)
    return env.world_size


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def latest_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` that carries the COMPLETE marker; half-written ones are ignored."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [p for p in checkpoint_dir.glob("checkpoint-*") if (p / COMPLETE).exists() and p.name.split("-")[-1].isdigit()]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def weights_digest(model) -> str:
    """A short hash of every parameter, to check that data-parallel ranks hold the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def checkpoint_callback():
    """Marks finished checkpoints complete, and saves one then requeues when SIGUSR2 arrives."""
    from transformers import TrainerCallback

    class PreemptibleCheckpoints(TrainerCallback):
        def __init__(self):
            self.requested = False
            self.previous = None
            if hasattr(signal, "SIGUSR2"):
                self.previous = signal.getsignal(signal.SIGUSR2)
                signal.signal(signal.SIGUSR2, self._request)

        def _request(self, signum, frame):
            log.warning("SIGUSR2: saving a checkpoint at the end of this step, then requeueing")
            self.requested = True

        def on_step_end(self, args, state, control, **kwargs):
            if self.requested:
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                (path / COMPLETE).write_text(f"{state.global_step}\n")
            if self.requested:
                barrier()
                if callable(self.previous):  # submitit's handler: checkpoint(), requeue, exit
                    self.previous(signal.SIGUSR2, None)
                log.warning("stopped by SIGUSR2 after saving checkpoint-%d", state.global_step)
                raise SystemExit(EXIT_PREEMPTED)

    return PreemptibleCheckpoints()
