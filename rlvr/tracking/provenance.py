"""What produced a run: command, host, package versions, the rlvr source commit (run_info.jsonl).

Hydra keeps the config and overrides (.hydra/); the same config on another TRL or transformers
release, or on uncommitted rlvr changes, is a different experiment, and this is what says which.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify", "hydra-core", "wandb")


def package_versions() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in ("rlvr", *PACKAGES)}


def source_commit(source_dir: Path = Path(__file__).resolve().parents[1]) -> dict | None:
    """{commit, dirty} of the rlvr checkout this runs from (tracked files only); None for an
    installed, non-editable copy or without git."""
    if not (source_dir.parent / "pyproject.toml").is_file():  # site-packages: no checkout of ours
        return None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(source_dir.parent), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def invoked_command() -> list[str]:
    """The command line that started this process, as typed (`python -m rlvr.run ...`, not run.py's path)."""
    return [Path(sys.executable).name, *sys.orig_argv[1:]]


def run_info() -> dict:
    import torch

    return {
        "command": invoked_command(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": source_commit(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
