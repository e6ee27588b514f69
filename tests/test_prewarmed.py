"""The suite's prewarmed interpreter (tests/prewarmed.py) gives what a fresh `python -m` gives."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import conftest
from conftest import ROOT, run_env, vllm_python
from prewarmed import Prewarmed


@pytest.fixture(scope="module")
def prewarmed():
    server = Prewarmed(run_env())
    assert server.usable, "the imports left a Python thread running: nothing would be served"
    yield server
    server.close()


def fresh(*argv: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)


SCRIPT = """import sys
print(__name__, sys.argv, sys.path[0], sys.orig_argv[1:])
print("to stderr", file=sys.stderr)
sys.exit(3)
"""


@pytest.mark.parametrize(
    "argv",
    [("-m", "rlvr.run", "--cfg", "job", "algorithm.beta=0.5"), ("-m", "rlvr.run", "algorithm.lerning_rate=1"), ("{script}", "an argument")],
)
def test_a_served_run_prints_and_exits_as_a_fresh_interpreter_does(prewarmed, tmp_path, argv):
    """Modules and scripts alike: the same output, exit code, argv and sys.path[0]; and the child's own peak RSS."""
    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    argv = [arg.replace("{script}", str(script)) for arg in argv]
    assert not prewarmed.serves(run_env({"RLVR_PROBE": "seen"}))  # a variable the server did not start with
    env = run_env()
    assert prewarmed.serves(env)
    served, expected = prewarmed.run(argv, env, tmp_path, timeout=120), fresh(*argv, env=env)
    assert (served.returncode, served.stdout, served.stderr) == (expected.returncode, expected.stdout, expected.stderr)
    assert served.peak_rss_kb > 100_000  # the child's own maximum, which holds the preloaded torch


def test_a_served_run_past_its_timeout_is_killed_and_raises_as_subprocess_run_does(prewarmed):
    """Killed, not waited for: a run left to finish would have printed its last line. The server
    answers again afterwards: the next run is served."""
    with tempfile.TemporaryDirectory() as run_dir, tempfile.TemporaryDirectory() as output_dir:
        with pytest.raises(subprocess.TimeoutExpired) as timed_out:
            prewarmed.run(["-m", "rlvr.run", "logging=disabled", f"hydra.run.dir={run_dir}"], run_env(), Path(output_dir), timeout=3)
        assert "done: everything this run wrote is in" not in timed_out.value.stdout
    with tempfile.TemporaryDirectory() as output_dir:
        assert prewarmed.run(["-m", "rlvr.run", "--cfg", "job"], run_env(), Path(output_dir), timeout=120).returncode == 0


SESSION = "import os; print(os.getpid(), os.getsid(0))"


@pytest.mark.parametrize("new_session", [True, False])
def test_a_served_run_has_a_session_of_its_own_when_asked_as_start_new_session_gives_it(prewarmed, tmp_path, new_session):
    """With new_session, the child leads a session whose id is its `pid` (what a test signals and
    looks for leftover processes in); without, it stays in the server's session."""
    script = tmp_path / "session.py"
    script.write_text(SESSION)
    served = prewarmed.run([str(script)], run_env(), tmp_path, timeout=120, new_session=new_session)
    pid, session = map(int, served.stdout.split())
    assert pid == served.pid
    assert (session == pid) is new_session
    fresh = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, start_new_session=new_session)
    pid, session = map(int, fresh.stdout.split())
    assert (session == pid) is new_session  # as a fresh interpreter's


ENVIRONMENT_AFTER_IMPORTS = f"""import importlib, json, os, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from prewarmed import PRELOADED, READ_AT_RUN_TIME
for name in (*PRELOADED, *sys.argv[1:]):
    importlib.import_module(name)
from trl import GRPOTrainer
print(json.dumps({{k: v for k, v in os.environ.items() if k not in READ_AT_RUN_TIME}}, sort_keys=True))
"""


@pytest.mark.slow
@pytest.mark.vllm_venv
def test_a_served_vllm_run_has_the_environment_a_fresh_interpreter_has_after_the_same_imports(tmp_path):
    """vLLM's imports set variables: a child of .venv-vllm's prewarmed interpreter (the one this test
    process serves its vLLM runs from) has them, as a fresh interpreter has them after the same
    imports, and not only the variables of its request."""
    server = conftest.prewarmed(vllm_python(), also=("vllm",))
    if server is None:
        pytest.skip("RLVR_TEST_PREWARMED=0: no run is served")
    script = tmp_path / "environment.py"
    script.write_text(ENVIRONMENT_AFTER_IMPORTS)
    env = run_env()
    assert server.serves(env)
    served = server.run([str(script), "vllm"], env, tmp_path, timeout=300)
    expected = subprocess.run([server.python, str(script), "vllm"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert served.returncode == expected.returncode == 0, served.stderr[-2000:] + expected.stderr[-2000:]
    assert json.loads(served.stdout) == json.loads(expected.stdout)
