"""The `logging` group as wandb's own environment variables, and the checks made before training."""

import os

import pytest
from omegaconf import OmegaConf

from rlvr.config import LoggingConfig
from rlvr.errors import ConfigError
from rlvr.tracking import setup_wandb


@pytest.fixture
def clean_wandb_env(monkeypatch, tmp_path):
    """No stored key anywhere wandb looks: an empty home, config dir and netrc. setup_wandb writes
    os.environ itself, so the whole environment is put back afterwards."""
    saved = dict(os.environ)
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_NAME", "WANDB_ENTITY", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    os.environ.clear()
    os.environ.update(saved)


def logging_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(LoggingConfig), overrides)


def test_offline_mode_is_wandbs_own_in_the_run_dir(clean_wandb_env, tmp_path):
    assert setup_wandb(logging_cfg(wandb="offline", project="p"), tmp_path / "run", "run-1") == ["wandb"]
    assert (os.environ["WANDB_MODE"], os.environ["WANDB_DIR"], os.environ["WANDB_PROJECT"]) == (
        "offline", str(tmp_path / "run"), "p")


def test_online_mode_without_a_key_fails_before_training(clean_wandb_env, tmp_path):
    with pytest.raises(ConfigError, match=r"logging.wandb=online: .*API key.*logging=offline"):
        setup_wandb(logging_cfg(wandb="online"), tmp_path, "run-1")


def test_online_mode_with_a_key_needs_no_network(clean_wandb_env, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    assert setup_wandb(logging_cfg(wandb="online"), tmp_path, "run-1") == ["wandb"]


def test_disabled_reports_nowhere(clean_wandb_env, tmp_path):
    assert setup_wandb(logging_cfg(wandb="disabled"), tmp_path, "run-1") == []
    assert "WANDB_MODE" not in os.environ
