"""Reward functions with TRL's signature; `build_rewards` instantiates the `reward` config group."""

from rlvr.rewards.base import Outcome, Reward, WeightedReward, build_rewards

__all__ = ["Outcome", "Reward", "WeightedReward", "build_rewards"]
