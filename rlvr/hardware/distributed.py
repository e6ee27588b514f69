"""Jobs with several processes, and jobs that stop and come back (SLURM preemption, time limits, crashes).

- `export_torch_distributed`: a submitit job's tasks become torch.distributed ranks (accelerate, inside
  TRL, starts the process group from the exported RANK/WORLD_SIZE/MASTER_ADDR).
- Checkpoints: marked `COMPLETE` once the Trainer has written them, checked before a resume (a corrupt
  one is marked `CORRUPT` and the previous one used), rotated only after the new one is complete.
- Stops: SIGUSR2 saves a checkpoint at the end of the step and requeues (submitit's handler); SIGTERM
  and Ctrl-C save it and exit 143 / 130 without a requeue (a user's `scancel` and a time limit look
  alike); outside training they stop at once. What users see: docs/slurm.md#signals-preemption-and-requeue
  and docs/run-dir.md.
"""

from __future__ import annotations

from collections.abc import Callable

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import struct
import sys
import threading
import time
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
CORRUPT = "CORRUPT"  # what a corrupt checkpoint's COMPLETE marker is renamed to
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGUSR2 after a checkpoint; launchers/sbatch_run.sh requeues on it
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: stopped after a checkpoint, as asked
EXIT_TERMINATED = 143  # the shell's code for SIGTERM: stopped after a checkpoint, not requeued
STOPPING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGINT", "SIGTERM") if hasattr(signal, name))
STOP_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
STOP_EXITS = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
STOP_WAIT_S = 20.0  # how long a stop in training waits for a reward call: under SLURM's default KillWait (30 s)
STOP_EXIT_GRACE_S = 5.0  # then how long the main thread has to leave the call before the process is ended outright
_exit_process = os._exit  # the real one: an in-process reward call replaces os._exit while it runs (rewards/checks.py)
_phases = ["start-up"]  # what the run is doing, innermost last, for the line a stop prints
_run_dirs = []  # the run dir of each `stops_reported` block, innermost last, for the line a stop prints
_awaited = []  # (what, how to bound it, since) of each call the training step waits on, innermost last


class Stopped(KeyboardInterrupt):
    """A stop signal where no checkpoint can be saved: ends the run, reported in one line."""

    def __init__(self, signum: int, phase: str, outcome: str = "stopped at once"):
        super().__init__(signum, phase, outcome)
        self.signum, self.phase, self.outcome = signum, phase, outcome

    def report(self) -> None:
        """One line naming the signal, the phase, what happened and how to continue: in the log, and on
        stderr on a line of its own (also under a live progress bar)."""
        from tqdm import tqdm

        line = (
            f"{STOP_NAMES[self.signum]} during {self.phase}: {self.outcome}; "
            f"{how_to_continue(_run_dirs[-1] if _run_dirs else None)} continues from its newest complete "
            f"checkpoint, if any"
        )
        log.warning("%s", line)
        tqdm.write(f"rlvr: {line}", file=sys.stderr)


def how_to_continue(run_dir) -> str:
    """The command that continues this run: for a job of a `-m` run (several processes from the local
    or SLURM launcher), its own `-m` command (rlvr.launcher.continue_command); else the same command
    with `hydra.run.dir` set to the run dir, when one is known."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.launcher import continue_command, is_multirun

    if HydraConfig.initialized() and is_multirun():
        return f"running {continue_command(HydraConfig.get())}"
    return "the same command" + (f" with hydra.run.dir={run_dir}" if run_dir else "")


@contextlib.contextmanager
def phase(name: str):
    """Name what the run is doing inside this block, for the line printed if it is stopped there."""
    _phases.append(name)
    try:
        yield
    finally:
        _phases.pop()


@contextlib.contextmanager
def awaited(what: str, bound: str):
    """Name a call the training step waits on while it runs (a reward's, `what`) and how a user bounds it
    (`bound`): a stop in training that finds it running says so, and gives up on it after STOP_WAIT_S."""
    call = (what, bound, time.monotonic())
    _awaited.append(call)
    try:
        yield
    finally:
        _awaited.remove(call)


def _stop_now(signum, frame):
    raise Stopped(signum, _phases[-1])


@contextlib.contextmanager
def stops_reported(run_dir):
    """Ctrl-C and SIGTERM end the run at once with one line naming the phase, exit 130 / 143, no
    traceback (training installs its own handlers: a checkpoint at the end of the step first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stop_now) for sig in stops}
    _run_dirs.append(run_dir)
    try:
        yield
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT, _phases[-1])
        stop.report()
        raise SystemExit(STOP_EXITS[stop.signum]) from None
    finally:
        _run_dirs.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopWait(threading.Thread):
    """Watches the step that a Ctrl-C or SIGTERM in training waits for (to save its checkpoint).

    A reward call it waits on (`awaited`) is named in the log once it has run a second, with when the
    wait ends; one still running STOP_WAIT_S after the stop (or after it began, if later) is given
    up: `stop` is set and the signal sent again to the main thread, whose handler raises it (the run
    ends in one line, exit 130 / 143, without a checkpoint of this step). If the main thread has not
    left the call STOP_EXIT_GRACE_S later (a C call that never returns to Python, a reward that
    swallowed the interrupt), this thread prints the line and ends the process with that exit code.
    A call stuck in C code holding the GIL stops this thread too: SLURM's SIGKILL ends that one.
    It watches until it gives up or `end` is called (training is over).
    """

    def __init__(self, signum: int):
        super().__init__(name="rlvr-stop-wait", daemon=True)
        self.signum, self.since = signum, time.monotonic()
        self.stop: Stopped | None = None
        self.ended = threading.Event()

    def end(self) -> None:
        self.ended.set()

    def run(self) -> None:
        named = None
        while self.stop is None and not self.ended.wait(0.2):
            call = (_awaited[-1:] or [None])[0]
            if call is None:
                continue
            what, _, started = call
            now, deadline = time.monotonic(), max(self.since, started) + STOP_WAIT_S
            if call is not named and now - started >= 1:
                log.warning(
                    "%s: waiting for %s (running for %.0f s) to finish the step; giving up in %.0f s",
                    signal.Signals(self.signum).name,
                    what,
                    now - started,
                    max(deadline - now, 0),
                )
                named = call
            if now >= deadline:
                self._give_up(call)

    def _give_up(self, call: tuple) -> None:
        what, bound, _ = call
        self.stop = Stopped(self.signum, "training", f"gave up waiting for {what} after {STOP_WAIT_S:g} s ({bound})")
        signal.pthread_kill(threading.main_thread().ident, self.signum)
        time.sleep(STOP_EXIT_GRACE_S)
        if any(c is call for c in _awaited):  # the main thread is still inside the call
            self.stop.report()
            _exit_process(STOP_EXITS[self.signum])


def job_tasks() -> int:
    """Tasks of the submitit job (local executor) or SLURM job step this process belongs to; 1 outside one."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":  # hydra/launcher=local: submitit's own processes
        return int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    if "SLURM_PROCID" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


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


def export_torch_distributed() -> int:
    """World size of this job; with more than one task, the torch.distributed variables are exported."""
    if job_tasks() <= 1:
        return int(os.environ.get("WORLD_SIZE", "1"))
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # submitit reads SLURM's variables (sbatch path too)
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment()
    if "MASTER_PORT" not in os.environ:  # a port the user set is kept
        env.master_port = rendezvous_port(str(submitit.JobEnvironment().job_id))
    env = env.export()
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


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def numbered_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Every `checkpoint-N` dir, lowest step first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted((p for p in checkpoint_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=checkpoint_step)


def latest_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` that carries the COMPLETE marker and passes `checkpoint_problem`
    (its files are whole) and `state_problem` (its training state loads); half-written ones are
    ignored, corrupt ones reported in one line naming why and marked CORRUPT (so that the step, when
    trained again, is not taken for complete while it is being rewritten), and the previous complete
    one is tried next. None when none is left: the run starts over, as after a crash before its first
    checkpoint. Every rank finds the same one; rank 0 alone renames."""
    for path in reversed([p for p in numbered_checkpoints(checkpoint_dir) if (p / COMPLETE).exists()]):
        problem = checkpoint_problem(path) or state_problem(path)
        if problem is None:
            return path
        log.warning("%s is marked complete but is corrupt (%s): using the previous complete checkpoint, if any", path, problem)
        if is_main_process():
            os.replace(path / COMPLETE, path / CORRUPT)
    return None


def checkpoint_problem(path: Path) -> str | None:
    """What makes a checkpoint unusable, found without reading a tensor: JSON files that do not parse,
    safetensors whose header or size is off, torch files cut before their zip directory; None if none."""
    if not (path / "trainer_state.json").is_file():
        return "no trainer_state.json"
    for file in sorted(path.rglob("*")):
        name = file.relative_to(path)
        try:
            if file.suffix == ".json":
                json.loads(file.read_bytes())
            elif file.suffix == ".safetensors":
                problem = safetensors_problem(file)
                if problem:
                    return f"{name}: {problem}"
            elif file.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(file).close()  # torch.save's format: the directory is at the end
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return f"{name}: {exc}"
    return None


def state_problem(checkpoint: Path) -> str | None:
    """What of `checkpoint`'s training state a resume could not load, found by loading each file as the
    Trainer does (`torch.load(weights_only=True)`, `TrainerState.load_from_json`) and checking that
    it holds what the Trainer takes from it, without reading tensor data (mmap) or touching the
    process's random generators; None if all of it loads. Files a checkpoint lacks are not checked:
    the Trainer skips them too (an FSDP or DeepSpeed optimizer is saved elsewhere)."""
    checks = {
        "trainer_state.json": trainer_state_problem,
        "optimizer.pt": optimizer_state_problem,
        "scheduler.pt": scheduler_state_problem,
        "scaler.pt": scaler_state_problem,
    }
    files = [(checkpoint / name, check) for name, check in checks.items()]
    files += [(file, rng_state_problem) for file in sorted(checkpoint.glob("rng_state*.pth"))]
    for file, check in files:
        if not file.is_file():
            continue
        try:
            problem = check(file)
        except Exception as exc:  # noqa: BLE001  whatever the Trainer's own load would have raised
            return f"{file.name} does not load: {one_line(exc)}"
        if problem:
            return f"{file.name}: {problem}"
    return None


def one_line(exc: Exception) -> str:
    """An exception as one short line: its type and first line, its first sentence if that line runs on."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text.split('. ')[0] if len(text) > 200 else text}"


def load_torch_state(file: Path):
    """`file` as the Trainer loads it (weights_only, numpy's types allowed), its tensors left on disk."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def trainer_state_problem(file: Path) -> str | None:
    from transformers import TrainerState

    step = TrainerState.load_from_json(str(file)).global_step
    return None if isinstance(step, int) and step >= 0 else f"global_step {step!r} is not a step count"


def optimizer_state_problem(file: Path) -> str | None:
    state = load_torch_state(file)
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not (
        isinstance(groups, list)
        and isinstance(state.get("state"), dict)
        and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups)
    ):
        return "not an optimizer's state_dict (state, param_groups)"
    return None


def scheduler_state_problem(file: Path) -> str | None:
    state = load_torch_state(file)
    return None if isinstance(state, dict) and "last_epoch" in state else "not a scheduler's state_dict (last_epoch)"


def scaler_state_problem(file: Path) -> str | None:
    return None if isinstance(load_torch_state(file), dict) else "not a gradient scaler's state_dict"


def rng_state_problem(file: Path) -> str | None:
    """The python, numpy and CPU torch states, each set on a generator of its own (device states are
    not checked: the Trainer only warns when it cannot set them)."""
    import random

    import numpy as np
    import torch

    state = load_torch_state(file)
    if not (isinstance(state, dict) and {"python", "numpy", "cpu"} <= state.keys()):
        return "not an RNG state (python, numpy, cpu)"
    random.Random().setstate(state["python"])
    np.random.RandomState().set_state(state["numpy"])
    torch.Generator().set_state(state["cpu"])
    return None


def safetensors_problem(file: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then exactly the bytes it maps."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        if size < 8:
            return f"{size} bytes, shorter than a header"
        (length,) = struct.unpack("<Q", handle.read(8))
        if 8 + length > size:
            return f"{size} bytes, shorter than its {length}-byte header"
        header = json.loads(handle.read(length))
    try:
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError):
        return "a header that maps no tensors"
    return None if size == 8 + length + end else f"{size} bytes where its header maps {8 + length + end}"


def rotate_checkpoints(checkpoint_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints; delete older ones and unmarked ones below the newest.
    Called after the newest is marked complete, so a crash at any moment leaves one to resume from."""
    if not keep or keep <= 0:
        return
    checkpoints = numbered_checkpoints(checkpoint_dir)
    complete = [p for p in checkpoints if (p / COMPLETE).exists()]
    if not complete:
        return
    kept = set(complete[-keep:])
    newest = checkpoint_step(complete[-1])
    for path in checkpoints:
        if path not in kept and checkpoint_step(path) < newest:
            shutil.rmtree(path, ignore_errors=True)


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


def checkpoint_callback(extra_files: dict[str, str] | None = None):
    """Writes `extra_files` ({name: text}) into each finished checkpoint and marks it complete, then
    rotates; on SIGUSR2, SIGTERM or Ctrl-C saves one at the end of the step, then requeues (SIGUSR2)
    or stops (SIGTERM, Ctrl-C)."""
    from transformers import TrainerCallback

    class PreemptibleCheckpoints(TrainerCallback):
        def __init__(self):
            self.requested = None  # the signal that asked for a checkpoint
            self.keep = None  # save_total_limit, applied by rotate_checkpoints after COMPLETE
            self.wait = None  # a StopWait, from the first Ctrl-C or SIGTERM on
            self.previous = {sig: signal.getsignal(sig) for sig in STOPPING_SIGNALS}
            for sig in STOPPING_SIGNALS:
                signal.signal(sig, self._request)

        def _request(self, signum, frame):
            if self.wait is not None and self.wait.stop is not None:  # the wait for the step was given up
                raise self.wait.stop
            if self.requested and signum == signal.SIGINT:  # Ctrl-C again: stop now, one line
                raise Stopped(signum, "training, before the requested checkpoint")
            if signum in STOP_NAMES and self.wait is None:  # SIGUSR2 waits: the time limit's SIGTERM bounds it
                self.wait = StopWait(signum)
                self.wait.start()
            if self.requested:  # a repeated SIGTERM or SIGUSR2: already on its way
                return
            then = "requeueing" if signum == signal.SIGUSR2 else "stopping (Ctrl-C again: stop now)"
            log.warning("%s: saving a checkpoint at the end of this step, then %s", signal.Signals(signum).name, then)
            self.requested = signum

        def on_train_begin(self, args, state, control, **kwargs):
            if args.save_total_limit is not None:  # transformers would rotate before on_save marks COMPLETE
                self.keep, args.save_total_limit = args.save_total_limit, None

        def on_step_end(self, args, state, control, **kwargs):
            self.requested = agreed_stop(self.requested)
            if self.requested:
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                for name, text in (extra_files or {}).items():
                    (path / name).write_text(text)
                (path / COMPLETE).write_text(f"{state.global_step}\n")
                rotate_checkpoints(path.parent, self.keep)
            if not self.requested:
                return
            barrier()
            if self.requested != signal.SIGUSR2:
                log.warning(
                    "stopped by %s after saving checkpoint-%d: %s continues from it",
                    STOP_NAMES[self.requested],
                    state.global_step,
                    how_to_continue(Path(args.output_dir).parent),
                )
                raise SystemExit(STOP_EXITS[self.requested])
            if callable(self.previous[signal.SIGUSR2]):  # submitit's handler: checkpoint(), requeue, exit
                self.previous[signal.SIGUSR2](signal.SIGUSR2, None)
            log.warning("stopped by SIGUSR2 after saving checkpoint-%d", state.global_step)
            raise SystemExit(EXIT_PREEMPTED)

        def on_train_end(self, args, state, control, **kwargs):
            if self.wait is not None:
                self.wait.end()
            for sig, handler in self.previous.items():  # eval and saving after training: stop at once
                signal.signal(sig, handler)

    return PreemptibleCheckpoints()
