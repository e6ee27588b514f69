"""What rlvr builds once per machine and keeps: directories under `$XDG_CACHE_HOME/rlvr/<kind>/`
(default `~/.cache`), each named by a key of everything it is built from, written whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir(kind: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlvr" / kind


def built_once(kind: str, name: str, marker: str, write: Callable[[Path], None]) -> Path:
    """The directory `<cache>/<kind>/<name>`; when it lacks the file `marker`, `write(directory)` fills a
    staging copy that then takes its place in one rename, so a concurrent or interrupted builder never
    leaves a half-written directory, and the first of two concurrent builders wins."""
    path = cache_dir(kind) / name
    if not (path / marker).exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path.parent))
        try:
            write(staging)
            staging.chmod(0o755)  # mkdtemp's 0o700 would hide the cache from other users of the machine
            staging.rename(path)
        except OSError:
            if not (path / marker).exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    return path
