"""User-facing errors: each carries one line that names the culprit, printed without a traceback."""

import traceback


class RlvrError(Exception):
    """Bad input a user can fix (config, data, paths). `run.py` prints it on one line and exits 2."""


class ConfigError(RlvrError):
    pass


class DataError(RlvrError):
    pass


class StorageError(RlvrError):
    """The run dir's storage failed under a run (disk full, read-only, deleted): not a bug, and the run
    dir stays resumable from its newest complete checkpoint (`rlvr.tracking.run_dir.storage_failure`)."""


class ModelLoadError(RlvrError):
    pass


class RewardError(RlvrError):
    """A reward function returned something that is not one finite float or None per completion, or raised."""


class DivergedError(RlvrError):
    """The model's parameters or scores hold NaN or infinity: training diverged, or the weights loaded are broken."""


# What to do about a diverged RL or reward-model training (a rerun would resume it).
DIVERGED_TRAINING = (
    "start a new run dir with a lower algorithm.learning_rate (a rerun here continues from the newest checkpoint, "
    "which may have diverged already)"
)


def modules_raised_through(exc: BaseException) -> list[str]:
    """The names of the modules `exc`'s traceback passes through (who raised it: Hydra, optuna, a run)."""
    return [frame.f_globals.get("__name__", "") for frame, _ in traceback.walk_tb(exc.__traceback__)]
