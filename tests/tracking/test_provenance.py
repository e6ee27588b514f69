"""run_info.jsonl's pieces: the source commit only for rlvr's own checkout."""

import subprocess

from conftest import ROOT
from rlvr.tracking.provenance import source_commit


def test_commit_of_this_checkout_and_none_for_an_installed_copy(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert source_commit(ROOT / "rlvr")["commit"] == head
    installed = tmp_path / "site-packages" / "rlvr"  # no pyproject.toml beside it: not a checkout of ours
    installed.mkdir(parents=True)
    assert source_commit(installed) is None
