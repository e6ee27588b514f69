"""The suite's prewarmed interpreter (tests/prewarmed.py) gives what a fresh `python -m` gives."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, run_env
from prewarmed import Prewarmed


@pytest.fixture(scope="module")
def prewarmed():
    server = Prewarmed(run_env())
    assert server.usable, "the imports left a Python thread running: nothing would be served"
    yield server
    server.close()


def fresh(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlvr.run", *args], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("--cfg", "job", "algorithm.beta=0.5"), ("algorithm.lerning_rate=1",)])
def test_a_served_run_prints_and_exits_as_a_fresh_interpreter_does(prewarmed, tmp_path, args):
    env = run_env({"RLVR_PROBE": "seen"})
    assert not prewarmed.serves("rlvr.run", env)  # a variable the server did not start with
    env = run_env()
    assert prewarmed.serves("rlvr.run", env) and not prewarmed.serves("json.tool", env)
    served, expected = prewarmed.run("rlvr.run", list(args), env, tmp_path, timeout=120), fresh(*args, env=env)
    assert (served.returncode, served.stdout, served.stderr) == (expected.returncode, expected.stdout, expected.stderr)


def test_a_served_run_past_its_timeout_is_killed_and_raises_as_subprocess_run_does(prewarmed):
    """Killed, not waited for: a run left to finish would have printed its last line. The server
    answers again afterwards: the next run is served."""
    with tempfile.TemporaryDirectory() as run_dir, tempfile.TemporaryDirectory() as output_dir:
        with pytest.raises(subprocess.TimeoutExpired) as timed_out:
            prewarmed.run("rlvr.run", ["logging=disabled", f"hydra.run.dir={run_dir}"], run_env(), Path(output_dir), timeout=3)
        assert "done: everything this run wrote is in" not in timed_out.value.stdout
    with tempfile.TemporaryDirectory() as output_dir:
        assert prewarmed.run("rlvr.run", ["--cfg", "job"], run_env(), Path(output_dir), timeout=120).returncode == 0
