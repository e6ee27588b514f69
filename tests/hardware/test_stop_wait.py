"""A stop in training waits for the reward call in progress a bounded time, naming it, then gives up in one line."""

import logging
import os
import signal
import time

import pytest

from rlvr.hardware import stops
from rlvr.hardware.stops import checkpoint_callback, stops_reported
from rlvr.rewards.checks import CheckedReward


@pytest.fixture
def training(monkeypatch):
    """Training's stop handlers for the test, put back after it; a stop waits 1 s for a reward call."""
    monkeypatch.setattr(stops, "STOP_WAIT_S", 1.0)
    monkeypatch.setattr(stops, "STOP_EXIT_GRACE_S", 0.5)
    previous = {sig: signal.getsignal(sig) for sig in stops.STOPPING_SIGNALS}
    callbacks = []
    yield lambda: callbacks.append(checkpoint_callback()) or callbacks[-1]
    for callback in callbacks:
        if callback.wait is not None:
            callback.wait.end()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def score(fn):
    return CheckedReward(fn, "slow")(prompts=["1+1="], completions=["2"], trainer_state=None)


def test_sigterm_gives_up_on_a_reward_that_does_not_return(training, tmp_path, capsys, caplog):
    def hangs(completions, **kwargs):
        time.sleep(60)

    with pytest.raises(SystemExit) as info, caplog.at_level(logging.WARNING, logger="rlvr.hardware.stops"):
        with stops_reported(tmp_path):
            training()
            stopped = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            score(hangs)
    assert info.value.code == 143 and 1 <= time.monotonic() - stopped < 3
    assert capsys.readouterr().err == (
        f"rlvr: SIGTERM during training: gave up waiting for reward 'slow' after 1 s (give it timeout_s to bound it); "
        f"the same command with hydra.run.dir={tmp_path} continues from its newest complete checkpoint, if any\n"
    )
    assert "SIGTERM: waiting for reward 'slow' (running for 1 s) to finish the step; giving up in 0 s" in caplog.text


def test_a_reward_that_returns_in_time_lets_the_step_finish(training, tmp_path):
    def slow(completions, **kwargs):
        time.sleep(0.5)
        return [1.0] * len(completions)

    with stops_reported(tmp_path):
        stops = training()
        os.kill(os.getpid(), signal.SIGTERM)
        assert score(slow) == [1.0]
        time.sleep(1.5)  # past the wait: nothing given up, the step goes on to its checkpoint
    assert stops.requested == signal.SIGTERM and stops.wait.stop is None


def test_a_reward_that_swallows_the_interrupt_is_ended_with_the_stops_exit_code(training, tmp_path, monkeypatch, capsys):
    exits = []
    monkeypatch.setattr(stops, "_exit_process", exits.append)

    def stubborn(completions, **kwargs):
        while not exits:
            try:
                time.sleep(0.1)
            except BaseException:
                pass
        return [0.0] * len(completions)

    with stops_reported(tmp_path):
        training()
        os.kill(os.getpid(), signal.SIGINT)
        score(stubborn)
    assert exits == [130]
    assert capsys.readouterr().err.startswith("rlvr: Ctrl-C during training: gave up waiting for reward 'slow' after 1 s")


def test_a_checkpoint_due_inside_a_generation_is_put_off_to_its_end():
    """GRPO trains several steps on one generation's completions, held in memory: a checkpoint (a
    stop's, or save_steps') waits for the step after which none are left. At the last step of
    training none is saved inside a generation, unless a stop asks for it. The step of each checkpoint is logged."""
    from types import SimpleNamespace

    previous = {sig: signal.getsignal(sig) for sig in stops.STOPPING_SIGNALS}
    callback = checkpoint_callback()
    used_up = {3: False, 4: True, 5: False, 6: False}
    callback.between_generations = lambda: used_up[step]

    def saves(step_now, asked_by_save_steps=False, max_steps=10):
        control = SimpleNamespace(should_save=asked_by_save_steps, should_log=False)
        callback.on_step_end(None, SimpleNamespace(global_step=step_now, max_steps=max_steps), control)
        assert control.should_log == control.should_save  # a checkpoint's step is logged: a resume from it leaves none out
        return control.should_save

    try:
        step = 4
        assert saves(4, asked_by_save_steps=True)  # save_steps' own checkpoint, between generations
        step = 5
        assert not saves(5, asked_by_save_steps=True)
        step = 6
        assert not saves(6, max_steps=6)  # the end of training: no checkpoint inside a generation
        callback._request(signal.SIGTERM, None)
        step = 3
        assert not saves(3)
        step = 4
        assert saves(4)
        step = 6
        assert saves(6, max_steps=6)  # a stop at the last step saves it as it is
    finally:
        if callback.wait is not None:
            callback.wait.end()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize(
    ("signum", "then"), [(signal.SIGINT, "stopping (Ctrl-C again: stop now)"), (signal.SIGTERM, "stopping"), (signal.SIGUSR2, "requeueing")]
)
def test_a_stop_says_what_follows_and_offers_a_second_ctrl_c_only_to_a_ctrl_c(training, caplog, signum, then):
    """A scheduler's SIGTERM was told "(Ctrl-C again: stop now)", which no terminal can give it."""
    with caplog.at_level(logging.WARNING, logger="rlvr.hardware.stops"):
        training()._request(signum, None)
    assert caplog.records[-1].getMessage().endswith(f"saving a checkpoint at the end of this step, then {then}")  # a reward model's


def test_a_stop_of_a_generating_trainer_says_it_waits_for_the_generations_last_step(training, caplog):
    callback = training()
    callback.between_generations = lambda: False
    with caplog.at_level(logging.WARNING, logger="rlvr.hardware.stops"):
        callback._request(signal.SIGTERM, None)
    assert (
        caplog.records[-1].getMessage().endswith("saving a checkpoint at the end of this step (of this generation's last), then stopping")
    )
