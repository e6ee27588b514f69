"""A reward that runs in the training process and tries to end it: one RewardError naming it and where, instead."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from rlvr.errors import RewardError
from rlvr.rewards.checks import CheckedReward

FIX = "a reward must return its scores, not end the run; give it timeout_s to run it in a worker process, where an exit scores None"


def call(fn):
    return CheckedReward(fn, "mine")(prompts=["1+1="], completions=["2"])


def exits(completions, **kwargs):
    os._exit(3)


def swallows_the_exit(completions, **kwargs):
    try:
        os._exit(4)
    except BaseException:
        return [1.0] * len(completions)


def raises_system_exit(completions, **kwargs):
    sys.exit("bye")


def line_of(fn, text: str) -> int:
    """The line of `fn` that holds `text`, as the error names it."""
    import inspect

    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.parametrize(
    ("fn", "what"),
    [
        (exits, "called os._exit(3) (at test_reward_exits.py:{})"),
        (swallows_the_exit, "called os._exit(4) (at test_reward_exits.py:{})"),
        (raises_system_exit, "raised SystemExit('bye') (at test_reward_exits.py:{})"),
    ],
)
def test_ending_the_process_is_one_line_naming_the_reward_and_where(fn, what, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent)  # the code's path is named from the working directory
    real_exit = os._exit
    with pytest.raises(RewardError) as info:
        call(fn)
    where = line_of(fn, "    os._exit(" if "os._exit" in what else "    sys.exit(")
    assert str(info.value) == f"reward 'mine' {what.format(where)}: {FIX}"
    assert os._exit is real_exit  # put back after the call


def test_an_exit_through_a_librarys_hook_on_sys_exit_names_the_rewards_line(monkeypatch):
    """wandb.init wraps sys.exit: the error named wandb's exit_hooks.py, not the reward's line."""
    from wandb.sdk.lib.exit_hooks import ExitHooks

    monkeypatch.chdir(Path(__file__).parent)
    monkeypatch.setattr(sys, "exit", sys.exit)  # both put back after the test
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    ExitHooks().hook()
    with pytest.raises(RewardError) as info:
        call(raises_system_exit)
    assert f"raised SystemExit('bye') (at test_reward_exits.py:{line_of(raises_system_exit, '    sys.exit(')})" in str(info.value)


def test_a_child_process_the_reward_forks_still_exits():
    def forks(completions, **kwargs):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        return [float(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))] * len(completions)

    assert call(forks) == [7.0]


def test_a_signal_handler_that_exits_during_the_call_is_not_blamed_on_the_reward():
    """submitit's SIGUSR2 handler requeues the job and exits: that SystemExit passes through."""

    def requeue(signum, frame):
        sys.exit(-1)

    def waits(completions, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(5)
        return [0.0] * len(completions)

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(SystemExit) as info:
            call(waits)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert info.value.code == -1
