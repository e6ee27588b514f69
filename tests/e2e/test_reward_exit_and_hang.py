"""A user's reward that ends the process, or never returns, inside a real run (no `timeout_s`: it runs in the
training process): one line naming the reward, and a stop that waits for it a bounded time."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_RUN, one_line_error, run_cli

pytestmark = pytest.mark.slow

USER_REWARDS = """
import os
import sys
import time
from pathlib import Path


def exits(completions, **kwargs):
    os._exit(3)


def raises_system_exit(completions, **kwargs):
    sys.exit(3)


def hangs_after_two_steps(completions, trainer_state=None, **kwargs):
    if trainer_state is not None and trainer_state.global_step >= 2:
        Path(os.environ["HANG_MARKER"]).touch()
        time.sleep(3600)
    return [float(len(c) % 2) for c in completions]
"""
FIX = "a reward must return its scores, not end the run; give it timeout_s to run it in a worker process, where an exit scores None"


def user_env(tmp_path, **extra) -> dict:
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p), **extra}


@pytest.mark.parametrize(
    ("function", "what", "line"), [("exits", "called os._exit(3)", 9), ("raises_system_exit", "raised SystemExit(3)", 13)]
)
def test_a_reward_that_ends_the_process_stops_the_run_in_one_line_naming_it(tmp_path, function, what, line):
    result = run_cli(
        "rlvr.run",
        *TINY_RUN,
        "eval.before=false",
        "model.warmup_sft_steps=0",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"reward.functions.gsm8k_flexible._target_=user_rewards.{function}",
        env=user_env(tmp_path),
    )
    error = one_line_error(result)
    assert error == f"rlvr: error: reward 'gsm8k_flexible' {what} (at {(tmp_path / 'user_rewards.py').resolve()}:{line}): {FIX}"
    assert error.removeprefix("rlvr: error: ") in (tmp_path / "run" / "run.log").read_text()  # kept for whoever looks later
    assert not (tmp_path / "run" / ".rlvr.lock").exists()  # an ordinary end: the next start finds the run dir free


def test_sigterm_waits_a_bounded_time_for_a_hanging_reward_and_says_so(tmp_path):
    """SLURM's scancel or time limit: SIGTERM to every process of the job, SIGKILL KillWait (30 s by
    default) later. A reward that never returns must not cost the run its exit code and its last line."""
    run_dir, marker = tmp_path / "run", tmp_path / "hanging"
    args = [
        sys.executable,
        "-m",
        "rlvr.run",
        *TINY_RUN,
        "eval.before=false",
        "model.warmup_sft_steps=0",
        "algorithm.max_steps=4",
        "algorithm.save_steps=2",
        f"hydra.run.dir={run_dir}",
        "reward.functions.gsm8k_flexible._target_=user_rewards.hangs_after_two_steps",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **user_env(tmp_path, HANG_MARKER=str(marker))}
    with open(tmp_path / "stderr", "w+") as stderr:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and not marker.exists() and process.poll() is None:
                time.sleep(0.2)
            assert marker.exists(), (tmp_path / "stderr").read_text()[-2000:]
            time.sleep(1)
            stopped = time.time()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
            waited = time.time() - stopped
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        stderr.seek(0)
        said = stderr.read()
    assert process.returncode == 143, said[-2000:]
    assert 20 <= waited < 30, waited  # the reward had its 20 s, and the run ended before SLURM's SIGKILL
    assert [line for line in said.splitlines() if line.startswith("rlvr:")] == [
        f"rlvr: SIGTERM during training: gave up waiting for reward 'gsm8k_flexible' after 20 s (give it timeout_s "
        f"to bound it); the same command with hydra.run.dir={run_dir} continues from its newest complete checkpoint, "
        f"if any"
    ], said[-2000:]
    assert "Traceback" not in said
    assert re.search(
        r"SIGTERM: waiting for reward 'gsm8k_flexible' \(running for \d+ s\) to finish the step; "
        r"giving up in (19|20) s",
        (run_dir / "run.log").read_text(),
    )
    assert [p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    assert (run_dir / "checkpoints" / "checkpoint-2" / "COMPLETE").exists()
    assert not (run_dir / ".rlvr.lock").exists()
