"""Fine-grained GRPO: the GRPO-family run with span rewards and FineGrainedGRPOTrainer (a toy run on
fixed rollouts is examples/fgrpo_toy.py)."""

from __future__ import annotations

from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.recipes.grpo_family import preflight, run_grpo
from rlvr.rewards.base import WeightedReward
from rlvr.rewards.spans import SpanReward
from rlvr.tracking.run_dir import Start

__all__ = ["preflight", "train"]


def train(cfg, run_dir: Path, start: Start) -> dict[str, float]:
    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer, FineGrainedSettings

    settings = FineGrainedSettings.of(cfg.algorithm.fine_grained)

    def as_span_rewards(rewards: list[WeightedReward]) -> list[WeightedReward]:
        # Weights scale the spans; TRL's scalar (for logs) is their sum, so TRL's own weight is 1.
        for r in rewards:  # the spans must come back to this process, where the trainer reads them
            if r.timeout_s is not None:
                raise ConfigError(
                    f"reward.functions.{r.name}.timeout_s: span rewards (algorithm=fgrpo) run in the trainer's process; drop timeout_s"
                )
        return [WeightedReward(r.name, SpanReward(r.name, r.fn, r.weight), 1.0) for r in rewards]

    return run_grpo(cfg, run_dir, start, FineGrainedGRPOTrainer, wrap_rewards=as_span_rewards, fine_grained=settings)
