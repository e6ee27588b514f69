"""Steps every policy-training recipe shares: build the blocks, evaluate, save, summarise."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr import hardware
from rlvr.tracking import close_wandb, phase_means, read_jsonl, write_json

log = logging.getLogger(__name__)


@dataclass
class PolicySetup:
    model: Any
    tokenizer: Any
    train: Any
    evaluation: Any
    rewards: list
    trainer_kwargs: dict
    warmup_loss: float | None = None


def setup_policy(cfg) -> PolicySetup:
    """Model, data and rewards from their config groups; the SFT warm-up if the model asks for one."""
    from rlvr.data import load_prompt_datasets
    from rlvr.models import load_policy
    from rlvr.rewards import build_rewards

    rewards = build_rewards(cfg.reward.functions)  # first: a bad reward config fails before any loading
    trainer_kwargs = hardware.trainer_arguments(cfg.hardware)
    train, evaluation = load_prompt_datasets(cfg.dataset, cfg.seed)
    model, tokenizer = load_policy(cfg.model, cfg.seed)
    log.info("policy %s: %.2fM parameters; %d train / %d eval prompts", cfg.model.name_or_path,
             sum(p.numel() for p in model.parameters()) / 1e6, len(train), len(evaluation or []))
    setup = PolicySetup(model, tokenizer, train, evaluation, rewards, trainer_kwargs)
    if cfg.model.warmup_sft_steps > 0:
        from rlvr.warmup import sft_warmup

        setup.warmup_loss = sft_warmup(model, tokenizer, train, cfg, trainer_kwargs, cfg.seed)
    return setup


def save_reference_policy(setup: PolicySetup, run_dir: Path) -> None:
    """Save the policy as RL starts (after any warm-up) and point its config at it.

    TRL builds the KL reference model by loading `model.config.name_or_path`; a model made in
    memory has no path, and a warmed-up one differs from its path. This makes both correct.
    """
    path = run_dir / "reference_model"
    setup.model.save_pretrained(path)
    setup.model.config.name_or_path = str(path)


def evaluate(cfg, setup: PolicySetup, run_dir: Path, label: str) -> dict[str, float]:
    if setup.evaluation is None or not getattr(cfg.eval, label):
        return {}
    from rlvr.evaluation import greedy_eval

    device = hardware.torch_device(cfg.hardware)
    setup.model.to(device)
    max_new = cfg.eval.max_new_tokens or cfg.algorithm.max_completion_length
    result = greedy_eval(setup.model, setup.tokenizer, setup.evaluation, setup.rewards, max_new,
                         cfg.eval.batch_size, run_dir / "eval" / f"{label}.jsonl", label)
    log.info("eval %s: %s", label, {k: round(v, 4) for k, v in result.items()})
    return result


def training_curve_summary(run_dir: Path) -> dict[str, float]:
    """Mean reward over the first and last 20% of logged steps, from metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    rewards = [m["reward"] for m in read_jsonl(path) if "reward" in m] if path.exists() else []
    first, last = phase_means(rewards)
    return {"train_reward_first20": first, "train_reward_last20": last, "train_logged_steps": float(len(rewards))}


def finish(cfg, run_dir: Path, metrics: dict[str, Any]) -> dict[str, float]:
    """Plots and metrics.json; returns the flat float metrics."""
    if cfg.logging.plots:
        from rlvr.plots import plot_run

        plot_run(run_dir)
    flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
    write_json(run_dir / "metrics.json", flat)
    close_wandb(flat)
    return flat
