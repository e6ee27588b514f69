"""A reward that tests run in a worker process (`timeout_s`). This module imports nothing heavy, so
what the worker has imported is what rlvr sent it."""

import sys


def sees_trainer_state(completions, trainer_state=None, **kwargs):
    """Three values: the state's global_step and max_steps, and 1.0 if the worker imported transformers."""
    return [float(trainer_state.global_step), float(trainer_state.max_steps), float("transformers" in sys.modules)]
