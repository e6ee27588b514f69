"""`make gpu-check` cannot rot between the rare sessions with a GPU: its script runs here on CPU at its
smoke size (BENCH_SMOKE=1, the same code path) and must write finite figures for both sides."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("gpu_check.py")


@pytest.mark.slow
def test_gpu_check_runs_at_smoke_size(tmp_path):
    env = {
        **os.environ,
        "BENCH_SMOKE": "1",
        "TMPDIR": str(tmp_path),
        "BENCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    out = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["machine"]["device"] == "cpu" and results["machine"]["trl"]
    figures = {k: v for k, v in results.items() if k != "machine"}
    for side in ("rlvr", "trl"):
        assert figures[f"0.5b_{side}_step_seconds"] > 0 and figures[f"0.5b_{side}_generation_tokens_per_s"] > 0
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures.values()), figures
