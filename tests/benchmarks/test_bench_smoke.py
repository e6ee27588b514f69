"""`make bench` cannot rot unseen: every bench of tests/benchmarks/bench.py runs at its smoke size
(BENCH_SMOKE=1: the same code paths, seconds each) and must finish with finite figures, written to
its smoke results file, never to bench-results.json.

The benches are found in bench.py itself (each module-level `bench_*` function), so a new bench is
covered without touching this file. The figures are not checked against anything: at smoke size
they measure nothing.
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


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.vllm_venv) if "vllm" in name else name for name in bench_names()])
def test_bench_runs_at_smoke_size(name, tmp_path):
    """`BENCH_SMOKE=1 python tests/benchmarks/bench.py <name>` exits 0, and its results file (in the
    temporary directory, here tmp_path) holds at least one figure, each a finite number."""
    if "vllm" in name:
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
    done = subprocess.run([sys.executable, str(BENCH), name], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, f"{name} crashed at smoke size:\n{done.stderr[-4000:]}"
    figures = json.loads((tmp_path / "bench-results-smoke.json").read_text())
    assert figures, f"{name} returned no figures"
    not_finite = {
        key: value
        for key, value in figures.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    }
    assert not not_finite, f"{name}: figures that are not finite numbers: {not_finite}"
    assert modified(REAL_RESULTS) == real_results, "a smoke run wrote bench-results.json"
