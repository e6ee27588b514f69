"""The suite's prewarmed interpreter (tests/prewarmed.py) gives what a fresh `python -m` gives."""

import json
import os
import subprocess
import sys
import tempfile
import time
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


PATH_PROBE = "import sys, user_module; print(sys.path, user_module.__file__)"


def test_a_served_run_with_directories_put_before_the_pythonpath_has_the_sys_path_of_a_fresh_one(prewarmed, tmp_path):
    """A test's user modules (a PYTHONPATH that puts its directory first): served, with the sys.path a fresh
    interpreter builds; a PYTHONPATH that drops the server's entries is not served."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "user_module.py").write_text("")
    (tmp_path / "probe.py").write_text(PATH_PROBE)
    server = run_env().get("PYTHONPATH")
    env = run_env({"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path / "user"), server) if p)})
    assert prewarmed.serves(env)
    assert not server or not prewarmed.serves(run_env({"PYTHONPATH": str(tmp_path / "user")}))
    argv = [str(tmp_path / "probe.py")]
    served, expected = prewarmed.run(argv, env, tmp_path, timeout=120), fresh(*argv, env=env)
    assert served.returncode == 0, served.stderr[-2000:]
    assert served.stdout == expected.stdout


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
from prewarmed import PRELOADED, READ_AT_RUN_TIME, REAL_PYTHON, TASK_SOCKET
for name in (*PRELOADED, *sys.argv[1:]):
    importlib.import_module(name)
from trl import GRPOTrainer
ours = READ_AT_RUN_TIME | {{REAL_PYTHON, TASK_SOCKET}}
print(json.dumps({{k: v for k, v in os.environ.items() if k not in ours}}, sort_keys=True))
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


SUBMITS_TASKS = """import json, os, signal, sys, time
from pathlib import Path
import submitit

mode, folder = sys.argv[1], Path(sys.argv[2])


def task():
    rank = os.environ["SUBMITIT_LOCAL_GLOBALID"]
    if mode == "requeue" and not (folder / f"exited{rank}").exists():
        (folder / f"exited{rank}").touch()
        os._exit(144)  # submitit's "requeue me": the controller starts the tasks again
    if mode in ("results", "requeue"):
        print("task output")
        path = [entry.replace(str(folder), "FOLDER") for entry in sys.path]
        return {"preloaded": "trl" in sys.modules, "parent": os.getppid(), "rank": rank, "path": path}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a cancelled job's task lives on until the SIGKILL
    signal.signal(signal.SIGTERM, lambda *_: (Path(folder / f"sigterm{rank}").touch(), os._exit(0)))
    (folder / f"pid{rank}").write_text(str(os.getpid()))
    time.sleep(120)


if mode.startswith("user-modules"):  # a PYTHONPATH putting a directory of the user's before the run's
    (folder / "user").mkdir(exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder / "user"), os.environ.get("PYTHONPATH")) if p)
    mode = mode.removeprefix("user-modules-")
if mode == "refused":
    os.environ["OMP_NUM_THREADS"] = "7"  # read when torch is imported: a task with it cannot be a child of the server
    mode = "results"
executor = submitit.LocalExecutor(folder=folder / "jobs")
executor.update_parameters(timeout_min=5, tasks_per_node=2)
job = executor.submit(task)
if mode in ("results", "requeue"):
    print(json.dumps({"results": job.results(), "stdout": job.stdout()}))
    sys.exit()
pid_files = [folder / f"pid{rank}" for rank in (0, 1)]
while not all(path.exists() for path in pid_files):
    time.sleep(0.1)
pids = [int(path.read_text()) for path in pid_files]
if mode == "sigterm":
    job._process.send_signal(signal.SIGTERM)  # the controller passes it on to its tasks
elif mode == "cancel":
    job.cancel()  # SIGINT to the controller: it ends its tasks with SIGINT, then SIGKILL
else:
    os.kill(os.getppid(), signal.SIGKILL)  # the prewarmed interpreter dies (this run is its child)
if mode != "server-dies":
    job._process.wait(60)
def running(pid):
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


deadline = time.time() + 30
while any(map(running, pids)) and time.time() < deadline:
    time.sleep(0.1)
alive = [pid for pid in pids if running(pid)]
print(json.dumps({"sigterm": sorted(p.name for p in folder.glob("sigterm*")), "alive": alive}))
"""


def submit_tasks(prewarmed, tmp_path, mode: str) -> dict:
    tmp_path.mkdir(exist_ok=True)
    script = tmp_path / "submits.py"
    script.write_text(SUBMITS_TASKS)
    served = prewarmed.run([str(script), mode, str(tmp_path)], run_env(), tmp_path, timeout=120)
    assert served.returncode == 0, served.stderr[-3000:]
    return json.loads(served.stdout.splitlines()[-1])


def test_the_submitit_tasks_of_a_served_run_are_served_too_and_give_what_fresh_ones_give(prewarmed, tmp_path):
    """Each task of a served run's local submitit job is a child of the server (its imports done), with
    its own rank, result and output; a task whose environment differs in a variable read at import is
    a fresh interpreter, with the same results."""
    served = submit_tasks(prewarmed, tmp_path / "served", "results")
    assert [(r["preloaded"], r["parent"], r["rank"]) for r in served["results"]] == [
        (True, prewarmed.server.pid, "0"),
        (True, prewarmed.server.pid, "1"),
    ]
    assert "task output" in served["stdout"]
    refused = submit_tasks(prewarmed, tmp_path / "refused", "refused")
    assert [(r["preloaded"], r["rank"]) for r in refused["results"]] == [(False, "0"), (False, "1")]
    assert all(r["parent"] != prewarmed.server.pid for r in refused["results"])
    assert "task output" in refused["stdout"]


def test_the_tasks_of_a_run_with_directories_put_before_the_pythonpath_are_served_with_a_fresh_ones_sys_path(prewarmed, tmp_path):
    served = submit_tasks(prewarmed, tmp_path / "served", "user-modules-results")
    fresh = submit_tasks(prewarmed, tmp_path / "refused", "user-modules-refused")
    assert [(r["preloaded"], r["parent"]) for r in served["results"]] == [(True, prewarmed.server.pid)] * 2
    assert [r["preloaded"] for r in fresh["results"]] == [False, False]
    assert "FOLDER/user" in served["results"][0]["path"]
    assert [r["path"] for r in served["results"]] == [r["path"] for r in fresh["results"]]


def test_a_served_tasks_exit_code_reaches_its_controller(prewarmed, tmp_path):
    """Each task exits 144 once (submitit's requeue code): the controller starts both again, and the
    second attempts give the job's results."""
    requeued = submit_tasks(prewarmed, tmp_path, "requeue")
    assert [(r["preloaded"], r["rank"]) for r in requeued["results"]] == [(True, "0"), (True, "1")]
    assert sorted(path.name for path in tmp_path.glob("exited*")) == ["exited0", "exited1"]


def test_served_tasks_end_with_their_server(tmp_path):
    """A prewarmed interpreter that dies takes the tasks it forked along (their controller would
    otherwise lose sight of them); the run that killed it reports from outside."""
    script = tmp_path / "submits.py"
    script.write_text(SUBMITS_TASKS)
    server = Prewarmed(run_env())
    with pytest.raises(RuntimeError, match="the prewarmed interpreter ended"):
        server.run([str(script), "server-dies", str(tmp_path)], run_env(), tmp_path, timeout=120)
    deadline = time.time() + 60
    while not (tmp_path / "stdout").read_text() and time.time() < deadline:
        time.sleep(0.2)
    assert json.loads((tmp_path / "stdout").read_text())["alive"] == []


@pytest.mark.parametrize("mode", ["sigterm", "cancel"])
def test_a_served_task_gets_the_signals_its_controller_sends_and_ends_with_it(prewarmed, tmp_path, mode):
    """SIGTERM reaches the task (its handler runs); a cancelled job's tasks, killed with SIGKILL by the
    controller, end although the server, not the controller, is their parent."""
    ended = submit_tasks(prewarmed, tmp_path, mode)
    assert ended["alive"] == []
    assert ended["sigterm"] == (["sigterm0", "sigterm1"] if mode == "sigterm" else [])
