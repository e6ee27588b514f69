"""`python -m rlvr.plots`'s refusals: one line, exit 2, naming what to do instead."""

import pytest

from rlvr.plots import main


def refusal(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_a_missing_dir_and_a_sweep_dir_are_named_as_such(tmp_path, capsys):
    assert refusal(capsys, str(tmp_path / "missing")) == f"rlvr-plots: error: {tmp_path / 'missing'}: no such directory"
    (tmp_path / "0").mkdir()
    assert refusal(capsys, str(tmp_path)) == (
        f"rlvr-plots: error: {tmp_path} has no metrics.jsonl or rollouts.jsonl "
        "(a -m run's sweep dir: python -m rlvr.sweep_report DIR plots its jobs)"
    )
