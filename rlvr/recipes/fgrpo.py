"""Fine-grained GRPO: the GRPO-family run with span rewards and FineGrainedGRPOTrainer (a toy run on
fixed rollouts is examples/fgrpo_toy.py)."""

from __future__ import annotations

from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.recipes import grpo_family
from rlvr.recipes.grpo_family import preflight, run_grpo
from rlvr.rewards.base import Reward, WeightedReward, reward_entries, reward_target, runs_in_worker
from rlvr.rewards.spans import SpanReward
from rlvr.tracking.run_dir import Start

__all__ = ["adapt_rewards", "check", "preflight", "train"]


def check(cfg, processes: int) -> None:
    """The GRPO family's check, a loss the span advantages support, none of TRL's reward normalisations
    (the span advantages replace them), no reward that scores whole completions (a built-in `Reward`
    class), and no reward in a worker process (`timeout_s`): the spans must come back to this process,
    where the trainer reads them."""
    from rlvr.trainers.fine_grained import check_loss_type

    grpo_family.check(cfg, processes)
    check_loss_type(cfg.algorithm.loss_type)
    a = cfg.algorithm
    trl_normalisations = {
        "scale_rewards": a.scale_rewards != "group",
        "trl.multi_objective_aggregation": "multi_objective_aggregation" in a.trl,
    }
    for key, is_set in trl_normalisations.items():
        if is_set:
            raise ConfigError(
                f"algorithm.{key} has no effect with algorithm=fgrpo: its advantages are normalised per reward group by "
                "algorithm.fine_grained.normalization (standard|centered|none) and weighted by reward.functions.<name>.weight"
            )
    for name, entry in reward_entries(cfg.reward.functions).items():
        target = reward_target(name, entry)
        if isinstance(target, type) and issubclass(target, Reward):
            raise ConfigError(
                f"reward.functions.{name} ({target.__name__}) scores whole completions, and algorithm=fgrpo trains on span "
                "rewards, which score parts of them: use reward=fgrpo_spans, or a function returning spans (docs/fine-grained.md)"
            )
        if runs_in_worker(target, entry):
            raise ConfigError(
                f"reward.functions.{name}.timeout_s: span rewards (algorithm=fgrpo) run in the trainer's process; drop timeout_s"
            )


def adapt_rewards(rewards: list[WeightedReward], algorithm=None) -> list[WeightedReward]:
    """Span functions as TRL calls rewards, in training and in every eval of an fgrpo model. Weights
    scale the spans' advantages; TRL's scalar (for logs) is the weighted sum, so TRL's own weight is 1.
    `algorithm`: the run's algorithm config, whose fine_grained.strict refuses malformed spans; None
    where there is none (rlvr.score: they are clipped or dropped, as training does without strict)."""
    strict = bool(algorithm.fine_grained.strict) if algorithm is not None else False
    return [WeightedReward(r.name, SpanReward(r.name, r.fn, r.weight, strict), 1.0) for r in rewards]


def train(cfg, run_dir: Path, start: Start) -> dict[str, float]:
    from omegaconf import OmegaConf

    from rlvr.config import FineGrainedConfig
    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    settings = FineGrainedConfig(**OmegaConf.to_container(cfg.algorithm.fine_grained))
    return run_grpo(cfg, run_dir, start, FineGrainedGRPOTrainer, fine_grained=settings)
