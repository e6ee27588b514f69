"""`make bench` cannot rot unseen: every bench of tests/benchmarks/bench.py runs at its smoke size
(BENCH_SMOKE=1: the same code paths, seconds each) and must finish with finite figures, written to
its smoke results file, never to bench-results.json.

The benches are found in bench.py itself (each module-level `bench_*` function), so a new bench is
covered without touching this file. Those this venv runs go in one bench process, whose runs are
forks of one prewarmed interpreter (bench.py's `smoke_server`); those of .venv-vllm each in one of
their own. The figures are not checked against anything: at smoke size they measure nothing.
"""

import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import vllm_python

BENCH = Path(__file__).with_name("bench.py")
REAL_RESULTS = BENCH.parents[2] / "bench-results.json"


def bench_names() -> list[str]:
    """The name of every function bench.py defines whose name starts with `bench_`."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # constants and functions only: nothing runs
    return [
        name
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if name.startswith("bench_") and function.__module__ == module.__name__
    ]


def modified(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def bench_groups() -> list:
    """The benches this venv runs, together; then each vLLM bench (.venv-vllm's children) alone."""
    names = bench_names()
    vllm = [name for name in names if "vllm" in name]
    here = [name for name in names if name not in vllm]
    return [pytest.param(here, id="this-venv"), *(pytest.param([name], id=name, marks=pytest.mark.vllm_venv) for name in vllm)]


@pytest.mark.slow
@pytest.mark.parametrize("names", bench_groups())
def test_benches_run_at_smoke_size(names, tmp_path):
    """`BENCH_SMOKE=1 python tests/benchmarks/bench.py <names>` exits 0 having run each of them, and its
    results file (in the temporary directory, here tmp_path) holds figures, each a finite number."""
    if any("vllm" in name for name in names):
        vllm_python()  # .venv-vllm, once built
    real_results = modified(REAL_RESULTS)
    # One thread per process: the bench's own subprocesses and other test processes share the cores.
    env = {
        **os.environ,
        "BENCH_SMOKE": "1",
        "TMPDIR": str(tmp_path),
        "BENCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    env.pop("BENCH_RESULTS", None)
    done = subprocess.run([sys.executable, str(BENCH), *names], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"a bench crashed at smoke size:\n{done.stderr[-4000:]}"
    ran = sorted(line.split()[1] for line in done.stderr.splitlines() if line.startswith("running bench_"))
    assert ran == sorted(names)
    figures = json.loads((tmp_path / "bench-results-smoke.json").read_text())
    assert figures, f"{names} returned no figures"
    not_finite = {
        key: value
        for key, value in figures.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    }
    assert not not_finite, f"figures that are not finite numbers: {not_finite}"
    assert modified(REAL_RESULTS) == real_results, "a smoke run wrote bench-results.json"


def test_a_runs_peak_rss_is_its_own_not_the_bench_processes(monkeypatch):
    """Linux carries a parent's peak RSS into its child's rusage: after the in-process benches had grown
    bench.py to 2.6 GB, both sides of vocab_full_copy measured exactly that (peak RSS ratio 1.00)."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "SMOKE", False)  # the path of the real `make bench`
    held = bytearray(400 * 2**20)
    held[:: 2**12] = b"\x01" * (len(held) >> 12)  # every page touched: resident
    _, peak_mb = bench.run_measured(["-c", "pass"])
    assert 1 < peak_mb < 100, peak_mb  # a bare interpreter's, not this process's 400 MB and more
