"""Hostile programs against the code reward: each scores 0 or is contained, and leaves nothing running."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rlvr.errors import ConfigError, DataError
from rlvr.rewards.code import CodeTestsReward, extract_program
from rlvr.rewards.code_sandbox import FIRST_UID, HARNESS, MAX_WORKERS, Job, Limits, Sandbox

ADD_TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
CORRECT_ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def reward():
    """Tight limits: the hostile programs below hold the cores for as little time as they can."""
    return CodeTestsReward(name="code", workers=2, timeout_s=2, cpu_s=1, processes=8)


def score(reward, program, tests=ADD_TESTS, entry_point="add", prelude=""):
    [value] = reward(completions=[program], answer=[tests], entry_point=[entry_point], code_prelude=[prelude])
    return value, reward.last_outcomes[0]


def sandboxed_processes() -> list[str]:
    """Processes of a sandbox this test process started that are still alive ("pid uid args"): the
    harness's command line, or a sandbox user id.

    Other pytest-xdist workers score code at the same time (the HumanEval and run tests), so a
    process descended from a sibling worker is theirs, not ours; an orphan (reparented to init) is
    counted, whoever left it.
    """
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,uid=,args="], capture_output=True, text=True).stdout
    rows = [row for line in out.splitlines() if len(row := line.split(maxsplit=3)) == 4]
    parent = {int(pid): int(ppid) for pid, ppid, *_ in rows}
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ and os.getppid() != 1  # else init's orphans are no siblings
    siblings = {pid for pid, ppid in parent.items() if under_xdist and ppid == os.getppid()} - {os.getpid()}

    def a_siblings(pid: int) -> bool:
        while pid > 1 and pid not in siblings and pid != os.getpid():
            pid = parent.get(pid, 0)
        return pid in siblings

    return [
        f"{pid} {uid} {args}"
        for pid, _, uid, args in rows
        if (HARNESS.name in args or int(uid) >= 1_900_000_000) and not a_siblings(int(pid))
    ]


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    deadline = time.monotonic() + 5
    while (left := sandboxed_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"sandboxed processes outlived their call: {left}"


def test_a_correct_program_passes_and_a_wrong_one_fails(reward):
    assert score(reward, CORRECT_ADD)[0] == 1.0
    value, outcome = score(reward, "def add(a, b):\n    return 3\n")
    assert value == 0.0 and outcome.reason == "wrong" and outcome.prediction == "1/2 tests passed"


def test_fraction_counts_each_assert():
    fraction = CodeTestsReward(name="code", score="fraction")
    assert score(fraction, "def add(a, b):\n    return 3\n")[0] == 0.5
    assert score(fraction, CORRECT_ADD)[0] == 1.0


def test_bare_asserts_call_the_entry_point_by_name(reward):
    tests = "assert add(2, 2) == 4\nassert add(0, 0) == 0\n"
    assert score(reward, CORRECT_ADD, tests)[0] == 1.0
    assert score(reward, "def add(a, b):\n    return 4\n", tests)[0] == 0.0


def test_a_body_continues_the_prelude(reward):
    prelude = 'def add(a, b):\n    """Sum."""\n'
    assert score(reward, "    return a + b\n", prelude=prelude)[0] == 1.0


def test_extraction_takes_the_block_that_defines_the_entry_point():
    completion = "Use this:\n```python\nprint(add(1, 2))\n```\nand\n```python\ndef add(a, b):\n    return a + b\n```\n"
    assert extract_program(completion, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_program("```py\nx = 1\n", "add") == "x = 1\n"  # an unclosed fence runs to the end
    assert extract_program("    return a + b", "add") == "    return a + b"


def test_extraction_reads_a_fence_closing_its_last_line_and_prefers_a_block_named_python():
    """A block closed at the end of its last line of code ran to the end (a SyntaxError: wrong); a bare
    block of sample output before the ```python body was taken for the program."""
    assert extract_program("```python\ndef add(a, b):\n    return a + b```\nThat is it.", "add") == ADD
    assert extract_program("```python\ndef add(a, b):\n    return a + b ````\n", "add") == ADD
    body = "Example output:\n```\n3\n```\n```python\n    return a + b\n```\n"
    assert extract_program(body, "add") == "    return a + b\n"
    assert extract_program("```python\ns = '```'\n```\n", "add") == "s = '```'\n"


def test_a_long_line_opening_like_a_fence_is_read_in_one_pass():
    """Spaces and letters after ``` then a backtick (so no fence: CommonMark's info string holds none) took
    the earlier single pattern quadratic time in the training process: 0.66 s at 8,000 + 8,000 characters,
    about 17 minutes at this size, past the suite's timeout."""
    completion = "```" + " " * 200_000 + "x" * 200_000 + "`\ndef add(a, b):\n    return a + b\n"
    assert extract_program(completion, "add") == completion


ADD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize(
    "completion",
    [
        f"Run it with:\n```bash\npython add.py\n```\nThe code:\n```python\n{ADD}```\n",  # another language's block first
        f"```text\nadd(1, 2) -> 3\n```\n```\n{ADD}```",
        f"```python\r\n{ADD.replace(chr(10), chr(13) + chr(10))}```\r\n",  # CRLF line ends
        f"~~~python\n{ADD}~~~\n",
        f"````python\n{ADD}x = '```'\n````\n",  # a longer fence holds a shorter one
        "1. Define it:\n   ```python\n   " + ADD.replace("\n", "\n   ").rstrip() + "\n   ```\n",  # a block inside a list item
        f"```python:add.py\n{ADD}```\n",
        f"```{{python}}\n{ADD}```\n",
        f"Sure! ```python\n{ADD}```\n",  # opened after a sentence, as models write it
        f"Use `add`; the code: ```\n{ADD}```",
    ],
)
def test_the_python_block_is_found_among_markdown_fences(reward, completion):
    assert extract_program(completion, "add").replace("\r", "").startswith(ADD)
    assert score(reward, completion)[0] == 1.0


@pytest.mark.parametrize("line", ["Wrap code in ```x``` spans", "```x``` alone", "See the ```bash"])
def test_a_line_with_a_fence_inside_or_another_language_after_text_opens_no_block(line):
    assert extract_program(f"{line}\n{ADD}", "add") == f"{line}\n{ADD}"


def test_a_fence_indented_four_spaces_is_text_not_a_block(reward):
    """CommonMark: a docstring's example, in a program written without fences."""
    program = 'def add(a, b):\n    """Adds.\n\n    ```\n    add(1, 2)\n    ```\n    """\n    return a + b\n'
    assert extract_program(program, "add") == program
    assert score(reward, program)[0] == 1.0


def test_fenced_blocks_without_python_are_missing_code(reward):
    value, outcome = score(reward, "```bash\necho 3\n```\n```text\n3\n```\n")
    assert value == 0.0 and outcome.reason == "missing"


@pytest.mark.parametrize("completion", ["", "   \n", "I cannot solve this.", "```python\n```"])
def test_no_code_scores_zero(reward, completion):
    value, outcome = score(reward, completion)
    assert value == 0.0 and outcome.reason in ("missing", "wrong")


@pytest.mark.parametrize(
    ("tests", "prelude", "why"),
    [
        ("assert add(1, 2 == 3\n", "", "the row's tests are not Python: SyntaxError: '(' was never closed"),
        (ADD_TESTS, "def f(:\n", "the row's code_prelude is not Python: SyntaxError: invalid syntax"),
        ("import not_installed_here\n" + ADD_TESTS, "", "the tests did not run: ModuleNotFoundError: No module named 'not_installed_here'"),
        ("1 / 0\n" + ADD_TESTS, "", "the tests did not run: ZeroDivisionError: division by zero"),
        (ADD_TESTS, "import math\nmath.sqrt(-1)\n", "the tests did not run: its code_prelude raised ValueError: math domain error"),
    ],
)
def test_tests_that_cannot_run_are_no_verdict_not_a_wrong_program(reward, tests, prelude, why):
    """The data's fault: scored as "error" (counted in no_verdict_frac), not "wrong", which blamed a correct program."""
    value, outcome = score(reward, prelude + CORRECT_ADD, tests=tests, prelude=prelude)
    assert (value, outcome.reason, outcome.correct) == (0.0, "error", False) and outcome.prediction.startswith(why)


@pytest.mark.parametrize(
    "program",
    [
        "from __future__ import annotations\nfrom dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\n"
        "def add(a, b):\n    return P(a + b).x\n",
        "import pickle\nclass P:\n    pass\ndef add(a, b):\n    pickle.dumps(P())\n    return a + b\n",
    ],
    ids=["dataclass", "pickle"],
)
def test_the_program_runs_as_a_module_of_its_own(reward, program):
    """Its namespace was no module in sys.modules: a dataclass under postponed annotations, and a
    pickle of its own class (multiprocessing's too), raised; correct programs scored wrong."""
    assert score(reward, program)[0] == 1.0, score(reward, program)


def test_a_value_over_the_size_limit_fails_its_own_assert_only_and_says_why(reward):
    """A return value over 16 MB of JSON put the pipe out of step (every later assert failed too), with no
    reason given; an argument over it ended the program's process."""
    tests = "assert len(add(3_000_000, 0)) == 3_000_000\nassert add(1, 2) == 3\n"  # a return value over the limit
    tests += "assert add('x' * 20_000_000, '') == 20_000_000\nassert add(2, 2) == 4\n"  # an argument over it
    program = "def add(a, b):\n    if isinstance(a, str):\n        return len(a)\n    return list(range(a)) if a > 1000 else a + b\n"
    value, outcome = score(CodeTestsReward(name="code", score="fraction", memory_mb=2048), program, tests=tests)
    assert (value, outcome.prediction.split(";")[0]) == (0.5, "2/4 tests passed"), outcome
    assert "over 16 MB of JSON" in outcome.prediction


@pytest.mark.parametrize("writes", [b'{"tests_error": "bad tests"}', b"1"], ids=["forged-tests-error", "not-an-object"])
def test_what_the_program_writes_on_the_harness_pipe_is_its_own_failure(reward, writes):
    """A program writing a reply of its own before it loaded was taken at its word: 'the tests did not
    run' (the data's fault, no verdict), or the harness crashed on a reply that was no object."""
    forges = f"import os\nfor fd in range(3, 30):\n    try:\n        os.write(fd, {writes!r} + b'\\n')\n    except OSError:\n        pass\n"
    program = forges + CORRECT_ADD
    value, outcome = score(reward, program)
    assert (value, outcome.reason) == (0.0, "wrong"), outcome


def test_what_the_tests_raise_after_calling_the_program_is_the_programs(reward):
    """The tests index what the program returned: a TypeError in the tests' own code, of the program's making."""
    value, outcome = score(reward, "def add(a, b):\n    return a + b\n", tests="add(1, 2)[0]\n" + ADD_TESTS)
    assert (value, outcome.reason) == (0.0, "wrong") and outcome.prediction.startswith("no test ran: TypeError"), outcome


def test_an_import_error_the_program_raises_is_the_programs(reward):
    program = "def add(a, b):\n    import not_installed_here\n"
    value, outcome = score(reward, program, tests="add(1, 2)\n" + ADD_TESTS)
    assert (value, outcome.reason) == (0.0, "wrong") and "ModuleNotFoundError" in outcome.prediction


def test_a_code_prelude_that_is_not_text_is_one_line(reward):
    with pytest.raises(DataError, match=r"^reward 'code': row 0's code_prelude 42 is not Python source \(text\)$"):
        score(reward, CORRECT_ADD, prelude=42)


HACKS = {
    "exit 0 before the tests": "import sys\nsys.exit(0)\n",
    "os._exit before the tests": "import os\nos._exit(0)\n",
    "a fake OK and a fake verdict on stdout": (
        'import sys\nprint("OK")\nprint(\'{"passed": 2, "failed": 0, "error": null}\')\nsys.stdout.flush()\ndef add(a, b):\n    return 0\n'
    ),
    "redefined assert and exit": (
        "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\n"
        "builtins.exit = builtins.quit = lambda *a: None\ndef add(a, b):\n    return 0\n"
    ),
    "SystemExit inside the tested call": "def add(a, b):\n    raise SystemExit(0)\n",
    "an object equal to everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Anything()\n"
    ),
    "an int subclass equal to everything": (
        "class Anything(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Anything(0)\n"
    ),
    "patching the harness's own functions": (
        "import __main__\n__main__.run_tests = lambda *a: {'passed': 9, 'failed': 0, 'error': None}\n"
        "__main__.CountAsserts = None\ndef add(a, b):\n    return 0\n"
    ),
    "forged replies on every open descriptor": (
        'import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b\'{"ready": true}\\n{"value": 3}\\n\')\n'
        "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n"
    ),
}


@pytest.mark.parametrize("hack", list(HACKS))
def test_reward_hacks_score_zero(reward, hack):
    value, outcome = score(reward, HACKS[hack])
    assert value == 0.0 and not outcome.correct, outcome


def test_the_tests_and_their_expected_values_cannot_be_read(reward):
    """The expected value is a secret only the tests hold; the program searches everything it can open."""
    secret = "s3cr3t" + secrets.token_hex(8)
    tests = f"def check(candidate):\n    assert candidate() == {secret!r}\n"
    program = textwrap.dedent(r"""
        import os, re
        def found():
            pattern = re.compile(rb"s3cr3t[0-9a-f]{16}")
            paths = ["/tmp"]
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    paths += [f"/proc/{pid}/{name}" for name in ("cmdline", "environ", "fd", "mem", "maps")]
            for path in paths:
                try:
                    if os.path.isdir(path):
                        paths += [os.path.join(path, entry) for entry in os.listdir(path)]
                        continue
                    if path.endswith("/mem"):
                        maps = open(path[:-3] + "maps").read().splitlines()
                        with open(path, "rb") as memory:
                            for line in maps:
                                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                                memory.seek(start)
                                if (match := pattern.search(memory.read(min(end - start, 1 << 24)))):
                                    return match.group().decode()
                        continue
                    if (match := pattern.search(open(path, "rb").read(1 << 24))):
                        return match.group().decode()
                except Exception:
                    pass
            return None
        import gc
        def add():
            for obj in gc.get_objects():
                if isinstance(obj, (str, bytes)) and b"s3cr3t" in (obj if isinstance(obj, bytes) else obj.encode()):
                    return obj
            return found()
        """)
    value, outcome = score(reward, program, tests)
    assert value == 0.0, outcome


def test_host_files_environment_and_tools_are_out_of_reach(reward, tmp_path, monkeypatch):
    secret = "host" + secrets.token_hex(8)
    monkeypatch.setenv("RLVR_TEST_SECRET", secret)
    (tmp_path / "secret.txt").write_text(secret)
    marker = tmp_path / "written-from-the-sandbox"
    program = textwrap.dedent(f"""
        import os, subprocess
        def add():
            for attempt in (lambda: os.environ["RLVR_TEST_SECRET"],
                            lambda: open({str(tmp_path / "secret.txt")!r}).read(),
                            lambda: subprocess.run(["/bin/cat", {str(tmp_path / "secret.txt")!r}],
                                                   capture_output=True, text=True).stdout,
                            lambda: str(os.system("touch {marker}")),
                            lambda: open({str(marker)!r}, "w").write("x")):
                try:
                    value = attempt()
                    if value == {secret!r}:
                        return value
                except Exception:
                    pass
            return None
        """)
    value, outcome = score(reward, program, f"assert add() == {secret!r}\n")
    assert value == 0.0, outcome
    assert not marker.exists()


def test_a_server_on_the_hosts_loopback_is_unreachable(reward):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections, scored = [], threading.Event()

    def accept():
        while not scored.is_set():
            try:
                connections.append(server.accept())
            except (socket.timeout, OSError):
                pass

    watcher = threading.Thread(target=accept)
    watcher.start()
    program = textwrap.dedent(f"""
        import socket
        def add(a, b):
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"hello")
                return a + b
            except OSError:
                return 0
        """)
    value, outcome = score(reward, program)
    scored.set()
    watcher.join()
    server.close()
    assert value == 0.0 and not connections, outcome


def test_killing_parents_and_everyone_reaches_neither_the_harness_nor_the_host():
    """The program signals its parent (the harness), the sandbox's first process, this test's own
    process id and every process it may (-1), then answers correctly: its verdict still comes back."""
    reward = CodeTestsReward(name="code")
    program = (
        f"import os\nfor pid in (os.getppid(), 1, {os.getpid()}, -1):\n"
        f"    try:\n        os.kill(pid, 9)\n    except OSError:\n        pass\n" + CORRECT_ADD
    )
    value, outcome = score(reward, program)
    if os.geteuid() != 0:  # the program runs as the harness's user: it may kill it, and so scores 0
        assert value == 0.0
        return
    assert value == 1.0 and outcome.prediction == "2/2 tests passed", outcome


RESOURCE_HOGS = {
    "a fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "an endless loop": "while True:\n    pass\n",
    "an endless loop in the tested call": "def add(a, b):\n    while True:\n        pass\n",
    "50 GB of memory": "x = bytearray(50 << 30)\n" + CORRECT_ADD,
    "a 10 GB file": (
        "block = b'0' * (1 << 20)\nwith open('/tmp/big', 'wb') as f:\n    for _ in range(10 << 10):\n        f.write(block)\n" + CORRECT_ADD
    ),
    "100 MB on stdout": "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\ndef add(a, b):\n    return 0\n",
}


@pytest.mark.parametrize("hog", list(RESOURCE_HOGS))
def test_resource_hogs_are_stopped_at_their_limits(reward, hog):
    started = time.monotonic()
    value, outcome = score(reward, RESOURCE_HOGS[hog])
    assert value == 0.0 and outcome.reason in ("wrong", "timeout", "error"), outcome
    assert time.monotonic() - started < 2 + 3  # the wall-time limit, plus the kill


def test_a_stopped_run_leaves_no_sandboxed_process(tmp_path):
    """SIGTERM and Ctrl-C (SIGINT) of a process mid-call: every sandbox it started is gone."""
    script = tmp_path / "score.py"
    script.write_text(
        textwrap.dedent("""
        from rlvr.rewards.code import CodeTestsReward
        reward = CodeTestsReward(name="code", workers=2, timeout_s=60, cpu_s=60)
        print("started", flush=True)
        reward(completions=["while True:\\n    pass\\n"] * 4, answer=["assert add(1, 1) == 2"] * 4,
               entry_point=["add"] * 4)
        """)
    )
    for stop in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "started\n"
        deadline = time.monotonic() + 10
        while len(sandboxed_processes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandboxed_processes(), "no sandbox started"
        process.send_signal(stop)
        assert process.wait(timeout=10) == -stop  # ended by that signal (Python re-raises SIGINT after cleanup)


def test_a_killed_caller_ends_sandboxes_that_missed_the_parent_death_signal(tmp_path):
    """bwrap's --die-with-parent misses a caller killed while a sandbox starts (a kernel race that left
    programs running under load): drop it, SIGKILL the caller mid-call, and the sandboxes still end."""
    script = tmp_path / "score.py"
    script.write_text(
        textwrap.dedent("""
        from rlvr.rewards import code_sandbox
        from rlvr.rewards.code import CodeTestsReward
        argv = code_sandbox.bubblewrap_argv
        code_sandbox.bubblewrap_argv = lambda *a: [arg for arg in argv(*a) if arg != "--die-with-parent"]
        reward = CodeTestsReward(name="code", workers=2, timeout_s=60, cpu_s=60)
        print("started", flush=True)
        reward(completions=["while True:\\n    pass\\n"] * 2, answer=["assert add(1, 1) == 2"] * 2,
               entry_point=["add"] * 2)
        """)
    )
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "started\n"
        deadline = time.monotonic() + 10

        def slots_running() -> int:  # the caller's sandbox user ids with a process (not a sibling test's)
            uids = {int(line.split()[1]) for line in sandboxed_processes()}
            return len({uid for uid in uids if uid >= FIRST_UID and (uid - FIRST_UID) // MAX_WORKERS == process.pid})

        while slots_running() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slots_running() == 2, "the sandboxes did not start"
    finally:
        process.kill()
        process.wait(timeout=10)


def test_tests_that_print_without_end_stop_at_file_mb_not_at_the_disks_end(reward):
    """What the tests print goes to a file on this machine: it grew by about 4 GB in 10 s until timeout_s."""
    flood = "while True:\n    print('x' * 1_000_000)\n" + ADD_TESTS
    value, outcome = score(reward, CORRECT_ADD, tests=flood)
    assert (value, outcome.reason) == (0.0, "error")  # the tests' own fault, before they called the program
    assert outcome.prediction == "the tests did not run: OSError: [Errno 27] File too large"
    assert score(reward, CORRECT_ADD, tests="print('x' * 1000)\n" + ADD_TESTS)[0] == 1.0  # printing within it is fine


def test_limits_are_range_checked():
    with pytest.raises(ConfigError, match=r"memory_mb=0 must be a finite number in \[64, 65536\]"):
        Limits(memory_mb=0)
    with pytest.raises(ConfigError, match=r"reward.functions.code.workers=True must be a whole number in \[1, 256\]"):
        CodeTestsReward(name="code", workers=True)
    with pytest.raises(ConfigError, match="reward.functions.code: .*unexpected keyword argument 'walltime'"):
        CodeTestsReward(name="code", walltime=3)
    with pytest.raises(ConfigError, match="sandbox='docker': must be one of bubblewrap, none"):
        CodeTestsReward(name="code", sandbox="docker")
    # scores: they failed only after scoring (correct='abc'), or ranked failing code above passing code (wrong=2)
    with pytest.raises(ConfigError, match=r"^reward.functions.code.correct='abc' must be a finite number$"):
        CodeTestsReward(name="code", correct="abc")
    with pytest.raises(ConfigError, match=r"^reward.functions.code.wrong=2 must be a finite number < 1 \(correct\)$"):
        CodeTestsReward(name="code", wrong=2)


def test_a_machine_without_bubblewrap_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="needs bubblewrap, which is not installed.*apt-get install bubblewrap"):
        CodeTestsReward(name="code")


def test_unsandboxed_is_an_explicit_loud_opt_in(caplog):
    reward = CodeTestsReward(name="code", sandbox="none")
    assert "RUNS MODEL-WRITTEN CODE UNSANDBOXED" in caplog.text
    assert score(reward, CORRECT_ADD)[0] == 1.0


def test_a_sandbox_that_cannot_start_is_refused(monkeypatch):
    monkeypatch.setattr(Sandbox, "command", lambda self, slot, lifeline: ["/bin/false"])
    with pytest.raises(ConfigError, match=r"cannot run a trivial program on this machine: no verdict \(exit 1\)"):
        CodeTestsReward(name="code")


def test_jobs_run_in_parallel_up_to_the_workers():
    """Each running sandbox's program has its slot's own user id: count them while 6 jobs run on 3 workers."""
    sleepy = Job("import time\ntime.sleep(1)\n" + CORRECT_ADD, ADD_TESTS, "add")
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            alive = {int(line.split()[1]) for line in sandboxed_processes()}
            seen.add(len({uid for uid in alive if uid >= FIRST_UID and (uid - FIRST_UID) // MAX_WORKERS == os.getpid()}))  # ours
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    verdicts = Sandbox("bubblewrap", Limits(), workers=3).run([sleepy] * 6)
    done.set()
    watcher.join()
    assert [v.passed for v in verdicts] == [2] * 6
    assert max(seen) == 3


NON_ROOT_CHECK = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from rlvr.rewards.code_sandbox import Job, Limits, Sandbox
    sandbox = Sandbox("bubblewrap", Limits(timeout_s=2, cpu_s=1), workers=2)
    tests = "assert add(1, 2) == 3\\n"
    jobs = [Job("def add(a, b):\\n    return a + b\\n", tests, "add"),
            Job("import os\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        pass\\n", tests, "add"),
            Job("import os\\ndef add(a, b):\\n    return open(f'/proc/{os.getppid()}/environ').read()\\n", tests, "add"),
            Job("import os, signal\\ndef add(a, b):\\n    os.kill(1, signal.SIGINT)\\n    return a + b\\n", tests, "add")]
    print(json.dumps([sandbox.as_root] + [[v.status, v.passed] for v in sandbox.run(jobs)]))
    """)


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
    reason="needs root to switch to an unprivileged user, and a Python that user can read",
)
def test_run_by_an_unprivileged_user_the_sandbox_makes_a_user_namespace():
    """What a user on a laptop or cluster gets (rlvr not root): a correct program passes, a fork bomb
    is killed at the wall time, the harness's environment is unreadable, and a SIGINT to the sandbox's
    first process (the harness, the same user) does not end it (it did: "no verdict", not the program's). The system Python runs it,
    as user nobody, on rlvr's sources (standard library only)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as readable:  # the clone's folder may be closed to that user
        shutil.copytree(Path(__file__).resolve().parents[2] / "rlvr", Path(readable) / "rlvr")
        for path in [Path(readable), *Path(readable).rglob("*")]:
            path.chmod(0o755)
        done = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c", NON_ROOT_CHECK, readable],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    assert json.loads(done.stdout) == [False, ["ok", 1], ["timeout", 0], ["ok", 0], ["ok", 1]]


WHERE_IT_WRITES = """
import json
import os
def where():
    writable = []
    stdlib = os.path.dirname(os.__file__)
    for directory in ("/", "/usr", "/lib", "/dev", "/harness", stdlib, stdlib + "/site-packages", "/tmp", "/dev/shm"):
        try:
            open(os.path.join(directory, "planted.py"), "w").close()
            writable.append(directory)
        except OSError:
            pass
    return ",".join(writable)
"""
AS_ANOTHER_USER = f"""
from rlvr.rewards.code_sandbox import Job, Limits, Sandbox
[verdict] = Sandbox("bubblewrap", Limits(), 1).run([Job({WHERE_IT_WRITES!r}, "raise Exception(where())", "where")])
print(verdict.error)
"""


def test_the_program_writes_only_its_size_capped_tmp_and_shm():
    """Run as root, the program drops to a user of its own; run as anyone else, bwrap's user namespace
    made the program the owner of the root and /dev tmpfs, uncapped, where it could plant a module on
    the interpreter's path for the tests to import (a faked pass). Both modes, from a root test
    process through setpriv (as nobody, with Debian's interpreter: the venv's lives under /root)."""
    [verdict] = Sandbox("bubblewrap", Limits(), 1).run([Job(WHERE_IT_WRITES, "raise Exception(where())", "where")])
    assert verdict.error == "Exception: /tmp,/dev/shm"
    unprivileged = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c", AS_ANOTHER_USER]
    result = subprocess.run(
        unprivileged if os.geteuid() == 0 else [sys.executable, "-c", AS_ANOTHER_USER],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=120,
    )
    assert result.stdout == "Exception: /tmp,/dev/shm\n", result.stderr[-2000:]


def sandbox_user(slot: int) -> int | None:
    return json.loads(Sandbox("bubblewrap", Limits(), 2).command(slot, lifeline=0)[-1])["uid"]


def test_sandboxes_of_two_processes_never_share_a_user():
    """Run as root, each program runs as a user of its own: two processes of a node (two ranks, a run
    and rlvr.score) each numbered their slots from 0, so a fork bomb in one used up the other's
    process limit, and a correct program there failed."""
    other = subprocess.run(
        [sys.executable, "-c", "from test_code_sandbox import sandbox_user; print(sandbox_user(0), sandbox_user(1))"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    ).stdout.split()
    mine = [str(sandbox_user(0)), str(sandbox_user(1))]
    if os.geteuid() != 0:  # the program keeps the caller's user (in its own user namespace)
        assert mine == other == ["None", "None"]
    else:
        assert len(set(mine) | set(other)) == 4 and all(int(uid) >= FIRST_UID for uid in mine + other)


HOLDS_MEMORY_IN_FILES = """
import os
def held_mb():
    files = []
    try:
        while len(files) < 1000:  # each a memfd of file_mb: memory outside the address space limit
            files.append(os.memfd_create("m"))
            os.write(files[-1], b"x" * (1 << 20))
    except OSError:
        pass
    return len(files)
"""


def test_memory_held_in_files_outside_the_address_space_is_bounded():
    [verdict] = Sandbox("bubblewrap", Limits(file_mb=1), 1).run([Job(HOLDS_MEMORY_IN_FILES, "raise Exception(held_mb())", "held_mb")])
    assert verdict.status == "ok" and 16 <= int(verdict.error.split(": ")[1]) < 32, verdict


@pytest.mark.parametrize(
    ("program", "tests", "said"),
    [
        (
            "while True:\n    pass\n",
            ADD_TESTS,
            "no test ran: the program ended before the tests ran (the candidate process ended); "
            "the program used up its 1 s of CPU time (cpu_s)",
        ),
        ("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, "0/2 tests passed; the program used up its 1 s of CPU time (cpu_s)"),
        (  # the call that spins is outside an assert: the tests stop, and count one failure more
            "def add(a, b):\n    while a == 2:\n        pass\n    return a + b\n",
            "assert add(1, 2) == 3\nx = add(2, 2)\n",
            "1/2 tests passed; EOFError: the candidate process ended; the program used up its 1 s of CPU time (cpu_s)",
        ),
    ],
)
def test_a_program_out_of_cpu_time_is_a_timeout_that_says_so(program, tests, said):
    """cpu_s ends the program before timeout_s: it was scored `wrong`, "the candidate process ended"."""
    reward = CodeTestsReward(name="code", timeout_s=20, cpu_s=1)
    value, outcome = score(reward, program, tests)
    assert (value, outcome.reason, outcome.prediction) == (0.0, "timeout", said)
