"""Runs with 2 processes on CPU (gloo) through hydra/launcher=local, and what the sharding tests read
from them (tests/sharding/test_fsdp.py, test_deepspeed.py)."""

import shutil
from pathlib import Path

from safetensors.torch import load_file

from conftest import TINY_RUN, run_cli
from rlvr.tracking.outputs import read_jsonl

# 100 warm-up steps: rewards vary within groups, so every step changes the weights (a run whose
# advantages are all zero would leave DDP and a sharded run trivially equal).
TWO_RANKS = ["-m", "hydra/launcher=local", "hardware.tasks_per_node=2", *TINY_RUN, "model.warmup_sft_steps=100", "eval.before=false"]
# An eval during training on 15 rows: the two ranks generate 8 and 7 prompts' worth on the sharded model, in
# batches of 7: 2 generate calls and 1 (the rank with one call more waited for ever under FSDP and ZeRO-3).
EVAL_DURING_TRAINING = ["eval.every_steps=2", "dataset.max_eval_samples=15", "eval.batch_size=7"]


def multirun(sweep_dir: Path, *args: str) -> Path:
    result = run_cli("rlvr.run", *TWO_RANKS, *args, f"hydra.sweep.dir={sweep_dir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "final_model" / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def held_fractions(run_dir: Path) -> dict[int, float]:
    """{process: share of the parameters (zero2: of the optimizer state) it held}, from the check at the start of training."""
    lines = [line for line in (run_dir / "run.log").read_text().splitlines() if "sharding: process" in line]
    return {int(line.split("process ")[1].split()[0]): float(line.split("holds ")[1].split("%")[0]) / 100 for line in lines}


def held_bytes(run_dir: Path) -> dict[int, dict[str, int]]:
    """{process: {parameters, gradients, optimizer state: bytes}} from its memory line after the first step."""
    held = {}
    for line in (run_dir / "run.log").read_text().splitlines():
        if "memory: process" in line and " holds " in line:
            parts = line.split("(")[1].rstrip(")").split(", ")
            held[int(line.split("process ")[1].split()[0])] = {p.rsplit(" ", 1)[0]: int(p.rsplit(" ", 1)[1]) for p in parts}
    return held


def rewards(run_dir: Path) -> list[float]:
    return [m["reward"] for m in read_jsonl(run_dir / "metrics.jsonl") if "reward" in m]


def evals(run_dir: Path) -> list[dict]:
    return [m for m in read_jsonl(run_dir / "metrics.jsonl") if "eval/accuracy" in m]


def assert_final_model_loads_alone(run_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final_model")
    assert "lm_head.weight" not in weights(run_dir)  # tied to the embeddings: stored once, as save_pretrained does
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


def resumed_from_step_2(run_dir: Path, tmp_path: Path, *args: str) -> Path:
    """The run in `run_dir` (trained to step 4, a checkpoint every 2) as a crash right after its step-2
    checkpoint would have left it, then continued with `args`; returns the continued run's dir."""
    run = shutil.copytree(run_dir, tmp_path / "0")
    for later in ("checkpoints/checkpoint-4", "final_model", "eval", "plots"):
        shutil.rmtree(run / later)
    for later in ("metrics.json", "train_result.json"):
        (run / later).unlink()
    multirun(tmp_path, *args)
    assert "resume from checkpoint-2" in (run / "run.log").read_text()
    return run
