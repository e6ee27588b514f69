"""Runs resume from the newest complete checkpoint in their run dir: after a crash, a requeue, or SIGUSR2."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN, completed_run, interrupted, one_line_error, refused_in_process, run_cli
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.slow


def logged_steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


def rows_of(steps: range, every: int) -> list[int]:
    """The steps of the training rows logged of `steps`: each `every`-th step, and the last."""
    return sorted({*(step for step in steps if step % every == 0), steps[-1]})


def logged_losses(run_dir) -> dict[int, float]:
    """{step: training loss} of metrics.jsonl."""
    return {row["step"]: row["loss"] for row in read_jsonl(run_dir / "metrics.jsonl") if "loss" in row}


def test_rerun_resumes_from_the_last_complete_checkpoint(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=3", "algorithm.save_steps=3")
    before = json.loads((tmp_path / "metrics.json").read_text())["eval_before_accuracy"]
    assert (tmp_path / "checkpoints" / "checkpoint-3" / "COMPLETE").exists()
    (tmp_path / "checkpoints" / "checkpoint-9").mkdir()  # half-written: no COMPLETE marker, must be ignored
    resumed = run_cli("rlvr.run", *TINY_RUN, "algorithm.max_steps=6", "algorithm.save_steps=3", f"hydra.run.dir={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "missing keys" not in resumed.stderr  # the tiny model's LM head is tied to its embeddings: nothing was lost
    log = (tmp_path / "run.log").read_text()
    assert "resuming from" in log and "checkpoint-3" in log
    records = read_jsonl(tmp_path / "run_info.jsonl")  # the first start and its end are kept
    assert [r.get("mode") or r["ended"] for r in records] == ["new", "completed", "resume", "completed"]
    assert json.loads((tmp_path / "metrics.json").read_text())["eval_before_accuracy"] == before
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    rollout_steps = sorted({json.loads(line)["step"] for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()})
    assert rollout_steps == [1, 2, 3, 4, 5, 6]  # metrics.jsonl's steps
    again = refused_in_process(*TINY_RUN, "algorithm.max_steps=6", "algorithm.save_steps=3", f"hydra.run.dir={tmp_path}")
    assert "already holds a run trained to step 6 (algorithm.max_steps=6)" in one_line_error(again)
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]  # a finished run is not trained further by accident


def test_a_run_without_checkpoints_starts_over_after_a_crash_and_is_kept_once_finished(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=0")
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").glob("checkpoint-*"))
    again = refused_in_process(*TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=0", f"hydra.run.dir={tmp_path}")
    assert "already holds a finished GRPO run (it saved no checkpoint to continue from)" in one_line_error(again)
    for name in ("metrics.json", "train_result.json"):  # as if the first start had crashed while training
        (tmp_path / name).unlink()
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=0")
    assert logged_steps(tmp_path) == [1, 2]  # started over: the crashed start's rows are not kept beside the new ones
    eval_rows = [json.loads(line) for line in (tmp_path / "eval" / "before.jsonl").read_text().splitlines()]
    assert len(eval_rows) == 16  # dataset.max_eval_samples in TINY_RUN: one eval, not two appended


@pytest.mark.parametrize(
    ("stop", "exit_code", "logged"),
    [
        (signal.SIGUSR2, 75, "stopped by SIGUSR2 after saving checkpoint-"),  # EXIT_PREEMPTED: the launcher requeues
        (signal.SIGINT, 130, "stopped by Ctrl-C after saving checkpoint-"),
        # SIGTERM (kill, scancel: no requeue) takes Ctrl-C's path: test_local_launcher.py and the vLLM runs stop by it
    ],
)
def test_a_stop_signal_saves_a_checkpoint_and_the_rerun_continues(tmp_path, stop, exit_code, logged):
    """The signal goes to the whole process group, as a terminal's Ctrl-C and `scancel --signal` send
    it: math_verify's worker processes must not die of it and zero the step's rewards. Logged every 2
    steps, the step the stop saved at is logged whatever its parity (its steps were in no row)."""
    args = [
        *TINY_RUN,
        "algorithm.logging_steps=2",
        "algorithm.max_steps=400",
        "algorithm.save_steps=0",
        "eval.before=false",
        "reward=math_verify",
        f"hydra.run.dir={tmp_path}",
    ]
    path = tmp_path / "metrics.jsonl"
    returncode, stderr = interrupted(args, lambda: path.exists() and len(path.read_text().splitlines()) >= 3, stop=stop)
    assert returncode == exit_code, stderr[-2000:]
    assert logged in (tmp_path / "run.log").read_text() and "Traceback" not in stderr
    checkpoints = list((tmp_path / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMPLETE").exists(), stderr[-2000:]
    saved = int(checkpoints[0].name.split("-")[1])
    assert 6 <= saved < 400
    assert logged_steps(tmp_path) == rows_of(range(1, saved + 1), 2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(row["rewards/math_verify/error_frac"] == 0 for row in rows if "loss" in row)
    completed_run(tmp_path, *(a for a in args[:-1] if "max_steps" not in a), f"algorithm.max_steps={saved + 3}")
    assert logged_steps(tmp_path) == rows_of(range(1, saved + 1), 2) + rows_of(range(saved + 1, saved + 4), 2)  # no step repeated


def run_log_since_last_start(run_dir) -> str:
    """run.log of the latest start only (Hydra appends one log per start)."""
    return (run_dir / "run.log").read_text().rsplit("] - run dir ", 1)[1]


def test_a_resume_skips_the_warm_up_records_its_changes_and_totals_cover_every_start(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=2")
    first = json.loads((tmp_path / "metrics.json").read_text())
    refused = refused_in_process(*TINY_RUN, "algorithm.max_steps=4", "algorithm.save_steps=2", "seed=7", f"hydra.run.dir={tmp_path}")
    assert "checkpoint-2 was trained with other values of what it depends on (seed: 0 -> 7)" in one_line_error(refused)
    assert len(read_jsonl(tmp_path / "run_info.jsonl")) == 2  # the first start and its end: a refused start writes nothing
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=4", "algorithm.save_steps=2", "algorithm.temperature=0.9")
    log = run_log_since_last_start(tmp_path)
    assert "resuming: no SFT warm-up" in log and "SFT warm-up:" not in log
    starts = [record for record in read_jsonl(tmp_path / "run_info.jsonl") if "mode" in record]
    assert [s["mode"] for s in starts] == ["new", "resume"]
    temperature = starts[0]["config"]["algorithm"]["temperature"]
    assert starts[1]["changed"] == {"algorithm.temperature": [temperature, 0.9], "algorithm.max_steps": [2, 4]}
    assert starts[1]["config"]["algorithm"]["temperature"] == 0.9
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["warmup_sft_loss"] == first["warmup_sft_loss"]  # from the first start, which warmed up
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert metrics["train_logged_steps"] == 4 and metrics["train_seconds"] == sum(r["step_seconds"] for r in rows)
    assert metrics["train_loss"] == pytest.approx(sum(r["loss"] for r in rows) / 4)


def test_a_run_stopped_during_its_final_eval_is_finished_by_the_rerun(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=0")
    expected = json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "metrics.json").unlink()  # stopped while evaluating: no metrics.json, a partial eval
    (tmp_path / "eval" / "after.jsonl").write_text((tmp_path / "eval" / "after.jsonl").read_text().splitlines()[0])
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=0")
    assert "doing what is missing" in run_log_since_last_start(tmp_path)
    assert logged_steps(tmp_path) == [1, 2]  # nothing trained again
    assert json.loads((tmp_path / "metrics.json").read_text()) == expected
    assert len((tmp_path / "eval" / "after.jsonl").read_text().splitlines()) == 16


def test_a_run_stopped_after_its_last_checkpoint_is_finished_from_it(tmp_path):
    from safetensors.torch import load_file

    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=2")
    for name in ("metrics.json", "train_result.json"):  # stopped after checkpoint-2, before the final model
        (tmp_path / name).unlink()
    (tmp_path / "final_model" / "config.json").unlink()
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=2")
    assert "checkpoint-2 is the end of training: restoring it" in run_log_since_last_start(tmp_path)
    assert logged_steps(tmp_path) == [1, 2]  # no step trained past max_steps
    final = load_file(tmp_path / "final_model" / "model.safetensors")
    saved = load_file(tmp_path / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert final.keys() == saved.keys() and all((final[k] == saved[k]).all() for k in final)
    assert json.loads((tmp_path / "metrics.json").read_text())["train_steps"] == 2


def test_a_second_run_in_a_busy_run_dir_is_refused_naming_the_holder(tmp_path):
    args = [
        sys.executable,
        "-m",
        "rlvr.run",
        *TINY_RUN,
        "algorithm.max_steps=400",
        "algorithm.save_steps=0",
        "eval.before=false",
        f"hydra.run.dir={tmp_path}",
    ]
    first = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
            time.sleep(0.2)
        config = (tmp_path / "config_resolved.yaml").read_text()
        second = refused_in_process(*TINY_RUN, "algorithm.max_steps=3", f"hydra.run.dir={tmp_path}")
        assert f"is in use by another run: pid {first.pid} on " in one_line_error(second)
        assert (tmp_path / "config_resolved.yaml").read_text() == config  # the refused start wrote nothing
        assert first.poll() is None  # and the first run trains on
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    steps = logged_steps(tmp_path)
    assert steps == list(range(1, len(steps) + 1))
    assert not (tmp_path / ".rlvr.lock").exists()  # released by the first run's exit


# Runs rlvr with the Trainer dying (as a node does) right after it wrote checkpoint-4, before rlvr marks it complete.
CRASH_AFTER_WRITING_4 = """
import os, sys
from transformers import Trainer
write = Trainer._save_checkpoint
def write_then_die(self, *args, **kwargs):
    write(self, *args, **kwargs)
    if self.state.global_step == 4:
        os._exit(3)
Trainer._save_checkpoint = write_then_die
from rlvr.run import main
sys.argv[0] = "rlvr"
main()
"""


def test_a_crash_before_the_new_checkpoint_is_complete_leaves_the_previous_one(tmp_path):
    """save_total_limit=1: the old checkpoint goes only once the new one is complete."""
    args = [*TINY_RUN, "model.warmup_sft_steps=0", "eval.before=false", "algorithm.save_total_limit=1", f"hydra.run.dir={tmp_path}"]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_WRITING_4, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert crashed.returncode == 3, crashed.stderr[-2000:]
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "checkpoint-2" / "COMPLETE").exists() and not (checkpoints / "checkpoint-4" / "COMPLETE").exists()
    completed_run(tmp_path, *args, "algorithm.max_steps=5", "algorithm.save_steps=5")
    assert "resuming from" in (tmp_path / "run.log").read_text() and logged_steps(tmp_path) == [1, 2, 3, 4, 5]
    assert [p.name for p in checkpoints.glob("checkpoint-*")] == ["checkpoint-5"]  # rotated once 5 was complete


def test_ctrl_c_in_the_sft_warm_up_and_twice_in_training_is_one_line_and_exit_130(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    warm_up = [*TINY_RUN, "model.warmup_sft_steps=500", f"hydra.run.dir={tmp_path / 'warm-up'}"]
    # Steps long enough (1024 completions, ~0.3 s) for the second Ctrl-C to land before the step ends.
    training = [
        *TINY_RUN,
        "model.warmup_sft_steps=0",
        "eval.before=false",
        "algorithm.max_steps=400",
        "algorithm.save_steps=0",
        "algorithm.per_device_train_batch_size=1024",
        "algorithm.num_generations=8",
        f"hydra.run.dir={tmp_path / 'training'}",
    ]
    for args, started, stops, said in [
        (warm_up, lambda: any((tmp_path / "tmp").glob("rlvr-warmup-*")), 1, "Ctrl-C during the SFT warm-up"),
        (
            training,
            lambda: (tmp_path / "training" / "metrics.jsonl").exists(),
            2,
            "Ctrl-C during training, before the requested checkpoint",
        ),
    ]:
        returncode, stderr = interrupted(args, started, stops, env=env)
        assert returncode == 130, stderr[-2000:]
        assert [line for line in stderr.splitlines() if line.startswith("rlvr:")] == [
            f"rlvr: {said}: stopped at once; the same command with hydra.run.dir={args[-1].split('=')[1]} "
            f"continues from its newest complete checkpoint, if any"
        ], stderr[-2000:]
        assert "Traceback" not in stderr and stderr.count("Warning") + stderr.count("WARNING") <= 2, stderr[-2000:]
        assert read_jsonl(Path(args[-1].split("=")[1]) / "run_info.jsonl")[-1]["ended"] == "stopped by Ctrl-C"


FAILS_IN_EVAL = """
def train_only(completions, trainer_state=None, **kwargs):
    if trainer_state is None:  # the eval after training passes no trainer state
        raise RuntimeError("no eval today")
    return [0.0] * len(completions)
"""


def test_a_continued_run_stopped_in_its_final_eval_is_finished_and_can_raise_beta(tmp_path):
    """A finished run continued with a higher max_steps (and a KL term it did not have) that stops in
    its final eval: the rerun evaluates the step-4 model, not the step-2 one, and is not refused."""
    (tmp_path / "user_rewards.py").write_text(FAILS_IN_EVAL)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}
    run_dir = tmp_path / "run"
    completed_run(run_dir, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=2")
    stopped = run_cli(
        "rlvr.run",
        *TINY_RUN,
        "algorithm.max_steps=4",
        "algorithm.save_steps=2",
        "algorithm.beta=0.04",
        "reward.functions.gsm8k_flexible._target_=user_rewards.train_only",
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    assert "reward 'gsm8k_flexible' raised RuntimeError: no eval today" in one_line_error(stopped)
    assert not (run_dir / "metrics.json").exists()  # the step-2 metrics are not this run's any more
    completed_run(run_dir, *TINY_RUN, "algorithm.max_steps=4", "algorithm.save_steps=2", "algorithm.beta=0.04")
    assert "doing what is missing" in run_log_since_last_start(run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == 4
    assert logged_steps(run_dir) == [1, 2, 3, 4]


def test_a_stop_inside_a_generation_checkpoints_at_its_end_and_continues_as_the_run_would(tmp_path):
    """steps_per_generation=3: TRL trains three steps on one generation's completions, held in memory.
    The Ctrl-C checkpoint waits for the generation's last step, and the continued run logs the losses
    an uninterrupted run logs (a checkpoint inside the generation continued with a new one)."""
    spg = [*TINY_RUN, "algorithm.steps_per_generation=3", "algorithm.save_steps=0", "eval.before=false", "eval.after=false"]
    stopped = tmp_path / "stopped"

    def four_steps_logged():
        return (stopped / "metrics.jsonl").exists() and len(logged_steps(stopped)) >= 4

    returncode, stderr = interrupted([*spg, "algorithm.max_steps=300", f"hydra.run.dir={stopped}"], four_steps_logged)
    assert returncode == 130, stderr[-2000:]
    [checkpoint] = (stopped / "checkpoints").glob("checkpoint-*")
    saved = int(checkpoint.name.split("-")[1])
    assert saved % 3 == 0 and logged_steps(stopped) == list(range(1, saved + 1))
    completed_run(stopped, *spg, f"algorithm.max_steps={saved + 3}")
    uninterrupted = completed_run(tmp_path / "uninterrupted", *spg, f"algorithm.max_steps={saved + 3}")
    assert list(logged_losses(stopped).values()) == pytest.approx(list(logged_losses(uninterrupted).values()), abs=1e-6)


def test_a_run_continued_on_other_eval_prompts_does_not_set_its_before_beside_its_after(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=2")
    assert "eval_before_accuracy" in json.loads((tmp_path / "metrics.json").read_text())
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=4", "algorithm.save_steps=2", "dataset.max_eval_samples=4")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "eval_after_accuracy" in metrics and not [k for k in metrics if k.startswith("eval_before_")]
    assert "eval_before_* are left out of metrics.json" in (tmp_path / "run.log").read_text()
    assert len(read_jsonl(tmp_path / "eval" / "before.jsonl")) == 16  # kept as the first start wrote it


@pytest.mark.parametrize(
    "geometry",
    [
        # 3 steps an epoch: a resume in the second epoch draws its order as the uninterrupted run did
        ["dataset.generator.num_train=12"],
        # 3 batches a generation, 2 a step, 9 an epoch (its last step takes 1): save_steps=2 falls inside
        # generations; the checkpoints wait for their ends, also where epochs shift them
        ["dataset.generator.num_train=36", "algorithm.steps_per_generation=3", "algorithm.gradient_accumulation_steps=2"],
        # 12 batches, 6 steps an epoch: continued in the second epoch
        ["dataset.generator.num_train=48", "algorithm.steps_per_generation=3", "algorithm.gradient_accumulation_steps=2"],
    ],
)
def test_a_continued_run_trains_what_the_uninterrupted_run_trains(tmp_path, geometry):
    args = [*TINY_RUN, *geometry, "algorithm.save_steps=2", "eval.before=false", "eval.after=false", "dataset.max_eval_samples=4"]
    first_steps = 8 if "dataset.generator.num_train=48" in geometry else 4  # ends inside a generation (the second case)
    completed_run(tmp_path / "first", *args, f"algorithm.max_steps={first_steps}")
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "first" / "checkpoints").glob("checkpoint-*"))
    continued = completed_run(tmp_path / "first", *args, "algorithm.max_steps=11")
    uninterrupted = completed_run(tmp_path / "uninterrupted", *args, "algorithm.max_steps=11")

    assert list(logged_losses(continued)) == list(logged_losses(uninterrupted)) == list(range(1, 12))
    assert list(logged_losses(continued).values()) == pytest.approx(list(logged_losses(uninterrupted).values()), abs=1e-6), saved
