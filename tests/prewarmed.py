"""A prewarmed interpreter for the suite's `python -m rlvr.<cli> args...` runs (conftest.run_cli).

A fresh interpreter spends about 10 of a tiny run's 18 s importing torch, transformers, TRL, peft and
datasets, and the suite starts a few hundred of them. Run as a script, this module imports those once
and then serves requests on stdin: for each, it forks, and the child runs `python -m module args`
as that interpreter does (`runpy._run_module_as_main`, what it calls for `-m`), or `python script
args` (`runpy.run_path`), with its output in the files named, then exits as that interpreter would.
The parent answers with the child's pid, then its exit code (negative: the signal that ended it)
and its peak RSS (`os.wait4`: the child's own, as a fresh process's would be measured).

Nothing is served that could differ from a fresh interpreter's run: `Prewarmed.run` takes a request
only when the run's environment is the one this interpreter started with (variables read at import,
such as HF_HOME or OMP_NUM_THREADS, are the same); the server refuses to serve if the imports left a
Python thread running (a fork copies only the calling thread, and the locks others hold stay held).
The native threads these imports start (torch's, pyarrow's allocator) are the ones every fork of a
torch process meets: a DataLoader's workers and `datasets`' num_proc fork after the same imports.
Runs that signal their process, change the environment or start a non-rlvr module still get a fresh
interpreter (run_cli decides); tests/benchmarks/bench.py's smoke runs are served by one of their own,
and tests/test_vllm_rollouts.py's runs by one in .venv-vllm that has imported vLLM too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Variables the child takes from the request that need not match the server's: the test's name, and
# two that torch sets in the test process as it runs and reads only when it compiles or asks for CUDA.
READ_AT_RUN_TIME = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR", "PYTORCH_NVML_BASED_CUDA_CHECK"}
# What a run imports that takes time; pyplot (1 s) for the plots a run writes as it ends.
PRELOADED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "hydra", "omegaconf", "math_verify", "matplotlib.pyplot")


class _Launch(BaseException):
    """Raised in a forked child to leave the serving loop and run `python *argv` at the top level."""

    def __init__(self, argv: list[str]):
        self.argv = argv


def _child(request: dict) -> None:
    """In the forked child: fds 0-2 as `subprocess.run(..., capture_output=True)` would give them, and
    a session of its own if the request asks for one (`start_new_session=True`)."""
    if request.get("new_session"):
        os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The server's environment, as a fresh interpreter's would be after the same imports (which set some:
    # vLLM's do), with the run's own value of each variable READ_AT_RUN_TIME that the run has.
    os.environ.update({key: value for key, value in request["env"].items() if key in READ_AT_RUN_TIME})
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    raise _Launch(request["argv"])


def _serve(also: list[str]) -> None:
    """Import PRELOADED and the modules `also` names, then serve until stdin ends."""
    import gc
    import importlib

    for name in (*PRELOADED, *also):
        importlib.import_module(name)
    from trl import GRPOTrainer  # noqa: F401  (TRL's trainers import lazily)

    gc.freeze()  # the children's collections skip what is imported here, and leave its pages shared
    print(json.dumps({"ready": threading.active_count() == 1}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status, usage = os.wait4(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "peak_rss_kb": usage.ru_maxrss}), flush=True)
    os._exit(0)  # no teardown: the server has nothing to flush, and vLLM's triton bindings report "leaks" at a normal exit


class Prewarmed:
    """One server per test process and interpreter, started at the first run it is asked for: `python`
    (this one's by default) with PRELOADED and the modules `also` names imported."""

    def __init__(self, env: dict, python: str = sys.executable, also: tuple[str, ...] = ()):
        self.python = str(python)
        command = [self.python, __file__, *also]
        self.server = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buffer = b""
        started = json.loads(self._line(None))
        self.usable, self.started_with = started["ready"], dict(env)
        self.lock = threading.Lock()

    def serves(self, env: dict) -> bool:
        """Whether a run with `env` can be a child of the server: one whose environment differs from
        the one the server started with only in variables READ_AT_RUN_TIME."""
        differs = {key for key in env.keys() | self.started_with.keys() if env.get(key) != self.started_with.get(key)}
        return self.usable and self.server.poll() is None and differs <= READ_AT_RUN_TIME

    def run(
        self, argv: list[str], env: dict, output_dir: Path, timeout: float | None, new_session: bool = False
    ) -> subprocess.CompletedProcess:
        """What `subprocess.run([python, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, start_new_session=new_session)` returns or raises, from a child of the server;
        `argv` is `-m module args...` or `script args...`. The result also holds the child's `pid` and
        `peak_rss_kb`."""
        stdout, stderr = output_dir / "stdout", output_dir / "stderr"
        with self.lock:
            request = {"argv": list(argv), "env": env, "stdout": str(stdout), "stderr": str(stderr), "new_session": new_session}
            self.server.stdin.write(json.dumps(request).encode() + b"\n")
            self.server.stdin.flush()
            pid = json.loads(self._line(None))["pid"]
            ended = self._line(timeout)
            if ended is None:  # the server reaps the child only after it ends: `pid` is still the child's
                os.kill(pid, signal.SIGKILL)
                self._line(None)
        out, err = (_text(path) for path in (stdout, stderr))
        command = [self.python, *argv]
        if ended is None:
            raise subprocess.TimeoutExpired(command, timeout, out, err)
        ended = json.loads(ended)
        completed = subprocess.CompletedProcess(command, ended["returncode"], out, err)
        completed.pid, completed.peak_rss_kb = pid, ended["peak_rss_kb"]
        return completed

    def close(self) -> None:
        """The server ends at the end of its input."""
        self.server.stdin.close()
        self.server.wait(timeout=60)

    def _line(self, timeout: float | None) -> str | None:
        """The server's next line, or None if it has written none within `timeout` seconds."""
        import select
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.server.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.server.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the prewarmed interpreter ended (exit code {self.server.wait()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def _text(path: Path) -> str:
    """The file's bytes read as `subprocess.run(..., text=True)` reads a pipe (locale encoding, universal newlines)."""
    import io
    import locale

    return io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding=locale.getpreferredencoding(False)).read()


if __name__ == "__main__":
    try:
        _serve(sys.argv[1:])
    except _Launch as launch:
        import runpy

        sys.orig_argv = [sys.executable, *launch.argv]
        if launch.argv[0] == "-m":
            sys.argv = launch.argv[:1] + launch.argv[2:]
            sys.path[0] = str(ROOT)  # what `python -m` puts first: its working directory
            runpy._run_module_as_main(launch.argv[1], alter_argv=True)
        else:
            sys.argv = launch.argv
            sys.path[0] = str(Path(launch.argv[0]).resolve().parent)  # what `python script` puts first
            runpy.run_path(launch.argv[0], run_name="__main__")
