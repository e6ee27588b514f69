import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
GROUPS = ("model", "dataset", "reward", "algorithm", "hardware", "logging", "eval", "experiment")
# run_cli(*TORCHRUN_TWO, "-m", ...): two processes of a run, started as a user's torchrun would start them.
TORCHRUN_TWO = ["torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# Small enough for seconds on 2 cores, large enough to exercise every stage of a run.
TINY_RUN = [
    "logging=disabled",
    "algorithm.max_steps=4",
    "algorithm.per_device_train_batch_size=16",
    "algorithm.num_generations=4",
    "model.warmup_sft_steps=5",
    "dataset.max_eval_samples=16",
    "algorithm.save_steps=2",
]


VLLM_VENV = ROOT / ".venv-vllm"


def vllm_python() -> Path:
    """.venv-vllm's python (`make vllm-venv`). `make test` builds it while the suite runs, with
    RLVR_VLLM_VENV_LOG naming the build's log, and the tests that need it come last: this waits for the
    build to end, and fails with the end of its log if it failed."""
    log = os.environ.get("RLVR_VLLM_VENV_LOG")
    status = Path(f"{log}.status")
    deadline = time.time() + 1800
    while log and not status.exists() and time.time() < deadline:
        time.sleep(5)
    if status.exists() and status.read_text().strip() != "0":
        pytest.fail(f"make vllm-venv failed (exit {status.read_text().strip()}); the end of {log}:\n{Path(log).read_text()[-3000:]}")
    if not (VLLM_VENV / ".installed").exists():
        pytest.fail("no .venv-vllm here: `make vllm-venv` builds it (`make test` does)")
    return VLLM_VENV / "bin" / "python"


def run_env(env: dict | None = None) -> dict:
    """The environment of a run a test starts: offline, and under pytest-xdist (test processes side by
    side) one core's worth of threads: oversubscribed, OpenMP's waiting threads slow a run down (a vLLM
    run's step beside two busy processes: 317 ms with 2 threads, 132 ms with 1)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    if "PYTEST_XDIST_WORKER" in os.environ:
        full_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
    return full_env


def run_cli(
    module: str,
    *args: str,
    env: dict | None = None,
    timeout: int = 300,
    python: str = sys.executable,
    also: tuple[str, ...] = (),
    new_session: bool = False,
) -> subprocess.CompletedProcess:
    """`python -m <module> args...` from the repo root, offline, capturing output: in a child of this
    test process's prewarmed interpreter of `python` (tests/prewarmed.py, with the modules `also` names
    imported too) where it serves the run, else in a fresh one; in a session of its own with
    `new_session`. The result also holds the process's `pid` (with `new_session`, its session's id)."""
    full_env = run_env(env)
    # others are never served (start nothing): rlvr's, and torchrun's, whose workers running rlvr are served too
    server = prewarmed(python, also) if module.startswith("rlvr") or module == "torch.distributed.run" else None
    if server is not None and server.serves(full_env):
        with tempfile.TemporaryDirectory() as output_dir:
            return server.run(["-m", module, *args], full_env, Path(output_dir), timeout, new_session=new_session)
    command = [str(python), "-m", module, *args]
    with subprocess.Popen(
        command, cwd=ROOT, env=full_env, text=True, start_new_session=new_session, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:  # a timeout, pytest-timeout, Ctrl-C: nothing of the run outlives the test
            if new_session:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    result.pid = process.pid
    return result


def prewarmed(python: str = sys.executable, also: tuple[str, ...] = ()):
    """This test process's prewarmed interpreter (tests/prewarmed.Prewarmed) of `python`, with the modules
    `also` names imported too, started at the first call; None with RLVR_TEST_PREWARMED=0."""
    if os.environ.get("RLVR_TEST_PREWARMED", "1") != "1":
        return None
    if str(python) not in _prewarmed:
        from prewarmed import Prewarmed

        _prewarmed[str(python)] = Prewarmed(run_env(), python, also)
    return _prewarmed[str(python)]


_prewarmed = {}


@pytest.fixture(autouse=True)
def environment_kept():
    """This test process's environment is put back after each test, and a test that leaves
    torch.distributed's variables changed fails (a submitit job refuses to export its own over them).
    Code under test sets variables in the process it runs in, as a start does (rlvr.eval's offline ones,
    the device's exports, TrainingArguments' FSDP ones); kept, every run a later test starts would
    inherit them, and the prewarmed interpreter serves no run whose environment differs from its own:
    each later run would pay a fresh interpreter's imports (~10 s)."""
    names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    with environment_put_back() as saved:
        yield
        changed = {name: os.environ.get(name) for name in names if os.environ.get(name) != saved.get(name)}
    assert not changed, f"the test left these in the environment: {changed}"


@pytest.fixture(autouse=True, scope="module")
def module_environment_kept():
    """As environment_kept, for what a module's own fixtures set (a saved model composed by rlvr.eval)."""
    with environment_put_back():
        yield


@contextlib.contextmanager
def environment_put_back():
    """This process's environment as the block found it (given to the block) is put back when it ends."""
    saved = dict(os.environ)
    try:
        yield saved
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def process_state_kept():
    """What an in-process run of a Hydra app changes in this test process is put back when the block
    ends: environment, argv, working dir, logging (Hydra's job logging binds handlers to streams that
    pytest closes after the test), the SIGINT/SIGTERM handlers, Hydra's config and its error reporter
    (each app words Hydra's errors with its own name: rlvr._compat.wrap_hydra_reporter)."""
    import logging

    import hydra._internal.utils as hydra_utils
    from hydra.core.hydra_config import HydraConfig

    argv, cwd = sys.argv[:], os.getcwd()
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    logger_state = [(x, x.handlers[:], x.level, x.propagate, x.disabled) for x in loggers]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    hydra_config = HydraConfig.instance().cfg
    reporter = hydra_utils.run_and_report
    try:
        with environment_put_back():
            yield
    finally:
        hydra_utils.run_and_report = reporter
        sys.argv = argv
        os.chdir(cwd)
        for logger, logger_handlers, level, propagate, disabled in logger_state:
            logger.handlers[:] = logger_handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        HydraConfig.instance().cfg = hydra_config


def refused_in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m rlvr.run args...` for a start that must be refused, run in this test process: the same
    `rlvr.run.main` (its checks before Hydra, Hydra's composition and callbacks, `start_up`, the one-line
    `fail`), without paying a fresh interpreter's ~5-10 s of importing torch, transformers and TRL.
    Only for a single run whose refusal is the point; a start that gets past `start_up` fails the
    test (use `run_cli`: training would patch libraries in this process). What the call changes in this
    process is put back (`process_state_kept`). Returns what `run_cli` returns: exit code, stdout, stderr."""
    import io
    import warnings

    import rlvr.run

    assert "-m" not in args and "--multirun" not in args, "a -m run's jobs and reports: use run_cli"
    accepted, out, err = [], io.StringIO(), io.StringIO()

    def must_not_start(cfg, start):
        accepted.append(start.run_dir)
        raise SystemExit(99)

    run = rlvr.run.run
    code = 0
    with process_state_kept():
        try:
            os.environ.update({"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})})
            sys.argv = [rlvr.run.__file__, *args]
            rlvr.run.run = must_not_start
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                try:
                    rlvr.run.main()
                except SystemExit as exc:  # what the interpreter would exit with, and print
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                    if exc.code is not None and not isinstance(exc.code, int):
                        print(exc.code, file=sys.stderr)
        finally:
            rlvr.run.run = run
    if accepted:
        pytest.fail(f"rlvr.run accepted this start (run dir {accepted[0]}): refused_in_process is for refusals; use run_cli")
    return subprocess.CompletedProcess(["rlvr.run", *args], code, out.getvalue(), err.getvalue())


def completed_run(run_dir: Path, *args: str, timeout: int = 300) -> Path:
    """`python -m rlvr.run args... hydra.run.dir=run_dir`, which must succeed; returns run_dir."""
    result = run_cli("rlvr.run", *args, f"hydra.run.dir={run_dir}", timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def rank_weight_digests(sweep_dir: Path) -> dict[int, str]:
    """{rank: weights digest} that each task of a multi-task submitit job printed at the end."""
    digests = {}
    for log in (sweep_dir / ".submitit").glob("*/*_log.out"):
        for line in log.read_text().splitlines():
            if line.startswith("rlvr: rank ") and " weights " in line:
                digests[int(line.split()[2])] = line.split()[-1]
    return digests


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM job ids of a `-m` run's submitit jobs."""
    return sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir())


def sacct_states(job_id: str, timeout: float = 60, env: dict | None = None) -> dict[str, str]:
    """Final accounting states of an (array) job: results reach the caller before sacct records the end."""
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id.split("_")[0], "-o", "JobID,State"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **(env or {})},
        ).stdout
        states = dict(line.split("|") for line in out.splitlines())  # "CANCELLED by 0" holds spaces
        if states and not any(s in ("RUNNING", "PENDING", "COMPLETING") for s in states.values()) or time.time() > deadline:
            return states
        time.sleep(0.5)


def squeue_state(job_id: str, env: dict | None = None) -> list[str]:
    """The queue states of a job (empty once it has left the queue)."""
    return subprocess.run(
        ["squeue", "-h", "-j", job_id.split("_")[0], "-o", "%T"], capture_output=True, text=True, env={**os.environ, **(env or {})}
    ).stdout.split()


def start_requeued_job_now(job_id: str, env: dict | None = None, timeout: float = 60) -> None:
    """SLURM holds a requeued job ~2 minutes before it may start again: let it start now, once no node is
    still completing its previous start and a second has passed. Not at once: a node refuses to start the
    job within the second it revoked its previous credential ("Killing non-startable batch JobId=N: Job
    credential revoked" in slurmctld's log), and the job ends FAILED without a result."""
    environment = {**os.environ, **(env or {})}
    deadline = time.time() + timeout
    while time.time() < deadline:
        completing = "completing" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=environment).stdout
        if squeue_state(job_id, env) == ["PENDING"] and not completing:
            time.sleep(1.5)
            subprocess.run(["scontrol", "update", f"JobId={job_id.split('_')[0]}", "StartTime=now"], check=True, env=environment)
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} was not requeued")


def one_line_error(result) -> str:
    """The one `rlvr: error:` line of a run that failed as it should: exit code 2, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("rlvr: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture
def rows_file(tmp_path):
    """Write rows to a jsonl file and return its path."""
    import json

    def write(rows, name="rows.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


@pytest.fixture(scope="session")
def slurm_partition():
    """A real single-node SLURM on localhost (launchers/slurm-up.sh), torn down after the session.

    Every job left in the queue is cancelled at the end, and the test that asked for the cluster
    fails if one had to be: no job of ours outlives the suite.
    """
    up = subprocess.run(["bash", str(ROOT / "launchers" / "slurm-up.sh")], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, f"launchers/slurm-up.sh failed:\n{up.stderr[-3000:]}"
    yield up.stdout.strip().splitlines()[-1]
    deadline = time.time() + 60  # jobs whose results are in finish exiting within seconds
    while left := subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split():
        if time.time() > deadline:
            break
        time.sleep(0.5)
    if left:
        subprocess.run(["scancel", *left], check=False)
    subprocess.run(["bash", str(ROOT / "launchers" / "slurm-down.sh")], capture_output=True, text=True, timeout=300)
    assert not left, f"jobs left in the queue after the tests: {left}"


@pytest.fixture(scope="session")
def two_nodes():
    """A real two-node SLURM on this machine (launchers/slurm-up-2node.sh): the environment that reaches it
    (SLURM_CONF). Every job left in its queue is cancelled at the end, and then the asking test fails."""
    up = subprocess.run(["bash", str(ROOT / "launchers" / "slurm-up-2node.sh")], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, f"launchers/slurm-up-2node.sh failed:\n{up.stderr[-3000:]}"
    env = {"SLURM_CONF": up.stdout.strip().splitlines()[-1].split("=", 1)[1]}
    yield env
    squeue = ["squeue", "-h", "-o", "%A"]
    deadline = time.time() + 60
    while left := subprocess.run(squeue, capture_output=True, text=True, env={**os.environ, **env}).stdout.split():
        if time.time() > deadline:
            break
        time.sleep(0.5)
    if left:
        subprocess.run(["scancel", *left], check=False, env={**os.environ, **env})
    subprocess.run(["bash", str(ROOT / "launchers" / "slurm-down.sh")], capture_output=True, text=True, timeout=300)
    assert not left, f"jobs left in the two-node queue after the tests: {left}"


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen tokenizers ('qwen2.5', 'qwen3'), each built (or read from the per-machine cache) once."""
    from functools import cache

    from rlvr.models.qwen_tokenizers import qwen_tokenizer as build

    return cache(build)


def garble(file, at: bytes):
    """64 bytes overwritten where `at` is stored, the zip directory at the end intact (a bad sector)."""
    data = bytearray(file.read_bytes())
    start = data.index(at)
    data[start : start + 64] = b"\xff" * 64
    file.write_bytes(bytes(data))


def pytest_itemcollected(item):
    """The tests that share a module-scoped fixture of their own module (a trained run, a sweep, a
    built wheel) run in one test process: without a group, xdist hands them to both processes and
    each builds the fixture (measured: the ZeRO sweep twice, 116 s each; the FSDP one, ~65 s).
    Marked as each test is collected, before pytest-xdist reads the groups (--dist loadgroup)."""
    fixtures = getattr(item, "_fixtureinfo", None)  # pytest's record of a test function's fixtures
    if fixtures is None or item.get_closest_marker("xdist_group") is not None:
        return
    module = item.nodeid.split("::")[0]
    shared = [
        name
        for name, definitions in fixtures.name2fixturedefs.items()
        if definitions[-1].scope in ("module", "session") and definitions[-1].baseid == module
    ]
    if shared:
        item.add_marker(pytest.mark.xdist_group(f"{module}:{min(shared)}"))


# The longest tests that share no fixture with others (seconds, a rehearsal of CI on a slow day), handed out first: under --dist
# loadgroup pytest-xdist queues the groups first (most tests first), then every other test in collection
# order, where the Qwen learning run came 90th of ~560, after the benches' smoke runs. Started first,
# longest first, none of them can be the last test running while the other test process has finished.
LONGEST_FIRST = {
    "tests/e2e/test_qwen_learning.py::": 314,
    "tests/test_vllm_rollouts.py::test_grpo_learns_with_vllm_rollouts_and_evaluates_through_vllm": 153,
    "tests/sharding/test_reward_model_sharding.py::": 150,  # estimated: the 3-run sweep it replaces took 159 s
    "tests/benchmarks/test_bench_smoke.py::test_benches_run_at_smoke_size[this-venv]": 300,  # estimated: 213 s on a quiet machine
    "tests/e2e/test_grpo_run.py::test_default_run_learns": 127,
    "tests/e2e/test_local_launcher.py::test_a_sigterm_stop_is_one_line_whose_command_continues_the_run": 84,
    "tests/test_vllm_rollouts.py::test_a_stop_signal": 90,
    "tests/benchmarks/test_bench_smoke.py::": 70,  # bench_vllm
}


def pytest_collection_modifyitems(config, items):
    """The tests marked `vllm_venv` last (`make test` builds .venv-vllm meanwhile); under pytest-xdist,
    within each part the ungrouped tests of LONGEST_FIRST first, longest first. The rest keep their
    order (every test process sorts alike, so all collect the same order)."""
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ

    def seconds(item) -> float:
        if not under_xdist or item.get_closest_marker("xdist_group") is not None:
            return 0
        return max((s for prefix, s in LONGEST_FIRST.items() if item.nodeid.startswith(prefix)), default=0)

    items.sort(key=lambda item: (item.get_closest_marker("vllm_venv") is not None, -seconds(item)))


@contextlib.contextmanager
def started_run(*args: str, python: str = sys.executable, also: tuple[str, ...] = (), env: dict | None = None):
    """`python -m rlvr.run args` in a session (and process group) of its own, as it goes: its `pid` (the
    session's id), `poll`, `communicate`, `returncode`, as a `subprocess.Popen`'s (stdout discarded, stderr
    captured as text). A child of the prewarmed interpreter of `python` (with `also`) where it serves the
    run, else a fresh one. Killed (its process group) if it has not ended when the block does."""
    full_env, argv = run_env(env), ["-m", "rlvr.run", *args]
    server = prewarmed(python, also)
    if server is not None and server.serves(full_env):
        with tempfile.TemporaryDirectory() as output_dir, server.started(argv, full_env, Path(output_dir), new_session=True) as run:
            yield run
        return
    process = subprocess.Popen(
        [str(python), *argv], cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def interrupted(args: list[str], ready, stops: int = 1, stop=signal.SIGINT, env: dict | None = None) -> tuple[int, str]:
    """`started_run(*args)`, sent `stop` `stops` times (50 ms apart) as a terminal's Ctrl-C or `scancel
    --signal` sends it, once `ready()` holds (at most 120 s on); (exit code, stderr). Nothing of it
    outlives the call."""
    with started_run(*args, env=env) as run:
        deadline = time.time() + 120
        while time.time() < deadline and not ready():
            time.sleep(0.05)
        for _ in range(stops):
            os.killpg(run.pid, stop)
            time.sleep(0.05)
        _, stderr = run.communicate(timeout=120)
    return run.returncode, stderr
