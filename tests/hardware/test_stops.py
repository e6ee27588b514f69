"""A stop signal ends the run wherever it lands."""

import os
import shlex
from pathlib import Path
import signal
import time

import pytest

from rlvr.hardware.stops import stops_reported


class CtrlCInItsFinalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # Python code: the handler runs here, where Python drops what it raises
            pass


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_run(tmp_path, capsys):
    began = time.monotonic()
    with pytest.raises(SystemExit) as info, stops_reported(tmp_path):
        CtrlCInItsFinalizer()
        while time.monotonic() - began < 10:
            time.sleep(0.01)
    assert info.value.code == 130 and time.monotonic() - began < 5
    err = capsys.readouterr().err
    assert err.startswith("rlvr: Ctrl-C during start-up: stopped at once") and "Exception ignored" not in err, err


def test_the_continue_command_quotes_a_run_dir_with_spaces():
    """Pasted as printed, `hydra.run.dir=/runs/my runs/exp 1` was three arguments, and a run dir named
    with a `,` (hydra.job.override_dirname) a sweep."""
    from rlvr.hardware.stops import how_to_continue

    from hydra.core.override_parser.overrides_parser import OverridesParser

    for run_dir in ("/runs/my runs/exp 1", "/runs/lr=0.1,seed=1", "/runs/it's [1]"):
        [arg] = shlex.split(how_to_continue(Path(run_dir)).removeprefix("the same command with "))  # as the shell reads it
        [override] = OverridesParser.create().parse_overrides([arg])  # as Hydra reads it: not a sweep of two values
        assert (override.key_or_group, override.value()) == ("hydra.run.dir", run_dir)
    assert how_to_continue(Path("/runs/exp1")) == "the same command with hydra.run.dir=/runs/exp1"


def test_a_launched_runs_continue_command_is_its_launch_command(monkeypatch):
    """run_info.jsonl records each process's `python -u -m rlvr.run ...`, which one process reruns: refused."""
    from rlvr.hardware.stops import how_to_continue

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert how_to_continue(Path("/runs/exp1")) == "the same torchrun (or accelerate launch) command with hydra.run.dir=/runs/exp1"
