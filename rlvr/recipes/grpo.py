"""GRPO: TRL's GRPOTrainer configured from the `algorithm` group, with rlvr's rewards and tracking."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from rlvr.config import AlgorithmConfig
from rlvr.errors import ConfigError
from rlvr.recipes.common import evaluate, finish, save_reference_policy, setup_policy, training_curve_summary
from rlvr.tracking import JsonlWriter, compact_progress_callback, metrics_callback, setup_wandb

log = logging.getLogger(__name__)
# AlgorithmConfig fields that are rlvr's, not GRPOConfig's.
NOT_TRL = {"name", "trl", "save_steps"}


def grpo_config(cfg, run_dir: Path, report_to: list[str], trainer_kwargs: dict):
    """A GRPOConfig whose every field comes from `cfg.algorithm` (TRL names) and `cfg.hardware`."""
    from trl import GRPOConfig

    algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
    knobs = {f.name: algorithm[f.name] for f in dataclasses.fields(AlgorithmConfig) if f.name not in NOT_TRL}
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in algorithm["trl"]:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError(f"algorithm.trl.{key} is not a GRPOConfig field" + (f" (did you mean '{close[0]}'?)" if close else ""))
    save_steps = algorithm["save_steps"]
    try:
        return GRPOConfig(
            output_dir=str(run_dir / "checkpoints"),
            seed=cfg.seed,
            report_to=report_to,
            run_name=run_dir.name,
            save_strategy="steps" if save_steps > 0 else "no",
            save_steps=save_steps if save_steps > 0 else 500,
            **knobs,
            **trainer_kwargs,
            **algorithm["trl"],
        )
    except ValueError as exc:  # TRL's own consistency checks (batch divisibility, ...), in one line
        raise ConfigError(f"algorithm: {' '.join(str(exc).split())}") from exc


def train(cfg, run_dir: Path) -> dict[str, float]:
    from transformers.trainer_callback import ProgressCallback

    from rlvr.models import lora_config
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    setup = setup_policy(cfg)
    report_to = setup_wandb(cfg.logging, run_dir, run_dir.name)
    args = grpo_config(cfg, run_dir, report_to, setup.trainer_kwargs)
    metrics = {"warmup_sft_loss": setup.warmup_loss} if setup.warmup_loss is not None else {}
    metrics |= evaluate(cfg, setup, run_dir, "before")
    if cfg.algorithm.beta != 0 and (cfg.model.name_or_path == "tiny" or setup.warmup_loss is not None):
        save_reference_policy(setup, run_dir)

    rollouts = JsonlWriter(run_dir / "rollouts.jsonl") if cfg.logging.rollouts else None
    trainer = RolloutLoggingGRPOTrainer(
        model=setup.model, rewards=setup.rewards, args=args, train_dataset=setup.train,
        processing_class=setup.tokenizer, peft_config=lora_config(cfg.model),
        callbacks=[metrics_callback(run_dir / "metrics.jsonl")], rollout_writer=rollouts,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(compact_progress_callback())
    started = time.perf_counter()
    result = trainer.train()
    metrics["train_seconds"] = time.perf_counter() - started
    metrics["train_loss"] = result.training_loss
    metrics["train_steps"] = trainer.state.global_step
    if rollouts is not None:
        rollouts.close()
    trainer.save_model(str(run_dir / "final_model"))
    setup.tokenizer.save_pretrained(str(run_dir / "final_model"))

    setup.model = trainer.model
    metrics |= evaluate(cfg, setup, run_dir, "after")
    metrics |= training_curve_summary(run_dir)
    return finish(cfg, run_dir, metrics)
