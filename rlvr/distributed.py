"""Jobs with several processes, and jobs that stop and come back (SLURM preemption, time limits, crashes).

- `export_torch_distributed`: inside a submitit job with several tasks, export RANK/WORLD_SIZE/
  MASTER_ADDR... from SLURM's environment; accelerate (inside TRL) then starts torch.distributed
  (NCCL on GPU, gloo on CPU) and trains data-parallel.
- Checkpoints are marked complete only after the Trainer has finished writing them (`COMPLETE`
  file, written on `on_save`); a run resumes from the newest complete one in its run dir.
- On SIGUSR2 (SLURM's warning before a time limit, or `scancel --signal=USR2`), the run saves a
  checkpoint at the end of the current step and then hands over to submitit's own handler, which
  requeues the job; the requeued job resumes from that checkpoint.
- Ctrl-C (SIGINT) while training does the same without the requeue: a checkpoint at the end of the
  step, then exit 130, and the same command with `hydra.run.dir=<that run>` continues from it. A
  second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGUSR2 after a checkpoint; launchers/sbatch_run.sh requeues on it
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: stopped after a checkpoint, as asked
STOPPING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGINT") if hasattr(signal, name))


def job_tasks() -> int:
    """Tasks of the submitit job (local executor) or SLURM job step this process belongs to; 1 outside one."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":  # hydra/launcher=local: submitit's own processes
        return int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    if "SLURM_PROCID" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def export_torch_distributed() -> int:
    """World size of this job; with more than one task, the torch.distributed variables are exported."""
    if job_tasks() <= 1:
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


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def latest_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` that carries the COMPLETE marker; half-written ones are ignored."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [p for p in checkpoint_dir.glob("checkpoint-*") if (p / COMPLETE).exists() and p.name.split("-")[-1].isdigit()]
    return max(complete, key=checkpoint_step, default=None)


def weights_digest(model) -> str:
    """A short hash of every parameter, to check that data-parallel ranks hold the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def stop_signals_ignored():
    """Start helper processes inside this block: they inherit SIG_IGN for Ctrl-C and SIGUSR2 (fork
    and exec keep an ignored signal ignored). A terminal's Ctrl-C and `scancel --signal=USR2` reach
    the whole process group, and a verifier worker killed mid-step would zero that step's rewards;
    saving the checkpoint is the trainer process's job alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def checkpoint_callback():
    """Marks finished checkpoints complete; on SIGUSR2 or Ctrl-C saves one at the end of the step,
    then requeues (SIGUSR2) or stops (Ctrl-C)."""
    from transformers import TrainerCallback

    class PreemptibleCheckpoints(TrainerCallback):
        def __init__(self):
            self.requested = None  # the signal that asked for a checkpoint
            self.previous = {sig: signal.getsignal(sig) for sig in STOPPING_SIGNALS}
            for sig in STOPPING_SIGNALS:
                signal.signal(sig, self._request)

        def _request(self, signum, frame):
            if self.requested == signal.SIGINT and signum == signal.SIGINT:  # Ctrl-C twice: stop now
                raise KeyboardInterrupt
            then = "requeueing" if signum != signal.SIGINT else "stopping (Ctrl-C again: stop now)"
            log.warning("%s: saving a checkpoint at the end of this step, then %s", signal.Signals(signum).name, then)
            self.requested = signum

        def on_step_end(self, args, state, control, **kwargs):
            if self.requested:
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                (path / COMPLETE).write_text(f"{state.global_step}\n")
            if not self.requested:
                return
            barrier()
            if self.requested == signal.SIGINT:
                log.warning("stopped by Ctrl-C after saving checkpoint-%d: the same command with hydra.run.dir=%s "
                            "continues from it", state.global_step, Path(args.output_dir).parent)
                raise SystemExit(EXIT_INTERRUPTED)
            if callable(self.previous[signal.SIGUSR2]):  # submitit's handler: checkpoint(), requeue, exit
                self.previous[signal.SIGUSR2](signal.SIGUSR2, None)
            log.warning("stopped by SIGUSR2 after saving checkpoint-%d", state.global_step)
            raise SystemExit(EXIT_PREEMPTED)

        def on_train_end(self, args, state, control, **kwargs):
            for sig, handler in self.previous.items():  # eval and saving after training: the usual Ctrl-C
                signal.signal(sig, handler)

    return PreemptibleCheckpoints()
