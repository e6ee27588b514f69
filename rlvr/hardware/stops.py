"""Stops of a run: SIGUSR2 saves a checkpoint at the end of the step and requeues (submitit's handler);
SIGTERM and Ctrl-C save it and exit 143 / 130 without a requeue (a user's `scancel` and a time limit
look alike); outside training they stop at once, in one line naming what the run was doing. What
users see: docs/slurm.md#signals-preemption-and-requeue and docs/run-dir.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable
from pathlib import Path

from rlvr.hardware.checkpoints import mark_complete, rotate_checkpoints
from rlvr.hardware.distributed import agreed_stop, barrier, torchrun_launched

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGUSR2 after a checkpoint; launchers/sbatch_run.sh requeues on it
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: stopped after a checkpoint, as asked
EXIT_TERMINATED = 143  # the shell's code for SIGTERM: stopped after a checkpoint, not requeued
STOPPING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGINT", "SIGTERM") if hasattr(signal, name))
STOP_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
STOP_EXITS = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
STOPPED_BY = {STOP_EXITS[sig]: name for sig, name in STOP_NAMES.items()} | {EXIT_PREEMPTED: "SIGUSR2"}  # exit code -> what stopped it
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


def how_it_ended(exc: BaseException) -> str:
    """How a run that raised `exc` ended, for its end line in run_info.jsonl: "stopped by <signal>"
    (Stopped, a stop's exit code, submitit's requeue exit), "failed" (an error), else "exited with code N"."""
    if isinstance(exc, KeyboardInterrupt):
        return f"stopped by {STOP_NAMES[getattr(exc, 'signum', signal.SIGINT)]}"
    if isinstance(exc, SystemExit):
        stopped_by = getattr(exc, "stopped_by", None) or STOPPED_BY.get(exc.code)
        return f"stopped by {stopped_by}" if stopped_by else f"exited with code {exc.code}"
    return "failed"


def how_to_continue(run_dir) -> str:
    """The command that continues this run: for a job of a `-m` run in processes of its own (the
    local or SLURM launcher), its own `-m` command (rlvr.launcher.continue_command); for one of a
    sweep that runs in this process (the basic launcher, stopped whole), the same `-m` command in the
    same sweep dir (its finished jobs are kept); else the same command with `hydra.run.dir` set to the
    run dir, when one is known (a torchrun or accelerate launch: its launch command, not this process's)."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.launcher import continue_command, is_multirun, override_arg, own_process

    if HydraConfig.initialized() and is_multirun():
        if own_process():
            return f"running {continue_command(HydraConfig.get())}"
        return f"the same -m command with {override_arg('hydra.sweep.dir', Path(HydraConfig.get().sweep.dir).absolute())}"
    command = "the same torchrun (or accelerate launch) command" if torchrun_launched() else "the same command"
    return command + (f" with {override_arg('hydra.run.dir', run_dir)}" if run_dir else "")


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


def _stop_again_outside_finalizers(previous_hook):
    """A sys.unraisablehook for while stops are reported. Python drops an exception raised in a
    finalizer (`__del__`, a weakref or gc callback) and prints it as "Exception ignored": a stop
    signal whose handler ran there would be lost, and the run would go on. This hook has a thread send
    the signal to the main thread again, once (dropped again, it comes back here); other exceptions
    go to `previous_hook`."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, Stopped):
            signum = unraisable.exc_value.signum
            threading.Thread(target=_send_stop_again, args=(signum,), name="rlvr-stop-again", daemon=True).start()
        else:
            previous_hook(unraisable)

    return hook


def _send_stop_again(signum: int) -> None:
    time.sleep(0.1)  # first: out of the hook that started this thread, where a stop is dropped too
    if _run_dirs:  # stops are still reported: the signal reaches `_stop_now`, not a default handler
        signal.pthread_kill(threading.main_thread().ident, signum)


@contextlib.contextmanager
def stops_reported(run_dir):
    """Ctrl-C and SIGTERM end the run at once with one line naming the phase, exit 130 / 143, no
    traceback (training installs its own handlers: a checkpoint at the end of the step first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stop_now) for sig in stops}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _stop_again_outside_finalizers(sys.unraisablehook)
    _run_dirs.append(run_dir)
    try:
        yield
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT, _phases[-1])
        stop.report()
        raise SystemExit(STOP_EXITS[stop.signum]) from None
    finally:
        _run_dirs.pop()
        sys.unraisablehook = previous_hook
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
    or stops (SIGTERM, Ctrl-C).

    `between_generations()` (set by the GRPO recipes) says whether the trainer holds no completions
    for later steps: TRL trains several steps on one generation (steps_per_generation,
    num_iterations) and keeps it in memory, and a resume starts with a new one, so a checkpoint is
    put off to the end of the generation's last step (the last step of training excepted, which a
    stop saves as it is)."""
    from transformers import TrainerCallback

    class PreemptibleCheckpoints(TrainerCallback):
        def __init__(self):
            self.requested = None  # the signal that asked for a checkpoint
            self.keep = None  # save_total_limit, applied by rotate_checkpoints after COMPLETE
            self.wait = None  # a StopWait, from the first Ctrl-C or SIGTERM on
            self.previous = {sig: signal.getsignal(sig) for sig in STOPPING_SIGNALS}
            self.between_generations: Callable[[], bool] | None = None  # None: a trainer that does not generate
            self.put_off = False  # a checkpoint due inside a generation, saved at its end
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
            then = {signal.SIGUSR2: "requeueing", signal.SIGINT: "stopping (Ctrl-C again: stop now)"}.get(signum, "stopping")
            where = "this step" if self.between_generations is None else "this step (of this generation's last)"
            log.warning("%s: saving a checkpoint at the end of %s, then %s", signal.Signals(signum).name, where, then)
            self.requested = signum

        def on_train_begin(self, args, state, control, **kwargs):
            if args.save_total_limit is not None:  # transformers would rotate before on_save marks COMPLETE
                self.keep, args.save_total_limit = args.save_total_limit, None

        def on_step_end(self, args, state, control, **kwargs):
            self.requested = agreed_stop(self.requested)
            due = control.should_save or bool(self.requested) or self.put_off
            last = state.global_step >= state.max_steps
            inside_a_generation = self.between_generations is not None and not self.between_generations()
            if due and inside_a_generation and not (self.requested and last):
                control.should_save, self.put_off = False, not last  # to the generation's end; none at the end of training
            else:
                control.should_save, self.put_off = due, False
            if control.should_save:  # a checkpoint's step is logged: a resume from it leaves no step in no row
                control.should_log = True

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            barrier()  # every rank's files are written (its RNG state, its shards) before they are listed
            if state.is_world_process_zero and path.is_dir():
                for name, text in (extra_files or {}).items():
                    (path / name).write_text(text)
                mark_complete(path, state.global_step)
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
                from rlvr._compat import requeue_through_submitit

                try:
                    requeue_through_submitit(self.previous[signal.SIGUSR2])
                except SystemExit as exc:
                    exc.stopped_by = "SIGUSR2"  # its exit code is submitit's (-1): how_it_ended reads this
                    raise
            log.warning("stopped by SIGUSR2 after saving checkpoint-%d", state.global_step)
            raise SystemExit(EXIT_PREEMPTED)

        def on_train_end(self, args, state, control, **kwargs):
            if self.wait is not None:
                self.wait.end()
            for sig, handler in self.previous.items():  # eval and saving after training: stop at once
                signal.signal(sig, handler)

    return PreemptibleCheckpoints()
