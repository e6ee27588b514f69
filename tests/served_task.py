"""`python -u -m submitit.core._submit FOLDER` of a submitit local task, run as a child of the
prewarmed interpreter whose run submitted it (tests/prewarmed.py): this process stands in for the
task, as the controller sees it. It hands the server its argv, environment, working directory and
stdin/stdout/stderr, passes on every signal the controller sends, and exits as the task did. Where
the server refuses (an environment that differs in a variable read at import) or is gone, it becomes
the real interpreter running the same command: slower, the same run, nothing printed."""

import json
import os
import signal
import socket
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGCONT)


def fresh() -> None:
    python = os.environ["RLVR_TEST_REAL_PYTHON"]
    os.execv(python, [python, *sys.argv[1:]])


def main() -> int:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        server.connect(os.environ["RLVR_TEST_TASK_SOCKET"])
    except OSError:  # the run's test process, and its server, ended
        fresh()
    request = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    socket.send_fds(server, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    replies = server.makefile("rb")
    reply = json.loads(replies.readline() or b'{"refused": "the server ended"}')
    if "refused" in reply:
        fresh()
    pid = reply["pid"]
    for sig in FORWARDED:
        signal.signal(sig, lambda sig, _frame: os.kill(pid, sig))
    ended = replies.readline()
    if not ended:  # the server ended first
        return 1
    returncode = json.loads(ended)["returncode"]
    if returncode < 0:  # ended by a signal: so is this process
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
