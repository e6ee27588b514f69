"""Runs inside the sandbox (standard library only): a completion's program against a row's tests.

Started as `python -I -S code_harness.py LIMITS` with LIMITS a JSON object {"cpu_s", "memory_mb",
"processes", "file_mb", "uid", "lifeline"} (uid: null, or the unprivileged user the program runs as
when the sandbox runs as root; lifeline: null, or the read end of a pipe whose write end the caller
holds: when it closes, because the caller ended or gave up on this job, this process ends at once,
and with it the sandbox); reads one JSON object {"program", "prelude", "tests", "entry_point", "token"}
on stdin and prints one line, `<token> {"passed": n, "failed": n, "error": str|null, "too_large": str|null}`
(with "tests_error" where the row's prelude or tests failed on their own: an import of theirs, or
anything they raised before their first call of the program: the data's fault, not the program's;
"too_large": why a value crossing between the tests and the program was not compared).

The program never shares a process with the tests or the token, so no reward hack inside it can
reach them: this process forks the candidate process BEFORE it reads its input, the candidate
closes stdin and stdout at once and becomes an unprivileged user (or, without a uid, this
process makes itself non-dumpable, so that the same user cannot read its memory), then receives
only the prelude, the program and the entry point. The tests run
here, with the entry point bound to a proxy that calls the function in the candidate process over
a pipe. Arguments and return values cross as tagged JSON of plain built-in types only, so an
object that compares equal to anything, an exit before the tests, a fake "OK" on stdout, a
patched `assert` or `sys.exit`, or a look for the tests' file all end as failed checks. Each
`assert` of the tests is counted (passed, failed) instead of stopping at the first failure.
"""

import ast
import builtins
import json
import math
import os
import signal
import sys
import types

MESSAGE_LIMIT = 16 << 20  # bytes of one value crossing the pipe
# Open files per process of the program. Memory held in files outside its address space (memfd) is
# not in RLIMIT_AS: file_mb caps each file, and this their number.
OPEN_FILES = 32


def encode(value, depth=0):
    """Tagged JSON of None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, and of their
    subclasses (Counter, defaultdict, OrderedDict, a namedtuple, an IntEnum) as the built-in value they
    hold: read through the built-in type's own methods, so no method the program defines runs here."""
    if depth > 100:
        raise TypeError("value nested too deep")
    if value is None:
        return None
    for kind, plain in ((bool, bool.__bool__), (int, int.__int__), (str, str.__str__), (float, float.__float__)):
        if isinstance(value, kind):
            value = plain(value)
            return value if kind is not float or math.isfinite(value) else {"x": repr(value)}  # JSON has no nan, inf
    if isinstance(value, bytes):
        return {"b": bytes.decode(value, "latin-1")}
    for kind, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "f")):
        if isinstance(value, kind):
            return {tag: [encode(item, depth + 1) for item in kind.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]}
    raise TypeError(f"a {type(value).__name__} cannot be returned (built-in values only)")


def decode(data):
    if not isinstance(data, dict):
        return data
    [(tag, body)] = data.items()
    if tag == "x":
        return float(body)
    if tag == "b":
        return body.encode("latin-1")
    if tag == "d":
        return {decode(k): decode(v) for k, v in body}
    return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](decode(item) for item in body)


def send(fd, message):
    write_all(fd, json.dumps(message).encode() + b"\n")


def write_all(fd, data: bytes):
    while data:
        data = data[os.write(fd, data) :]


class TooLarge(Exception):
    """A value over MESSAGE_LIMIT bytes of JSON: read past whole (the pipe stays in step for the next call), not compared."""


def receive(stream):
    line = stream.readline(MESSAGE_LIMIT + 1)
    while line and not line.endswith(b"\n"):  # past the limit: the rest of it is read and dropped
        if not (line := stream.readline(MESSAGE_LIMIT)):
            break
        if line.endswith(b"\n"):
            raise TooLarge(f"a value over {MESSAGE_LIMIT >> 20} MB of JSON crossed between the tests and the program: not compared")
    if not line:
        raise EOFError("the candidate process ended")
    return json.loads(line)


def one_line(exc):
    return f"{type(exc).__name__}: {exc}"[:300]


def candidate_process(requests, replies, limits):
    """The untrusted side: limits, drop privileges, run the program, serve calls to the entry point."""
    import resource

    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    mb = 1 << 20
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["memory_mb"] * mb),
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_FSIZE", limits["file_mb"] * mb),
        ("RLIMIT_NOFILE", OPEN_FILES),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value + (name == "RLIMIT_CPU")))  # CPU: SIGXCPU, then a kill
    if limits["uid"] is not None:
        os.setgroups([])
        os.setgid(limits["uid"])
        os.setuid(limits["uid"])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the harness ignores it (see main)
    reader = os.fdopen(requests, "rb")
    try:
        job = receive(reader)
        # A module of its own, in sys.modules (dataclasses and pickle look a class's module up there); named
        # as in HumanEval's harness, so an `if __name__ == "__main__":` block does not run
        module = sys.modules["__candidate__"] = types.ModuleType("__candidate__")
        exec(compile(job["prelude"] + "\n" + job["program"], "<completion>", "exec"), vars(module))
        function = vars(module)[job["entry_point"]]
        if not callable(function):
            raise TypeError(f"{job['entry_point']} is not a function")
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the program failed to load
        send(replies, {"error": one_line(exc)})
        os._exit(0)
    send(replies, {"ready": True})
    while True:
        try:
            call = receive(reader)
        except EOFError:
            os._exit(0)
        except TooLarge:
            send(replies, {"too_large": True})
            continue
        try:
            result = {"value": encode(function(*decode(call["args"]), **decode(call["kwargs"])))}
        except BaseException as exc:
            result = {"raised": one_line(exc), "type": type(exc).__name__}
        send(replies, result)


def load_failure(ready, prelude: str) -> dict | None:
    """The counts of a program that did not load, read from the candidate process's first reply (None:
    it loaded); the prelude's fault where the prelude raises on its own. A reply of neither kind is the
    program's own writing on the pipe."""
    if not isinstance(ready, dict) or ("ready" not in ready and "error" not in ready):
        ready = {"error": "the program wrote over the harness's pipe"}
    if "error" not in ready:
        return None
    counts = {"passed": 0, "failed": 0, "error": str(ready["error"])[:300], "too_large": None}
    if prelude.strip() and (problem := prelude_problem(prelude)):
        counts["tests_error"] = problem
    return counts


def prelude_problem(prelude):
    """Why the row's prelude raises run on its own here (None: it does not), where the program did not
    load: the data's fault, not the program's. Decided here, not by what the program's process says,
    which the program could write itself."""
    try:
        exec(compile(prelude, "<prelude>", "exec"), {"__name__": "__main__"})
    except BaseException as exc:
        return f"its code_prelude raised {one_line(exc)}"
    return None


class CountAsserts(ast.NodeTransformer):
    """`assert test, msg` becomes `rlvr_assert_(lambda: test)`: counted, never stopping the tests."""

    def visit_Assert(self, node):
        check = ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]), body=node.test)
        call = ast.Call(func=ast.Name(id="rlvr_assert_", ctx=ast.Load()), args=[check], keywords=[])
        return ast.copy_location(ast.Expr(value=call), node)


def run_tests(job, call_candidate):
    """The tests' counts; what the tests raise before their first call of the program is their own
    failure ("tests_error"), what they raise after it may come of what the program returned ("error")."""
    counts = {"passed": 0, "failed": 0, "error": None, "too_large": None}
    called = []

    def rlvr_assert_(check):
        try:
            ok = bool(check())
        except TooLarge as exc:
            ok, counts["too_large"] = False, str(exc)
        except Exception:
            ok = False
        counts["passed" if ok else "failed"] += 1

    def candidate(*args, **kwargs):
        called.append(True)
        return call_candidate(args, kwargs)

    namespace = {"__name__": "__main__"}
    try:
        exec(compile(job["prelude"], "<prelude>", "exec"), namespace)
        namespace[job["entry_point"]] = candidate
        namespace["rlvr_assert_"] = rlvr_assert_
        tree = ast.fix_missing_locations(CountAsserts().visit(ast.parse(job["tests"])))
        exec(compile(tree, "<tests>", "exec"), namespace)
        if callable(namespace.get("check")):
            namespace["check"](candidate)
    except ImportError as exc:
        counts["tests_error" if not getattr(exc, "from_the_program", False) else "error"] = one_line(exc)
    except Exception as exc:  # the tests stopped: on their own before any call, else a call raised outside an assert
        counts["error" if called else "tests_error"] = one_line(exc)
        if isinstance(exc, TooLarge):
            counts["too_large"] = str(exc)
    return counts


def end_with_the_caller(lifeline: int, candidate: int) -> None:
    """Blocks until the caller's end of the lifeline closes, then ends this process (and so the sandbox:
    its PID space ends with it). bwrap's --die-with-parent alone misses a caller killed while the
    sandbox starts (the kernel's parent-death signal is set too late), which left programs running."""
    while os.read(lifeline, 1):
        pass
    for end in (
        lambda: os.kill(candidate, 9),
        lambda: os.killpg(0, 9),
    ):  # this process's group: with sandbox="none" no PID space ends the rest
        try:
            end()
        except OSError:  # gone already, or another user now: the sandbox's end takes it
            pass
    os._exit(3)


def ran_out_of_cpu(candidate: int, cpu_s: int) -> bool:
    """Whether the candidate process, which has ended or is ending, was ended by its CPU time limit:
    SIGXCPU, or the kill a second later when it caught that."""
    import signal
    import time

    for _ in range(100):  # its pipe closed as it ended: the kernel reaps it within moments
        try:
            ended, status, usage = os.wait4(candidate, os.WNOHANG)
        except ChildProcessError:
            return False
        if ended:
            stopped_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            used = usage.ru_utime + usage.ru_stime
            return stopped_by == signal.SIGXCPU or (stopped_by == signal.SIGKILL and used >= cpu_s)
        time.sleep(0.01)
    return False


def cap_what_the_tests_write(file_mb: int) -> None:
    """Each file this process writes, stderr included (a file of the caller's, on its disk), holds at most
    file_mb, as the program's files do: past it a write fails (EFBIG, with SIGXFSZ ignored) in the tests,
    which print in a loop no faster than the disk fills."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def start_candidate(limits: dict) -> tuple[int, int, int]:
    """Forks the candidate process (before the job is read from stdin: it never sees the tests), tied
    to the caller's lifeline; returns its pid, the fd to send it requests and the fd of its replies."""
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # nothing secret has been read yet: the input is still unread on stdin
        os.close(requests_w)
        os.close(replies_r)
        if limits["lifeline"] is not None:
            os.close(limits["lifeline"])
        candidate_process(requests_r, replies_w, limits)
    if limits["lifeline"] is not None:
        import threading

        threading.Thread(target=end_with_the_caller, args=(limits["lifeline"], pid), daemon=True).start()
    os.close(requests_r)
    os.close(replies_w)
    return pid, requests_w, replies_r


def main():
    sys.set_int_max_str_digits(0)  # an int of any size crosses the pipe as JSON
    # This process is the sandbox's first: the only signal the program (the same user, without root) can
    # send it that is not ignored there is SIGINT, for which Python installs a handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limits = json.loads(sys.argv[1])
    if limits["uid"] is None:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no /proc/<pid>/mem, fd or ptrace access
    pid, requests_w, replies_r = start_candidate(limits)
    job = json.loads(sys.stdin.buffer.read())
    replies = os.fdopen(replies_r, "rb")
    verdict_out = os.dup(1)  # the verdict's own: what the prelude and the tests print goes to stderr
    os.dup2(2, 1)
    cap_what_the_tests_write(limits["file_mb"])

    gone = []  # the candidate process ended (its pipe closed)

    def call_candidate(args, kwargs):
        try:
            send(requests_w, {"args": encode(list(args)), "kwargs": encode(kwargs)})
            reply = receive(replies)
        except (BrokenPipeError, EOFError):
            gone.append(True)
            raise EOFError("the candidate process ended") from None
        if not isinstance(reply, dict):
            raise RuntimeError("the program wrote over the harness's pipe")
        if reply.get("too_large"):
            raise TooLarge(f"an argument over {MESSAGE_LIMIT >> 20} MB of JSON: not passed to the program")
        if "raised" in reply:  # as the built-in exception the program raised (`except ValueError:` in tests), else RuntimeError
            kind = getattr(builtins, str(reply.get("type")), None)
            raised = (kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError)(reply["raised"])
            raised.from_the_program = True
            raise raised
        return decode(reply["value"])

    try:
        send(requests_w, {"prelude": job["prelude"], "program": job["program"], "entry_point": job["entry_point"]})
        ready = receive(replies)
    except (BrokenPipeError, EOFError, ValueError, TooLarge) as exc:
        ready = {"error": f"the program ended before the tests ran ({exc})"}
        gone.append(True)
    counts = load_failure(ready, job["prelude"]) or run_tests(job, call_candidate)
    counts["out_of_cpu"] = bool(gone) and ran_out_of_cpu(pid, limits["cpu_s"])
    try:
        sys.stdout.flush()
    except OSError:  # past file_mb: what did not fit is dropped
        pass
    write_all(verdict_out, f"{job['token']} {json.dumps(counts)}\n".encode())
    try:
        os.kill(pid, 9)
    except PermissionError:  # it became another user; the sandbox's end takes it
        pass


if __name__ == "__main__":
    main()
