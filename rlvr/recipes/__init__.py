"""Recipes, one module per `algorithm.name`, each with three functions:

- `check(cfg, processes)`: a one-line refusal of settings this recipe cannot run with `processes`
  processes; part of the start-up check, before anything loads.
- `preflight(cfg, run_dir) -> Start`: what this start will do in the run dir (new, resume, finish),
  or a one-line refusal; it reads the run dir and writes nothing.
- `train(cfg, run_dir, start) -> dict[str, float]`: the run.

and optionally `adapt_rewards(rewards, algorithm) -> rewards`: how its trainer, and every eval of its models,
call the `reward` group's functions (`rlvr.recipes.common.policy_rewards`).

`run.py` imports the module named by the config, so a recipe's dependencies load only when used.
"""

import importlib

# The recipes, by `algorithm.name`, and the TRL config class each trains with (`algorithm.trl.*` must be
# one of its fields).
TRL_CONFIGS = {"grpo": "GRPOConfig", "fgrpo": "GRPOConfig", "reward_model": "RewardConfig"}


def get_recipe(name: str):
    """The recipe module of `algorithm.name` (a key of TRL_CONFIGS: config.CHOICES checked it)."""
    return importlib.import_module(f"rlvr.recipes.{name}")
