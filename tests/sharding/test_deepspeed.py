"""hardware.sharding=zero2|zero3 (DeepSpeed) with 2 processes on CPU (gloo), through hydra/launcher=local:
each shards what its stage shards, trains as DDP does, resumes exactly, and writes a final model that
loads alone (the reward model: test_reward_model_sharding.py)."""

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rlvr.tracking.outputs import read_jsonl

from conftest import TINY_RUN, TORCHRUN_TWO, run_cli
from two_ranks import (
    EVAL_DURING_TRAINING,
    assert_final_model_loads_alone,
    evals,
    held_bytes,
    held_fractions,
    max_difference,
    multirun,
    resumed_from_step_2,
    rewards,
    weights,
)

pytestmark = pytest.mark.slow
RUNS = {"none": "0", "zero2": "1", "zero3": "2"}  # the jobs of the sweep below


@pytest.fixture(scope="module")
def ddp_and_zero(tmp_path_factory) -> Path:
    # beta > 0: TRL loads a KL reference model by path, which ZeRO-3 splits as it loads (deepspeed.zero.Init)
    return multirun(tmp_path_factory.mktemp("sweep"), f"hardware.sharding={','.join(RUNS)}", "algorithm.beta=0.04", *EVAL_DURING_TRAINING)


@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_zero_shards_and_trains_as_ddp_does(ddp_and_zero, mode):
    ddp, run = ddp_and_zero / RUNS["none"], ddp_and_zero / RUNS[mode]
    # zero2: half the optimizer state per process (parameters whole); zero3: half the parameters too
    assert held_fractions(run) == pytest.approx({0: 0.5, 1: 0.5}, abs=0.02)
    assert f"holds 50.0% of the {'optimizer state' if mode == 'zero2' else 'parameters'}" in (run / "run.log").read_text()
    whole, held = held_bytes(ddp)[0], held_bytes(run)
    assert sorted(held) == [0, 1]
    for process in held.values():
        assert process["optimizer state"] == pytest.approx(whole["optimizer state"] / 2, rel=0.01)
        assert process["gradients"] == pytest.approx(whole["gradients"] / 2, rel=0.01)
        # the model's own parameters (zero3: their half) + DeepSpeed's fp32 master copy of this process's half
        assert process["parameters"] == pytest.approx(whole["parameters"] * (1.5 if mode == "zero2" else 1.0), rel=0.01)
    assert max_difference(weights(run), weights(ddp)) < 1e-5
    assert max_difference(weights(run), load_file(run / "initial_policy" / "model.safetensors")) > 1e-4  # it learned
    assert rewards(run) == pytest.approx(rewards(ddp), abs=1e-6)
    assert [m["step"] for m in evals(run)] == [2, 4] and evals(run) == evals(ddp)  # ZeRO-3: on TRL's gathered model
    step = run / "checkpoints" / "checkpoint-4" / "global_step4"
    assert {f"zero_pp_rank_{p}_mp_rank_00_optim_states.pt" for p in (0, 1)} <= {f.name for f in step.iterdir()}
    assert (
        json.loads((run / "metrics.json").read_text())["eval_after_accuracy"]
        == json.loads((ddp / "metrics.json").read_text())["eval_after_accuracy"]
    )
    assert_final_model_loads_alone(run)


@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_zero_resume_equals_the_uninterrupted_run(ddp_and_zero, tmp_path, mode):
    run = resumed_from_step_2(
        ddp_and_zero / RUNS[mode], tmp_path, f"hardware.sharding={mode}", "algorithm.beta=0.04", *EVAL_DURING_TRAINING
    )
    assert max_difference(weights(run), weights(ddp_and_zero / RUNS[mode])) == 0.0


def test_zero3_run_stopped_after_its_last_checkpoint_is_finished_from_it(ddp_and_zero, tmp_path):
    """Trained nothing in its start, so no DeepSpeed engine: its final model comes from the checkpoint's whole weights."""
    original = ddp_and_zero / RUNS["zero3"]
    run = shutil.copytree(original, tmp_path / "0")
    for name in ("metrics.json", "train_result.json"):  # stopped after checkpoint-4, before the final model
        (run / name).unlink()
    shutil.rmtree(run / "final_model")
    multirun(tmp_path, "hardware.sharding=zero3", "algorithm.beta=0.04", *EVAL_DURING_TRAINING)
    assert "checkpoint-4 is the end of training: restoring it" in (run / "run.log").read_text()
    assert max_difference(weights(run), weights(original)) == 0.0


def test_zero3_starts_end_with_a_clean_exit(tmp_path):
    """ZeRO-3 processes were seen to abort (SIGABRT) at interpreter exit after all their work, in 3 of 17
    resumed runs: two starts of one run (new, resumed) under torchrun, whose exit status,
    unlike a submitit task's, is each process's own (rlvr.hardware.distributed.close_process_group).
    One eval row for two ranks: the eval during training hung, rank 1 (no row) in the gather of the
    rows, rank 0 in generate, in the collective ZeRO-3's first forward joins."""
    for steps in (2, 3):
        result = run_cli(
            *TORCHRUN_TWO,
            "-m",
            "rlvr.run",
            *TINY_RUN,
            "hardware.tasks_per_node=2",
            "hardware.sharding=zero3",
            "eval.before=false",
            "eval.after=false",
            "eval.every_steps=2",
            "dataset.max_eval_samples=1",
            "model.warmup_sft_steps=0",
            "algorithm.save_steps=1",
            f"algorithm.max_steps={steps}",
            f"hydra.run.dir={tmp_path}",
            timeout=300,
        )
        assert result.returncode == 0, f"start to step {steps}: {result.stderr[-3000:]}"
        assert "SIGABRT" not in result.stderr and "terminate called" not in result.stderr
    assert "resume from checkpoint-2" in (tmp_path / "run.log").read_text()
    assert len(read_jsonl(tmp_path / "eval" / "step-2.jsonl")) == 1  # the one row, once
