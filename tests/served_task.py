"""`python -u -m submitit.core._submit FOLDER` of a submitit local task (or `python -u -m rlvr.run ...`
of a torchrun worker), run as a child of the prewarmed interpreter whose run started it
(tests/prewarmed.py): this process stands in for the task, as the controller sees it. It hands the
server its argv, environment, working directory and stdin/stdout/stderr, passes on every signal the
controller sends, and exits as the task did. Where the server refuses (an environment that differs in
a variable read at import) or is gone, it becomes the real interpreter running the same command:
slower, the same run, nothing printed."""

import contextlib
import json
import os
import signal
import socket
import sys

from prewarmed import REAL_PYTHON, TASK_SOCKET  # stdlib imports only: this process stays light

# Every signal a process can catch, but the one that says a child of its own ended.
FORWARDED = set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def fresh() -> None:
    python = os.environ[REAL_PYTHON]
    os.execv(python, [python, *sys.argv[1:]])


def forward(pid: int):
    def handler(signum, _frame):
        with contextlib.suppress(ProcessLookupError):  # the task has just ended
            os.kill(pid, signum)

    return handler


def main() -> int:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    request = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    try:
        server.connect("\0" + os.environ[TASK_SOCKET])
        socket.send_fds(server, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        replies = server.makefile("rb")
        reply = json.loads(replies.readline() or b'{"refused": "the server ended"}')
    except OSError:  # the run's test process, and its server, ended; or a request too large for one message
        fresh()
    if "refused" in reply:
        fresh()
    pid = reply["pid"]
    for sig in FORWARDED:
        signal.signal(sig, forward(pid))
    ended = replies.readline()
    if not ended:  # the server ended first, and the task with it
        print(f"served_task: the prewarmed interpreter ended before task {pid}", file=sys.stderr)
        return 1
    returncode = json.loads(ended)["returncode"]
    if returncode < 0:  # ended by a signal: so is this process
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
