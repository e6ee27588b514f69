"""Where a name points: a local path or the Hugging Face Hub, and whether the Hub is off limits."""

from __future__ import annotations

import os

LOCAL_PREFIXES = ("/", "./", "../", "~", "pkg://")  # pkg://: a directory inside an installed package


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def looks_like_path(name: str) -> bool:
    """Written as a path (so never a Hub name), whether or not it exists."""
    return name.startswith(LOCAL_PREFIXES)
