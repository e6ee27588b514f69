"""hardware.sharding=fsdp with 2 processes on CPU (gloo), through hydra/launcher=local: it shards,
trains as DDP does, resumes exactly, and writes a final model that loads alone."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import TINY_RUN, rank_weight_digests, run_cli
from rlvr.tracking import read_jsonl

pytestmark = pytest.mark.slow
# 100 warm-up steps: rewards vary within groups, so every step changes the weights (a run whose
# advantages are all zero would leave DDP and FSDP trivially equal).
TWO_RANKS = ["-m", "hydra/launcher=local", "hardware.tasks_per_node=2", *TINY_RUN, "model.warmup_sft_steps=100",
             "eval.before=false"]


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
    """{process: share of the parameters it held}, from the check at the start of training."""
    lines = [line for line in (run_dir / "run.log").read_text().splitlines() if "sharding: process" in line]
    return {int(line.split("process ")[1].split()[0]): float(line.split("holds ")[1].split("%")[0]) / 100 for line in lines}


@pytest.fixture(scope="module")
def ddp_and_fsdp(tmp_path_factory) -> Path:
    # An eval during training on 15 rows: the two ranks generate 8 and 7 prompts' worth on the sharded model.
    return multirun(tmp_path_factory.mktemp("sweep"), "hardware.sharding=none,fsdp", "eval.every_steps=2",
                    "dataset.max_eval_samples=15")


def test_fsdp_shards_and_trains_as_ddp_does(ddp_and_fsdp):
    ddp, fsdp = ddp_and_fsdp / "0", ddp_and_fsdp / "1"
    assert held_fractions(fsdp) == pytest.approx({0: 0.5, 1: 0.5}, abs=0.02)
    assert held_fractions(ddp) == {}
    log = (fsdp / "run.log").read_text()
    # The CPU shim is still needed: this fails the day accelerate turns FSDP on for CPU itself (then remove it).
    assert "accelerate would have trained plain DDP here" in log
    assert max_difference(weights(fsdp), weights(ddp)) < 1e-5
    assert max_difference(weights(fsdp), load_file(fsdp / "initial_policy" / "model.safetensors")) > 1e-4  # it learned
    rewards = lambda run: [m["reward"] for m in read_jsonl(run / "metrics.jsonl") if "reward" in m]  # noqa: E731
    assert rewards(fsdp) == pytest.approx(rewards(ddp), abs=1e-6)
    evals = lambda run: [m for m in read_jsonl(run / "metrics.jsonl") if "eval/accuracy" in m]  # noqa: E731
    assert [m["step"] for m in evals(fsdp)] == [2, 4] and evals(fsdp) == evals(ddp)
    checkpoint = fsdp / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir()  # each process wrote its own shard
    assert json.loads((fsdp / "metrics.json").read_text())["eval_after_accuracy"] == \
        json.loads((ddp / "metrics.json").read_text())["eval_after_accuracy"]


def test_fsdp_final_model_loads_alone(ddp_and_fsdp):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ddp_and_fsdp / "1" / "final_model")
    state = weights(ddp_and_fsdp / "1")
    assert "lm_head.weight" not in state  # tied to the embeddings: stored once, as save_pretrained does
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


def test_fsdp_resume_equals_the_uninterrupted_run(ddp_and_fsdp, tmp_path):
    """The FSDP run as a crash right after its step-2 checkpoint would have left it, then continued."""
    import shutil

    run = shutil.copytree(ddp_and_fsdp / "1", tmp_path / "0")
    for later in ("checkpoints/checkpoint-4", "final_model", "eval", "plots"):
        shutil.rmtree(run / later)
    for later in ("metrics.json", "train_result.json"):
        (run / later).unlink()
    multirun(tmp_path, "hardware.sharding=fsdp", "eval.every_steps=2", "dataset.max_eval_samples=15")
    assert "resume from checkpoint-2" in (run / "run.log").read_text()
    assert max_difference(weights(run), weights(ddp_and_fsdp / "1")) == 0.0


def test_lora_with_a_reference_model_under_fsdp(tmp_path):
    from transformers import AutoModelForCausalLM

    multirun(tmp_path, "hardware.sharding=fsdp", "model.lora.enabled=true", "algorithm.beta=0.04")
    run = tmp_path / "0"
    assert held_fractions(run) == pytest.approx({0: 0.5, 1: 0.5}, abs=0.02)
    digests = rank_weight_digests(tmp_path)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1]
    assert (run / "final_adapter" / "adapter_model.safetensors").exists()
    AutoModelForCausalLM.from_pretrained(run / "final_model")  # the adapter merged into its base
    assert max_difference(weights(run), load_file(run / "initial_policy" / "model.safetensors")) > 1e-6


def test_reward_model_under_fsdp_matches_ddp(tmp_path):
    multirun(tmp_path, "algorithm=reward_model", "algorithm.max_steps=6", "hardware.sharding=none,fsdp")
    ddp, fsdp = tmp_path / "0", tmp_path / "1"
    assert held_fractions(fsdp) == pytest.approx({0: 0.5, 1: 0.5}, abs=0.02)
    assert max_difference(weights(fsdp), weights(ddp)) < 1e-5
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (ddp, fsdp)]
    assert metrics[1]["eval_pair_accuracy"] == metrics[0]["eval_pair_accuracy"]
    assert metrics[1]["eval_loss"] == pytest.approx(metrics[0]["eval_loss"], abs=1e-5)
