"""GRPO: TRL's GRPOTrainer configured from the `algorithm` group, with rlvr's rewards and tracking."""

from __future__ import annotations

from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.recipes import grpo_family
from rlvr.recipes.grpo_family import preflight, run_grpo
from rlvr.tracking.run_dir import Start

__all__ = ["check", "preflight", "train"]


def check(cfg, processes: int) -> None:
    """The GRPO family's check, and no built-in span reward (`reward=fgrpo_spans`): its spans train with
    algorithm=fgrpo; here the first eval would refuse them, after the SFT warm-up."""
    from rlvr.rewards.base import reward_entries, reward_target
    from rlvr.rewards.spans import SPAN_FUNCTIONS

    grpo_family.check(cfg, processes)
    for name, entry in reward_entries(cfg.reward.functions).items():
        if reward_target(name, entry) in SPAN_FUNCTIONS:
            raise ConfigError(
                f"reward.functions.{name} returns spans, which train with algorithm=fgrpo: set algorithm=fgrpo, "
                "or a reward that scores whole completions (e.g. reward=gsm8k_flexible)"
            )


def train(cfg, run_dir: Path, start: Start) -> dict[str, float]:
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    return run_grpo(cfg, run_dir, start, RolloutLoggingGRPOTrainer)
