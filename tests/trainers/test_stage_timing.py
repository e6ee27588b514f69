"""rlvr.trainers.stage_timing on a plain TRL GRPOTrainer: every training row gets every stage, and they fit in the step."""

import json

import pytest
from omegaconf import OmegaConf

from rlvr.config import TinyModelConfig
from rlvr.trainers.stage_timing import STAGES, instrument
from rlvr.tracking.outputs import metrics_callback


def count_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def timed_rows(tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer

    out = tmp_path_factory.mktemp("timed")
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0).save_pretrained(out / "policy")
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        beta=0.04,
        disable_tqdm=True,
    )  # beta: a reference model
    trainer = GRPOTrainer(
        model=str(out / "policy"),
        reward_funcs=count_reward,
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"prompt": f"{i}+1="} for i in range(32)]),
        callbacks=[metrics_callback(out / "metrics.jsonl")],
    )
    instrument(trainer)
    trainer.train()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_every_training_row_has_every_stage(timed_rows):
    training = [r for r in timed_rows if "loss" in r]
    assert len(training) == 3
    for row in training:
        assert {f"stage/{s}_s" for s in STAGES} <= set(row)
        assert all(row[f"stage/{s}_s"] >= 0 for s in STAGES)
        assert row["stage/generation_s"] > 0 and row["stage/backward_s"] > 0


def test_stages_fit_in_the_step(timed_rows):
    for row in (r for r in timed_rows if "step_seconds" in r):
        assert sum(row[f"stage/{s}_s"] for s in STAGES if s != "log") <= row["step_seconds"]


def test_reference_logprobs_count_as_logprobs_not_forward(timed_rows):
    assert all(r["stage/logprobs_s"] > 0 for r in timed_rows if "loss" in r)  # beta > 0: a no-grad reference pass
