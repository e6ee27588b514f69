"""Recipes: `train(cfg, run_dir) -> dict[str, float]`, one module per `algorithm.name`.

`run.py` imports the module named by the config, so a recipe's dependencies load only when used.
"""

import importlib

from rlvr.errors import ConfigError

# Each recipe and the TRL config class it trains with (`algorithm.trl.*` must be one of its fields).
TRL_CONFIGS = {"grpo": "GRPOConfig", "fgrpo": "GRPOConfig", "reward_model": "RewardConfig"}
RECIPES = tuple(TRL_CONFIGS)


def trl_config_name(name: str) -> str:
    """The TRL config class a recipe trains with; one line for a name that is no recipe."""
    if name not in TRL_CONFIGS:
        raise ConfigError(f"algorithm.name={name!r} is not a recipe (known: {', '.join(RECIPES)})")
    return TRL_CONFIGS[name]


def get_recipe(name: str):
    trl_config_name(name)
    return importlib.import_module(f"rlvr.recipes.{name}").train
