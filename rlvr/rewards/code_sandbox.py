"""Run a completion's program against tests in a bubblewrap sandbox, with limits and a hard wall time.

The sandbox (Debian's `bubblewrap`, the tool Flatpak uses) unshares every namespace: no network
interface but its own loopback, its own PID space (ending its first process kills every process in
it), nothing of the host's file system but a read-only Python runtime (the interpreter, its standard
library, the shared libraries they link) and a private, size-capped /tmp and /dev/shm; the rest is read-only. rlvr/rewards/code_harness.py
runs inside and applies the per-process limits (CPU seconds, address space, processes, file size).

Run as root (containers, CI), bwrap runs without a user namespace and the program drops to an
unprivileged user id of its own, because the kernel never applies RLIMIT_NPROC to root: a fork bomb
would otherwise be stopped only by the wall time. Run as anyone else, bwrap makes a user namespace
(the program's process count is then kept per namespace).

`sandbox="none"` runs the same harness as a plain subprocess with the same limits but no namespaces:
the program sees the host. It exists for machines without bubblewrap and is never a fallback.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rlvr.config import Range, check_number
from rlvr.errors import ConfigError

HARNESS = Path(__file__).with_name("code_harness.py")
SANDBOX_HARNESS = "/harness/code_harness.py"
SANDBOXES = ("bubblewrap", "none")
VERDICT_BYTES = 1 << 16  # read of the sandbox's output: the verdict is one short line
MAX_WORKERS = 256  # sandboxes one Sandbox runs at once
# Run as root, a sandboxed program is user FIRST_UID + pid * MAX_WORKERS + slot (pid: the process that
# started it): ids no account uses, and none shared by two processes of a node (ranks, rlvr.score)
# whose limit on processes per user would otherwise be one.
FIRST_UID = 1_900_000_000


LIMIT_RANGES = {
    "timeout_s": Range(0.5, 600),
    "cpu_s": Range(1, 600),
    "memory_mb": Range(64, 65536),
    "processes": Range(1, 4096),
    "file_mb": Range(0, 4096),
    "tmpfs_mb": Range(1, 4096),
}


@dataclass(frozen=True)
class Limits:
    """Per program. Each is checked at construction: a bad value fails the run's start in one line."""

    timeout_s: float = 10.0  # wall time of the whole sandbox, start-up included; then its processes are killed
    cpu_s: int = 5
    memory_mb: int = 1024  # address space of the program's process
    processes: int = 16  # processes and threads the program may have at once
    file_mb: int = 16  # largest file it may write; /tmp holds at most tmpfs_mb
    tmpfs_mb: int = 64

    def __post_init__(self):
        for name, allowed in LIMIT_RANGES.items():
            check_number(name, getattr(self, name), allowed)


@dataclass(frozen=True)
class Verdict:
    status: str  # "ok" (the tests ran: see passed/failed/error), "timeout", or "error" (no verdict came back)
    passed: int = 0
    failed: int = 0
    error: str | None = None  # why the tests stopped early, or why there is no verdict
    out_of_cpu: bool = False  # the program was ended by its cpu_s limit (the tests' counts and error stand)
    too_large: str | None = None  # why a value the tests passed or got back was not compared (over the harness's size limit)


@functools.cache
def runtime_paths() -> tuple[tuple[str, str], ...]:
    """(host path, sandbox path) pairs of what the Python runtime needs: the interpreter, its standard
    library and each shared library they link, bound by the name the loader asks for."""
    executable = os.path.realpath(sys._base_executable)  # the interpreter a venv's python links to
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    dynload = Path(stdlib) / "lib-dynload"
    if shutil.which("ldd") is None:
        raise ConfigError(
            "the code reward's sandbox lists the Python runtime's shared libraries with ldd, which is not installed (Debian: libc-bin)"
        )
    linked = set()
    for binary in [executable, *map(str, dynload.glob("*.so"))]:
        result = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                linked.add(path)
    pairs = [(executable, executable), (stdlib, stdlib)]
    for path in sorted(linked):
        pairs.append((os.path.realpath(path), os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))))
    return tuple(pairs)


def bubblewrap_argv(limits: Limits, as_root: bool) -> list[str]:
    # Each namespace named rather than --unshare-all, which as root also makes a user namespace that
    # maps only root, and so no unprivileged user for the program to become.
    # --as-pid-1: the harness is the PID space's first process, so its end (a verdict, or its caller gone:
    # see code_harness.end_with_the_caller) ends every process in it. bwrap's own first process would
    # instead wait for all of them.
    argv = [
        "bwrap",
        "--unshare-ipc",
        "--unshare-pid",
        "--as-pid-1",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/nonexistent",
        "--setenv",
        "HOME",
        "/tmp",
        "--tmpfs",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    for writable in ("/tmp", "/dev/shm"):  # the only ones: each capped at tmpfs_mb
        argv += ["--perms", "1777", "--size", str(limits.tmpfs_mb << 20), "--tmpfs", writable]
    for link, target in (("/lib", "usr/lib"), ("/lib64", "usr/lib64")):  # merged-/usr systems: the loader's paths
        if os.path.islink(link):
            argv += ["--symlink", target, link]
    binds = [*runtime_paths(), (str(HARNESS), SANDBOX_HARNESS)]
    ancestors = {str(parent) for _, destination in binds for parent in Path(destination).parents} - {"/"}
    for directory in sorted(ancestors, key=lambda d: d.count("/")):  # readable by the unprivileged program
        if not os.path.islink(directory):
            argv += ["--perms", "0755", "--dir", directory]
    for source, destination in binds:
        argv += ["--ro-bind", source, destination]
    stdlib = runtime_paths()[1][1]
    for hidden in ("site-packages", "dist-packages"):  # the runtime only: no installed packages
        if os.path.isdir(os.path.join(stdlib, hidden)):
            argv += ["--tmpfs", os.path.join(stdlib, hidden), "--remount-ro", os.path.join(stdlib, hidden)]
    # Without root the user namespace makes the program the owner of the root and /dev tmpfs (and of
    # the directories made on them), with no size cap: read-only, so that it can neither fill memory
    # there nor plant a module on the interpreter's search path for the tests to import.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    if as_root:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    return argv


@dataclass(frozen=True)
class Job:
    program: str
    tests: str
    entry_point: str
    prelude: str = ""


class Sandbox:
    """Runs programs, up to `workers` at a time, all from the calling thread: an exception there
    (Ctrl-C, a stop) kills every sandbox still running before it propagates, and a killed process
    takes its sandboxes along (each harness watches a pipe whose other end this process holds)."""

    def __init__(self, kind: str, limits: Limits, workers: int = 1):
        if kind not in SANDBOXES:
            raise ConfigError(f"code reward sandbox={kind!r}: must be one of {', '.join(SANDBOXES)}")
        self.kind, self.limits, self.workers = kind, limits, workers
        self.as_root = os.geteuid() == 0

    def command(self, slot: int, lifeline: int) -> list[str]:
        """The sandbox's command line for a worker slot; `lifeline`: the read end the harness watches."""
        limits = {
            "cpu_s": self.limits.cpu_s,
            "memory_mb": self.limits.memory_mb,
            "processes": self.limits.processes,
            "file_mb": self.limits.file_mb,
            "uid": FIRST_UID + os.getpid() * MAX_WORKERS + slot if self.as_root else None,
            "lifeline": lifeline,
        }
        interpreter = runtime_paths()[0][1]
        if self.kind == "none":
            return [interpreter, "-I", "-S", str(HARNESS), json.dumps(limits)]
        return bubblewrap_argv(self.limits, self.as_root) + [interpreter, "-I", "-S", SANDBOX_HARNESS, json.dumps(limits)]

    def run(self, jobs: list[Job]) -> list[Verdict]:
        """One Verdict per job, in order."""
        verdicts: list[Verdict | None] = [None] * len(jobs)
        waiting = list(enumerate(jobs))[::-1]
        running: dict[int, tuple] = {}  # slot: (job index, process, lifeline, token, deadline, stdout, stderr)
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    slot = next(s for s in range(self.workers) if s not in running)
                    index, job = waiting.pop()
                    running[slot] = (index, *self._start(job, slot))
                for slot, (index, process, lifeline, token, deadline, out, err) in list(running.items()):
                    if process.poll() is None and time.monotonic() < deadline:
                        continue
                    timed_out = process.poll() is None
                    self._kill(process, lifeline)
                    verdicts[index] = self._verdict(process, token, out, err, timed_out)
                    del running[slot]
                time.sleep(0.002)
        finally:
            for _, process, lifeline, *_ in running.values():
                self._kill(process, lifeline)
        return verdicts

    def _start(self, job: Job, slot: int) -> tuple:
        token = secrets.token_hex(16)
        files = [tempfile.TemporaryFile() for _ in range(3)]  # the job in, the verdict and errors out
        files[0].write(
            json.dumps(
                {"program": job.program, "tests": job.tests, "entry_point": job.entry_point, "prelude": job.prelude, "token": token}
            ).encode()
        )
        files[0].seek(0)
        # The write end stays here, not inheritable: it closes when this process ends, however it ends.
        lifeline, write_end = os.pipe()
        held = os.fdopen(write_end, "wb", buffering=0)  # a file object: closing it twice is harmless
        try:
            with files[0]:
                process = subprocess.Popen(
                    self.command(slot, lifeline),
                    stdin=files[0],
                    stdout=files[1],
                    stderr=files[2],
                    start_new_session=True,
                    pass_fds=(lifeline,),
                )
        except BaseException:
            held.close()
            raise
        finally:
            os.close(lifeline)
        return process, held, token, time.monotonic() + self.limits.timeout_s, files[1], files[2]

    @staticmethod
    def _kill(process, lifeline) -> None:
        """Ends a sandbox: closing the lifeline ends its harness (and so its PID space) even when bwrap's
        inner process missed its parent-death signal; killing bwrap's process group ends the rest.
        Safe to call again for the same sandbox (an interrupt between the two calls in `run`)."""
        lifeline.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _verdict(self, process, token: str, out, err, timed_out: bool) -> Verdict:
        with out, err:
            out.seek(0)
            err.seek(0)
            output, errors = out.read(VERDICT_BYTES).decode(errors="replace"), err.read(VERDICT_BYTES)
        if timed_out:
            return Verdict("timeout", error=f"still running after {self.limits.timeout_s:g} s")
        for line in output.splitlines():
            if line.startswith(token + " "):
                counts = json.loads(line[len(token) + 1 :])
                if counts.get("tests_error"):
                    return Verdict("error", error=f"the tests did not run: {counts['tests_error']}")
                return Verdict("ok", counts["passed"], counts["failed"], counts["error"], counts["out_of_cpu"], counts["too_large"])
        detail = errors.decode(errors="replace").strip().splitlines()
        return Verdict("error", error=f"no verdict (exit {process.returncode}" + (f": {detail[-1][:200]})" if detail else ")"))

    def check_works(self) -> None:
        """Raise ConfigError naming the cause when this machine cannot run the sandbox."""
        if self.kind == "bubblewrap" and shutil.which("bwrap") is None:
            raise ConfigError(
                "the code reward's sandbox needs bubblewrap, which is not installed: install Debian's or "
                "your distribution's 'bubblewrap' package (apt-get install bubblewrap), or opt in to "
                "running model-written code unsandboxed with sandbox=none"
            )
        [verdict] = self.run([Job("def f():\n    return 1\n", "assert f() == 1\n", "f")])
        if verdict.status != "ok" or verdict.passed != 1:
            raise ConfigError(
                f"the code reward's sandbox ({self.kind}) cannot run a trivial program on this machine: "
                f"{verdict.error or verdict}; bubblewrap needs user namespaces (or root), which some "
                f"containers and macOS lack"
            )
