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
such as HF_HOME or OMP_NUM_THREADS, are the same; a PYTHONPATH with directories before this one's puts
them where the interpreter would, after sys.path[0]); the server refuses to serve if the imports left a
Python thread running (a fork copies only the calling thread, and the locks others hold stay held).
The native threads these imports start (torch's, pyarrow's allocator) are the ones every fork of a
torch process meets: a DataLoader's workers and `datasets`' num_proc fork after the same imports.
Runs that change the environment otherwise or start a non-rlvr module still get a fresh interpreter
(conftest.run_cli and conftest.started_run decide; `Prewarmed.started` gives a run to signal as it goes);
tests/benchmarks/bench.py's smoke runs are served by one of their own, and tests/test_vllm_rollouts.py's
runs by one in .venv-vllm that has imported vLLM too.

The tasks of a served run's submitit jobs (`hydra/launcher=local`: 2 ranks, each a fresh interpreter
that imports all of the above) are served too, side by side, and so are the workers of a served
`torchrun ... -m rlvr.run` (`python -u -m rlvr.run` with torchrun's variables). A served run's
`sys.executable` is tests/served/python, which submitit's local controller starts each task with: it hands
`-m submitit.core._submit` to tests/served_task.py, a client that asks this server over a Unix socket
to fork the task with the client's stdin/stdout/stderr, relays the signals the controller sends, and
exits as the task did (the task dies if its client or the server dies first); anything else it
starts is the real interpreter. A task is served only when its environment differs from this
interpreter's as a run's may (`unserved`: variables read at run time, READ_AT_RUN_TIME and those
submitit and torchrun set for each task, and directories put before the PYTHONPATH) and its client is
in this interpreter's session (a run started in a session of its own keeps all its processes there).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Variables the child takes from the request that need not match the server's: the test's name, two
# that torch sets in the test process as it runs and reads only when it compiles or asks for CUDA, and
# the SLURM cluster's config, read by the SLURM commands a run starts (sbatch, squeue, sacct).
READ_AT_RUN_TIME = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR", "PYTORCH_NVML_BASED_CUDA_CHECK", "SLURM_CONF"}


# Read by the interpreter as it starts, into sys.path: a run whose PYTHONPATH puts directories before the
# server's (a test's user modules) gets them there in sys.path, where its own interpreter would have them.
def added_path(env: dict, server_env: dict) -> list[str] | None:
    """The directories `env`'s PYTHONPATH puts before `server_env`'s, or None if it is not such an extension."""
    run, server = (e.get("PYTHONPATH", "").split(os.pathsep) if e.get("PYTHONPATH") else [] for e in (env, server_env))
    return run[: len(run) - len(server)] if run[len(run) - len(server) :] == server else None


# What a run imports that takes time; pyplot (1 s) for the plots a run writes as it ends.
PRELOADED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "hydra", "omegaconf", "math_verify", "matplotlib.pyplot")
# Imported too where installed (not in every venv), as every run imports them: wandb, as transformers asks
# whether it is available (~0.3 s); DeepSpeed (~0.5 s), whose import logs a line to stdout (`_serve` keeps it
# off this server's replies).
PRELOADED_IF_INSTALLED = ("wandb", "deepspeed")
# How a served run's submitit tasks find this server (tests/served/python, tests/served_task.py).
TASK_SOCKET, REAL_PYTHON = "RLVR_TEST_TASK_SOCKET", "RLVR_TEST_REAL_PYTHON"
SERVED_PYTHON = Path(__file__).with_name("served") / "python"
# What a submitit local task's environment adds to its run's: submitit's variables (read by its
# _submit module as it runs), what the shell of tests/served/python sets, and CUDA_VISIBLE_DEVICES
# (read when CUDA is first asked for: on a CPU build of torch, never at import; see _serve).
TASK_READ_AT_RUN_TIME = READ_AT_RUN_TIME | {"CUDA_VISIBLE_DEVICES", TASK_SOCKET, REAL_PYTHON, "PWD", "OLDPWD", "SHLVL", "_"}
# What torchrun adds to a worker's environment (torch/distributed/elastic/agent/server/local_elastic_agent.py,
# with the variables starting TORCHELASTIC_): read as torch.distributed starts, at run time.
TORCHRUN_WORKER = {"RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE", "WORLD_SIZE"}
TORCHRUN_WORKER |= {"GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCH_NCCL_ASYNC_ERROR_HANDLING"}


class _Launch(BaseException):
    """Raised in a forked child to leave the serving loop and run `python *argv` at the top level."""

    def __init__(self, argv: list[str], cwd: str):
        self.argv, self.cwd = argv, cwd


def differing(env: dict, other: dict) -> set[str]:
    """The variables set in one environment and not the other, or set to another value."""
    return {key for key in env.keys() | other.keys() if env.get(key) != other.get(key)}


def unserved(env: dict, server_env: dict, read_at_run_time: set[str], prefixes: tuple[str, ...] = ()) -> set[str]:
    """The variables in which `env` differs from `server_env` that a child of the server cannot take: all
    but those read at run time (`read_at_run_time`, or starting with one of `prefixes`) and a PYTHONPATH
    that puts directories before the server's (`added_path`; the child puts them in sys.path)."""
    differs = {key for key in differing(env, server_env) if key not in read_at_run_time and not key.startswith(prefixes)}
    if "PYTHONPATH" in differs and added_path(env, server_env) is not None:
        differs.remove("PYTHONPATH")
    return differs


def _child(request: dict, fds: list[int] | None, socket_name: str) -> None:
    """In the forked child: fds 0-2 as `subprocess.run(..., capture_output=True)` would give them (a
    task: the client's own), a session of its own if the request asks for one (`start_new_session=True`),
    and, for a run, tests/served/python as `sys.executable` so that its submitit tasks are served."""
    if request.get("new_session"):
        os.setsid()
    sys.path[1:1] = added_path(request["env"], os.environ)  # after the entry _run puts first
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # The server's environment, as a fresh interpreter's would be after the same imports (which set some:
    # vLLM's do), with the run's own value of each variable read at run time that the run has.
    if fds is None:
        os.environ.update({key: value for key, value in request["env"].items() if key in READ_AT_RUN_TIME | {"PYTHONPATH"}})
        os.environ.update({TASK_SOCKET: socket_name, REAL_PYTHON: sys.executable})
        sys.executable = str(SERVED_PYTHON)
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fds = [stdin, stdout, stderr]
    else:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a task never outlives the server
        if os.getppid() != request["server"]:  # the server ended before the line above
            os._exit(1)
        os.environ.clear()
        os.environ.update(request["env"])
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    raise _Launch(request["argv"], request.get("cwd", str(ROOT)))


def _serve(also: list[str]) -> None:
    """Import PRELOADED and the modules `also` names, then serve until stdin ends: runs asked for on
    stdin (one at a time: answered on stdout) and tasks asked for on the task socket (any number)."""
    import gc
    import importlib.util
    import select
    import socket

    for name in (*PRELOADED, *also):
        importlib.import_module(name)
    # fd 1 (the replies) points at fd 2 meanwhile; sys.stdout stays the object a logging handler binds to
    # at import, so in a child, whose fd 1 is its run's stdout, the handler writes there, as in a fresh run.
    sys.stdout.flush()
    replies = os.dup(1)
    os.dup2(2, 1)
    for name in PRELOADED_IF_INSTALLED:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    sys.stdout.flush()
    os.dup2(replies, 1)
    os.close(replies)
    from trl import GRPOTrainer  # noqa: F401  (TRL's trainers import lazily)

    import torch

    gc.freeze()  # the children's collections skip what is imported here, and leave its pages shared
    # An abstract socket (its name after a NUL byte): no file to clean up, no path-length limit.
    socket_name = f"rlvr-prewarmed-{os.getpid()}-{os.urandom(4).hex()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a request is one message, never split
    listener.bind(f"\0{socket_name}")
    listener.listen(16)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the pipe
    server_env = dict(os.environ)
    # A CUDA build may have counted the devices during the imports (bitsandbytes asks): then the variable counts.
    read_at_run_time = (TASK_READ_AT_RUN_TIME - ({"CUDA_VISIBLE_DEVICES"} if torch.version.cuda else set())) | TORCHRUN_WORKER
    print(json.dumps({"ready": threading.active_count() == 1}), flush=True)
    stdin_pid, tasks, connections = None, {}, []  # tasks: {pid: its client's connection, None once the client died}
    stdin = os.fdopen(0, "rb", buffering=0, closefd=False)
    buffered = b""

    def fork(request: dict, fds: list[int] | None) -> int:
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            listener.close()
            for connection in connections:
                connection.close()
            os.close(wakeup_r)
            os.close(wakeup_w)
            _child(request, fds, socket_name)
        return pid

    def refusal(connection, fds: list[int], request: dict) -> str | None:
        """Why the task `request` asks for is not served, or None."""
        peer = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        peer_pid, peer_uid = int.from_bytes(peer[:4], sys.byteorder), int.from_bytes(peer[4:8], sys.byteorder)
        if peer_uid != os.getuid():
            return "another user"
        # a run in a session of its own: its tasks stay in it; but a torchrun worker, whose session torchrun
        # makes for it alone (to signal its process group), relays those signals to the task as a client does
        torchrun_worker = "TORCHELASTIC_RUN_ID" in request["env"] and os.getsid(peer_pid) == peer_pid
        if os.getsid(peer_pid) != os.getsid(0) and not torchrun_worker:
            return "another session"
        if len(fds) != 3:
            return "no stdin/stdout/stderr"
        differs = unserved(request["env"], server_env, read_at_run_time, ("SUBMITIT_", "TORCHELASTIC_"))
        return f"the environment differs in {sorted(differs)}" if differs else None

    def serve_task(connection) -> None:
        """Fork the task `connection` asks for, or answer why not; raises OSError or ValueError if the
        client died or asked for nothing (a task already forked is then killed)."""
        connection.settimeout(10)  # a client that connects and stops before asking holds nothing up for long
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        try:
            request = json.loads(message) | {"server": os.getpid()}
            why = refusal(connection, fds, request)
        except (OSError, ValueError):
            for fd in fds:
                os.close(fd)
            raise
        connections.append(connection)  # closed in the task's child, as the other clients' are
        pid = None if why else fork(request, fds)  # in the child, fork raises _Launch
        for fd in fds:
            os.close(fd)
        if pid is None:
            connection.sendall(json.dumps({"refused": why}).encode() + b"\n")
            connection.close()
            return
        tasks[pid] = None  # reaped whatever happens to its client
        try:
            connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            os.kill(pid, signal.SIGKILL)
            raise
        tasks[pid] = connection

    while True:
        connections = [connection for connection in tasks.values() if connection is not None]
        readable = select.select([stdin, listener, wakeup_r, *connections], [], [])[0]
        if stdin in readable:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                for pid in tasks:
                    os.kill(pid, signal.SIGKILL)
                os._exit(0)  # no teardown: nothing to flush; vLLM's triton bindings report "leaks" at a normal exit
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                stdin_pid = fork(json.loads(line), None)
                print(json.dumps({"pid": stdin_pid}), flush=True)
        if listener in readable:
            connection, _ = listener.accept()
            try:
                serve_task(connection)
            except (OSError, ValueError):  # the client died, or sent no request: nothing to answer
                connection.close()
        for pid, connection in list(tasks.items()):
            if connection in readable:
                try:
                    alive = connection.recv(1) != b""
                except OSError:
                    alive = False
                if not alive:  # its client died: so does the task
                    os.kill(pid, signal.SIGKILL)
                    connection.close()
                    tasks[pid] = None
        if wakeup_r in readable:
            os.read(wakeup_r, 1 << 16)
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            ended = json.dumps({"returncode": os.waitstatus_to_exitcode(status), "peak_rss_kb": usage.ru_maxrss})
            if pid in tasks:
                connection = tasks.pop(pid)
                if connection is not None:
                    with contextlib.suppress(OSError):  # its client may have died as the task ended
                        connection.sendall(ended.encode() + b"\n")
                    connection.close()
            elif pid == stdin_pid:
                stdin_pid = None
                print(ended, flush=True)


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
        the one the server started with only in variables READ_AT_RUN_TIME, and in directories its
        PYTHONPATH puts before the server's."""
        return self.usable and self.server.poll() is None and not unserved(env, self.started_with, READ_AT_RUN_TIME)

    def run(
        self, argv: list[str], env: dict, output_dir: Path, timeout: float | None, new_session: bool = False
    ) -> subprocess.CompletedProcess:
        """What `subprocess.run([python, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, start_new_session=new_session)` returns or raises, from a child of the server;
        `argv` is `-m module args...` or `script args...`. The result also holds the child's `pid` and
        `peak_rss_kb`."""
        with self.started(argv, env, output_dir, new_session) as run:
            return run.wait(timeout)

    @contextlib.contextmanager
    def started(self, argv: list[str], env: dict, output_dir: Path, new_session: bool = False):
        """The run `run` makes, started: yields its ServedRun (Popen-like) while the run goes on; a run not
        waited for is killed (with `new_session`, its process group)."""
        with self.lock:
            request = {
                "argv": list(argv),
                "env": env,
                "stdout": str(output_dir / "stdout"),
                "stderr": str(output_dir / "stderr"),
                "new_session": new_session,
            }
            self.server.stdin.write(json.dumps(request).encode() + b"\n")
            self.server.stdin.flush()
            run = ServedRun(self, json.loads(self._line(None))["pid"], [self.python, *argv], output_dir, new_session)
            try:
                yield run
            finally:
                if run.result is None and self.server.poll() is None:  # a server that ended has nothing to answer
                    run.kill()
                    self._line(None)

    def close(self) -> None:
        """The server ends at the end of its input."""
        self.server.stdin.close()
        self.server.wait(timeout=60)

    def _line(self, timeout: float | None, peek: bool = False) -> str | None:
        """The server's next line, or None if it has written none within `timeout` seconds; with `peek`,
        left to be read again."""
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
        if peek:
            return self.buffer.split(b"\n", 1)[0].decode()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


class ServedRun:
    """A run a prewarmed interpreter forked (Prewarmed.started), as much of a `subprocess.Popen` as the
    tests use: `pid` (with `new_session`, its session's id), `poll`, `wait`, `communicate`, `returncode`."""

    def __init__(self, server: Prewarmed, pid: int, command: list[str], output_dir: Path, new_session: bool):
        self.server, self.pid, self.command, self.output_dir, self.new_session = server, pid, command, output_dir, new_session
        self.result: subprocess.CompletedProcess | None = None

    @property
    def returncode(self) -> int | None:
        return None if self.result is None else self.result.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the run has ended, as `subprocess.Popen.communicate` gives them."""
        done = self.wait(timeout)
        return done.stdout, done.stderr

    def poll(self) -> int | None:
        """The run's exit code once it has ended (its result is then `wait`'s), else None."""
        if self.result is None and self.server._line(0, peek=True) is not None:
            self.wait(None)
        return self.returncode

    def wait(self, timeout: float | None) -> subprocess.CompletedProcess:
        """What `subprocess.run` returns (the result also holds `pid` and `peak_rss_kb`), or raises
        subprocess.TimeoutExpired after killing the run."""
        if self.result is not None:
            return self.result
        ended = self.server._line(timeout)
        if ended is None:  # the server reaps the child only after it ends: `pid` is still the child's
            self.kill()
            self.server._line(None)
        out, err = (_text(self.output_dir / name) for name in ("stdout", "stderr"))
        if ended is None:
            self.result = subprocess.CompletedProcess(self.command, None, out, err)
            raise subprocess.TimeoutExpired(self.command, timeout, out, err)
        ended = json.loads(ended)
        self.result = subprocess.CompletedProcess(self.command, ended["returncode"], out, err)
        self.result.pid, self.result.peak_rss_kb = self.pid, ended["peak_rss_kb"]
        return self.result

    def kill(self) -> None:
        try:
            (os.killpg if self.new_session else os.kill)(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _text(path: Path) -> str:
    """The file's bytes read as `subprocess.run(..., text=True)` reads a pipe (locale encoding, universal newlines)."""
    import io
    import locale

    return io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding=locale.getpreferredencoding(False)).read()


def _run(launch: _Launch) -> None:
    """In the forked child, at the top level: `python *launch.argv` in `launch.cwd`."""
    import runpy
    import types

    os.chdir(launch.cwd)
    argv = launch.argv
    if argv[0] == "-u":  # submitit starts its tasks unbuffered: text straight to the file, as -u gives it
        import io

        argv = argv[1:]
        sys.stdout, sys.stderr = (
            io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), write_through=True, errors=errors)
            for fd, errors in ((1, "strict"), (2, "backslashreplace"))
        )
    sys.orig_argv = [sys.executable, *launch.argv]
    if argv[0] == "-m":
        sys.argv = argv[:1] + argv[2:]
        sys.path[0] = launch.cwd  # what `python -m` puts first: its working directory
        sys.modules["__main__"] = types.ModuleType("__main__")  # whose globals the module runs in: not the server's
        runpy._run_module_as_main(argv[1], alter_argv=True)
    else:
        sys.argv = argv
        sys.path[0] = str(Path(argv[0]).resolve().parent)  # what `python script` puts first
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    try:
        _serve(sys.argv[1:])
    except _Launch as raised:
        launch = raised  # run outside the `except`: the run's own tracebacks chain to nothing of the server's
    _run(launch)
