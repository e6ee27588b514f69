"""GRPO: TRL's GRPOTrainer configured from the `algorithm` group, with rlvr's rewards and tracking."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rlvr.recipes.common import (
    calibrate_rewards, evaluate, finish, reuse_run_dir, save_final_model, save_reference_policy, setup_policy,
    trl_config, training_curve_summary,
)
from rlvr.distributed import (
    checkpoint_callback, checkpoint_step, is_main_process, latest_complete_checkpoint, rank, weights_digest,
)
from rlvr.errors import ConfigError
from rlvr.rewards.checks import checked_rewards
from rlvr.tracking import (
    JsonlWriter, metrics_callback, read_jsonl, setup_wandb, use_compact_progress, write_json,
)

log = logging.getLogger(__name__)


def train(cfg, run_dir: Path) -> dict[str, float]:
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    return run_grpo(cfg, run_dir, RolloutLoggingGRPOTrainer)


def run_grpo(cfg, run_dir: Path, trainer_class, wrap_rewards=None, **trainer_extra) -> dict[str, float]:
    """The GRPO run every GRPO-family recipe shares; they differ in trainer class and reward adapter."""
    from trl import GRPOConfig

    from rlvr.models import lora_config

    resume = latest_complete_checkpoint(run_dir / "checkpoints")
    resume_step = None if resume is None else checkpoint_step(resume)
    if resume_step is not None and 0 < cfg.algorithm.max_steps <= resume_step:
        raise ConfigError(f"{run_dir} already holds a run trained to step {resume_step} "
                          f"(algorithm.max_steps={cfg.algorithm.max_steps}): raise algorithm.max_steps to continue it, "
                          f"or pick a new hydra.run.dir")
    reuse_run_dir(run_dir, resume_step, "finished GRPO", "it saved no checkpoint to continue from")
    report_to = setup_wandb(cfg.logging, run_dir, run_dir.name)  # first: a missing wandb key fails before loading
    setup = setup_policy(cfg)
    if wrap_rewards is not None:
        setup.rewards = wrap_rewards(setup.rewards)
    setup.rewards = checked_rewards(setup.rewards, cfg.reward.checks)  # for training, calibration and eval alike
    args = trl_config(GRPOConfig, cfg, run_dir, report_to, setup.trainer_kwargs,
                      reward_weights=[r.weight for r in setup.rewards])
    metrics = {"warmup_sft_loss": setup.warmup_loss} if setup.warmup_loss is not None else {}
    metrics |= setup.prompts_dropped
    calibrate_rewards(cfg, setup, run_dir)
    if resume is None:
        metrics |= evaluate(cfg, setup, run_dir, "before")
    else:  # a requeued or re-run job (reuse_run_dir dropped what was logged after the checkpoint)
        log.info("resuming from %s", resume)
        if (run_dir / "eval" / "before.jsonl").exists():  # the first start's eval, for this run's metrics.json
            from rlvr.evaluation import summarise

            metrics |= summarise(read_jsonl(run_dir / "eval" / "before.jsonl"), "before")
    if cfg.algorithm.beta != 0 and (cfg.model.name_or_path == "tiny" or setup.warmup_loss is not None):
        save_reference_policy(setup, run_dir)

    rollouts = JsonlWriter(run_dir / "rollouts.jsonl") if cfg.logging.rollouts and is_main_process() else None
    trainer = trainer_class(
        model=setup.model, rewards=setup.rewards, args=args, train_dataset=setup.train,
        processing_class=setup.tokenizer, peft_config=lora_config(cfg.model, setup.reasoning_vocab),
        callbacks=[metrics_callback(run_dir / "metrics.jsonl"), checkpoint_callback()],
        rollout_writer=rollouts, stage_timing=cfg.logging.stage_timing, **trainer_extra,
    )
    use_compact_progress(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics["train_seconds"] = time.perf_counter() - started
    metrics["train_loss"] = result.training_loss
    metrics["train_steps"] = trainer.state.global_step
    if rollouts is not None:
        rollouts.close()
    setup.model = save_final_model(trainer, setup.tokenizer, cfg.model, run_dir)
    if setup.reasoning_vocab is not None and is_main_process():  # the map, and where each copy ended up
        write_json(run_dir / "reasoning_vocab.json",
                   setup.reasoning_vocab.as_dict() | setup.reasoning_vocab.embedding_norms(setup.model))
    if trainer.accelerator.num_processes > 1:
        print(f"rlvr: rank {rank()} weights {weights_digest(setup.model)}", flush=True)

    metrics |= evaluate(cfg, setup, run_dir, "after")
    metrics |= training_curve_summary(run_dir)
    return finish(cfg, run_dir, metrics)
