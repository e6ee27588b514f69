"""GRPO: TRL's GRPOTrainer configured from the `algorithm` group, with rlvr's rewards and tracking."""

from __future__ import annotations

from pathlib import Path

from rlvr.recipes.grpo_family import check, preflight, run_grpo
from rlvr.tracking.run_dir import Start

__all__ = ["check", "preflight", "train"]


def train(cfg, run_dir: Path, start: Start) -> dict[str, float]:
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    return run_grpo(cfg, run_dir, start, RolloutLoggingGRPOTrainer)
