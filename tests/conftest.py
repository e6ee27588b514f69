import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
GROUPS = ("model", "dataset", "reward", "algorithm", "hardware", "logging", "experiment")
# Small enough for seconds on 2 cores, large enough to exercise every stage of a run.
TINY_RUN = ["logging=disabled", "algorithm.max_steps=4", "algorithm.per_device_train_batch_size=16",
            "algorithm.num_generations=4", "model.warmup_sft_steps=5", "dataset.max_eval_samples=16",
            "algorithm.save_steps=2"]


def run_cli(module: str, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <module> args...` from the repo root, offline, capturing output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def rows_file(tmp_path):
    """Write rows to a jsonl file and return its path."""
    import json

    def write(rows, name="rows.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write
