"""rlvr as a library: the wheel, installed (not editable) into a fresh venv, runs from any directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN

# What a clone holds besides the sources: never part of a build. Hidden names too: .git, and the venvs
# (.venv-vllm, ~4 GB, may be being built meanwhile: files vanished under the copy).
NOT_SOURCES = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "outputs", "multirun", "wandb", "tests", "*.log")


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory):
    """A venv holding the rlvr wheel built from this tree; its dependencies are the test venv's own
    site-packages, linked by a .pth file, so nothing is downloaded and torch is not installed twice."""
    base = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, base / "src", ignore=NOT_SOURCES)  # a build in the clone would leave build/ there
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", base / "dist", base / "src"],
        check=True,
        capture_output=True,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", base / "venv"], check=True)
    python = base / "venv" / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    # A plain path line: the test venv's .pth files (an editable rlvr's finder) are not run.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = (base / "dist").glob("rlvr-*.whl")
    # --ignore-installed: the linked site-packages holds the test venv's rlvr, which pip must neither
    # take as this one nor uninstall.
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel], check=True, capture_output=True
    )
    return base / "venv" / "bin"


def run_installed(cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the tests point it at the clone
    return subprocess.run(
        [*args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    )


@pytest.mark.slow
def test_the_installed_wheel_runs_from_any_directory(installed_venv, tmp_path):
    where = run_installed(tmp_path, installed_venv / "python", "-c", "import rlvr.config as c; print(c.__file__); print(c.conf_dir())")
    module, conf = where.stdout.split()
    assert module.startswith(str(installed_venv.parent)) and conf.startswith(str(installed_venv.parent)), where
    composed = run_installed(tmp_path, installed_venv / "python", "-m", "rlvr.run", "--cfg", "job")
    assert composed.returncode == 0, composed.stderr[-2000:]
    assert "name_or_path: tiny" in composed.stdout
    run = run_installed(tmp_path, installed_venv / "rlvr", *TINY_RUN, "algorithm.max_steps=2", "eval.before=false", "hydra.run.dir=run")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "final_model" / "config.json").is_file()
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["rlvr", "rlvr-eval", "rlvr-score", "rlvr-plots", "rlvr-sweep-report"])
def test_every_cli_is_a_console_script(installed_venv, tmp_path, script):
    shown = run_installed(tmp_path, installed_venv / script, "--help")
    assert shown.returncode == 0 and shown.stdout.strip(), shown.stderr[-2000:]
