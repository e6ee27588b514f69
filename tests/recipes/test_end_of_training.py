"""What a stop between the end of training and the end of the run is reported as."""

import os
import signal
import time
from types import SimpleNamespace

import pytest

from rlvr.hardware.stops import stops_reported
from rlvr.recipes import grpo_family


def test_a_ctrl_c_between_trainings_end_and_the_final_save_names_the_save(tmp_path, monkeypatch, capsys):
    """The vLLM weight sync and the rollouts' closing come after training and before the save: a Ctrl-C
    there says what it interrupted, not "start-up"."""

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here

    monkeypatch.setattr(grpo_family, "trainer_completer", ctrl_c)
    setup = SimpleNamespace(rewards=[], model=None, tokenizer=None)
    with pytest.raises(SystemExit) as stopped, stops_reported(tmp_path):
        grpo_family.end_training(SimpleNamespace(eval=SimpleNamespace(after=True)), tmp_path, setup, None, None)
    assert stopped.value.code == 130
    assert capsys.readouterr().err.startswith("rlvr: Ctrl-C during saving the final model: stopped at once")
