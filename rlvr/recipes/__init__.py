"""Recipes, one module per `algorithm.name`, each with two functions:

- `preflight(cfg, run_dir) -> Start`: what this start will do in the run dir (new, resume, finish),
  or a one-line refusal; it reads the run dir and writes nothing.
- `train(cfg, run_dir, start) -> dict[str, float]`: the run.

`run.py` imports the module named by the config, so a recipe's dependencies load only when used.
"""

import importlib

from rlvr.errors import ConfigError

RECIPES = ("grpo", "fgrpo", "reward_model")
# The TRL config class each recipe trains with (`algorithm.trl.*` must be one of its fields).
TRL_CONFIGS = {"grpo": "GRPOConfig", "fgrpo": "GRPOConfig", "reward_model": "RewardConfig"}


def get_recipe(name: str):
    if name not in RECIPES:
        raise ConfigError(f"algorithm.name={name!r} is not a recipe (known: {', '.join(RECIPES)})")
    return importlib.import_module(f"rlvr.recipes.{name}")
