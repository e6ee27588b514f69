"""Run untrusted-input checks in worker processes with a hard, killable time limit.

math-verify's own timeouts use SIGALRM: they fail off the main thread and some inputs (deep sympy
evaluation in C) never see the alarm. pebble's ProcessPool kills and replaces a worker whose task
overruns, which is what "never hang training" needs; concurrent.futures cannot cancel a running task.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.context import ForkServerContext
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


def initialize_worker(warm_up: Callable[[], Any] | None) -> None:
    """A worker's initializer (after pebble's own signal set-up), run before it takes its first task.

    SIGTERM from `scancel`, a time limit or `kill` of the process group must not cost the step in
    progress its rewards while the trainer checkpoints; pebble stops a worker by `terminate`, which
    kills it instead (`_KilledWorker`). `warm_up` pays one-time lazy set-up (parsers built on first
    use) here, outside every task's time limit: a worker that replaces a killed one would otherwise
    spend its first honest task's limit on it, and time out on a loaded machine.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if warm_up is not None:
        try:
            warm_up()
        except Exception as exc:  # best effort: the worker still serves its tasks, each under its limit
            log.warning("a worker's warm-up failed (%s: %s); its first task pays the set-up instead", type(exc).__name__, exc)


class _KilledWorker(multiprocessing.context.ForkServerProcess):
    def terminate(self):
        self.kill()


class _LocksOutliveWorkers(ForkServerContext):
    """The forkserver context, keeping every lock it makes until `release_locks`.

    pebble's stop unlinks its channel's named semaphores before it kills the workers, so a worker
    still starting (many workers on few cores) fails to open them and prints a SemLock
    FileNotFoundError traceback at exit. Dropping our references only after `join` moves the
    unlink after the last worker is gone.
    """

    Process = _KilledWorker

    def __init__(self):
        super().__init__()
        self._locks = []

    def RLock(self):
        lock = super().RLock()
        self._locks.append(lock)
        return lock

    def release_locks(self) -> None:
        self._locks.clear()


class TimeLimitedPool:
    """A lazily started pool of `workers` processes; `map` returns (status, value) per item.

    status is "ok", "timeout" (killed after `timeout_s`), "died" (the worker process ended: a crash,
    `os._exit`) or "error" (the task raised); value is the result or a one-line reason.
    """

    def __init__(self, workers: int, timeout_s: float, preload: Sequence[str] = (), warm_up: Callable[[], Any] | None = None):
        """`preload`: modules the forkserver imports once for every worker; `warm_up`: a module-level
        function each worker runs before its first task (see `initialize_worker`)."""
        self.workers, self.timeout_s, self.preload, self.warm_up = workers, timeout_s, list(preload), warm_up
        self._pool = None
        self._context = None

    def _start(self):
        import multiprocessing.forkserver

        from pebble import ProcessPool

        from rlvr.hardware.stops import stop_signals_ignored

        # forkserver: workers fork from a small clean process, not from a trainer holding torch threads.
        self._context = _LocksOutliveWorkers()
        self._context.set_forkserver_preload(self.preload)
        with stop_signals_ignored():  # the forkserver, its resource tracker and so every worker
            multiprocessing.forkserver.ensure_running()
        self._pool = ProcessPool(max_workers=self.workers, context=self._context, initializer=initialize_worker, initargs=(self.warm_up,))
        atexit.register(self.close)
        return self._pool

    def map(self, fn: Callable[..., Any], items: Sequence[tuple]) -> list[tuple[str, Any]]:
        from pebble import ProcessExpired

        pool = self._pool or self._start()
        futures = [pool.schedule(fn, args=item, timeout=self.timeout_s) for item in items]
        results = []
        for future in futures:
            try:
                results.append(("ok", future.result()))
            except FutureTimeout:
                results.append(("timeout", None))
            except ProcessExpired as exc:
                results.append(("died", f"its worker process died (exit code {exc.exitcode})"))
            except Exception as exc:  # the task raised: a verdict on this input, not a crash of ours
                results.append(("error", f"{type(exc).__name__}: {exc}"[:200]))
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()  # every worker is stopped: the channel's semaphores may go now
            self._context.release_locks()
            self._pool = None
