"""User-facing errors: each carries one line that names the culprit, printed without a traceback."""


class RlvrError(Exception):
    """Bad input a user can fix (config, data, paths). `run.py` prints it on one line and exits 2."""


class ConfigError(RlvrError):
    pass


class DataError(RlvrError):
    pass


class ModelLoadError(RlvrError):
    pass


class RewardError(RlvrError):
    """A reward function returned something that is not one finite float or None per completion, or raised."""
