"""hardware.sharding=fsdp with 2 processes on CPU (gloo), through hydra/launcher=local: it shards,
trains as DDP does, resumes exactly, and writes a final model that loads alone."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rlvr.eval import unusable_checkpoint

from conftest import rank_weight_digests
from two_ranks import (
    EVAL_DURING_TRAINING,
    assert_final_model_loads_alone,
    evals,
    held_fractions,
    max_difference,
    multirun,
    resumed_from_step_2,
    rewards,
    weights,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ddp_and_fsdp(tmp_path_factory) -> Path:
    return multirun(tmp_path_factory.mktemp("sweep"), "hardware.sharding=none,fsdp", *EVAL_DURING_TRAINING)


def test_fsdp_shards_and_trains_as_ddp_does(ddp_and_fsdp):
    ddp, fsdp = ddp_and_fsdp / "0", ddp_and_fsdp / "1"
    assert held_fractions(fsdp) == pytest.approx({0: 0.5, 1: 0.5}, abs=0.02)
    assert held_fractions(ddp) == {}
    log = (fsdp / "run.log").read_text()
    # The CPU shim is still needed: this fails the day accelerate turns FSDP on for CPU itself (then remove it).
    assert "accelerate would have trained plain DDP here" in log
    assert max_difference(weights(fsdp), weights(ddp)) < 1e-5
    assert max_difference(weights(fsdp), load_file(fsdp / "initial_policy" / "model.safetensors")) > 1e-4  # it learned
    assert rewards(fsdp) == pytest.approx(rewards(ddp), abs=1e-6)
    assert [m["step"] for m in evals(fsdp)] == [2, 4] and evals(fsdp) == evals(ddp)
    checkpoint = fsdp / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir()  # each process wrote its own shard
    assert unusable_checkpoint(checkpoint) == "sharded (FSDP): rlvr.eval reads whole models, as the run's final_model/ is"
    assert (
        json.loads((fsdp / "metrics.json").read_text())["eval_after_accuracy"]
        == json.loads((ddp / "metrics.json").read_text())["eval_after_accuracy"]
    )


def test_fsdp_final_model_loads_alone(ddp_and_fsdp):
    assert_final_model_loads_alone(ddp_and_fsdp / "1")


def test_fsdp_resume_equals_the_uninterrupted_run(ddp_and_fsdp, tmp_path):
    run = resumed_from_step_2(ddp_and_fsdp / "1", tmp_path, "hardware.sharding=fsdp", *EVAL_DURING_TRAINING)
    assert max_difference(weights(run), weights(ddp_and_fsdp / "1")) == 0.0


def test_lora_with_a_reference_model_under_fsdp(tmp_path):
    from transformers import AutoModelForCausalLM

    multirun(tmp_path, "hardware.sharding=fsdp", "model.lora.enabled=true", "algorithm.beta=0.04")
    run = tmp_path / "0"
    assert held_fractions(run) == pytest.approx({0: 0.5, 1: 0.5}, abs=0.02)
    assert rank_weight_digests(tmp_path) == {}  # sharded: no copy per rank to compare
    assert (run / "final_adapter" / "adapter_model.safetensors").exists()
    AutoModelForCausalLM.from_pretrained(run / "final_model")  # the adapter merged into its base
    assert max_difference(weights(run), load_file(run / "initial_policy" / "model.safetensors")) > 1e-6
