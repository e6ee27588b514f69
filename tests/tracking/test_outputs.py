"""The `logging` group as wandb's own environment variables, and the checks made before training."""

import json
import math
import os
import sys
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from rlvr.config import LoggingConfig
from rlvr.errors import ConfigError
from rlvr.tracking.outputs import check_wandb, metrics_callback, read_jsonl, setup_wandb


@pytest.fixture
def clean_wandb_env(monkeypatch, tmp_path):
    """No stored key anywhere wandb looks: an empty home, config dir and netrc. (setup_wandb writes
    os.environ itself: conftest.environment_kept puts it back after each test.)"""
    for var in ("API_KEY", "MODE", "DIR", "PROJECT", "NAME", "ENTITY", "RUN_ID", "RESUME", "RUN_GROUP"):
        monkeypatch.delenv(f"WANDB_{var}", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def logging_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(LoggingConfig), overrides)


def test_offline_mode_is_wandbs_own_in_the_run_dir(clean_wandb_env, tmp_path):
    assert setup_wandb(logging_cfg(wandb="offline", project="p"), tmp_path / "run", "run-1") == ["wandb"]
    assert (os.environ["WANDB_MODE"], os.environ["WANDB_DIR"], os.environ["WANDB_PROJECT"]) == ("offline", str(tmp_path / "run"), "p")


def test_each_run_in_one_process_writes_its_wandb_files_into_its_own_run_dir(clean_wandb_env, tmp_path, monkeypatch):
    """Hydra's basic launcher runs a `-m` run's jobs one after another in one process."""
    import wandb

    monkeypatch.setattr(sys, "exit", sys.exit)  # wandb.init wraps both, for good: put back for later tests
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    try:
        for job in ("0", "1"):
            setup_wandb(logging_cfg(wandb="offline"), tmp_path / job, job)
            wandb.init(name=job)
            wandb.finish()
    finally:
        wandb.teardown()
    assert sorted(run.parts[-3] for run in tmp_path.glob("*/wandb/offline-run-*")) == ["0", "1"]


def start(run_dir, mode):
    run_dir.mkdir(exist_ok=True)
    with open(run_dir / "run_info.jsonl", "a") as info:  # each start's line, after the first's
        info.write(f'{{"mode": "{mode}", "run": "{run_dir.name}"}}\n')


def test_the_starts_of_a_run_are_one_wandb_group_offline(clean_wandb_env, tmp_path):
    """A continued run made an ungrouped second wandb run. Offline, each start stays a run of its own:
    `wandb sync` of two offline runs with one id keeps only the last one's history."""
    import wandb

    runs = []
    try:
        for run, mode in [("a", "new"), ("a", "resume"), ("b", "new")]:
            start(tmp_path / run, mode)
            setup_wandb(logging_cfg(wandb="offline"), tmp_path / run, run)
            wandb.init()
            runs.append((wandb.run.id, wandb.run.group))
            wandb.finish()
    finally:
        wandb.teardown()
    assert len({run_id for run_id, _ in runs}) == 3
    assert runs[0][1] == runs[1][1] != runs[2][1]


def test_the_starts_of_a_run_are_one_wandb_run_online(clean_wandb_env, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    ids = []
    for run, mode in [("a", "new"), ("a", "resume"), ("b", "new")]:
        start(tmp_path / run, mode)
        setup_wandb(logging_cfg(wandb="online"), tmp_path / run, run)
        ids.append((os.environ["WANDB_RUN_ID"], os.environ["WANDB_RESUME"]))
    assert ids[0] == ids[1] != ids[2] and ids[0][1] == "allow"


def test_online_mode_without_a_key_is_refused_at_start_up(clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the shell's: logging.wandb=online is asked for all the same
    with pytest.raises(ConfigError, match=r"logging.wandb=online: .*API key.*logging=offline"):
        check_wandb(logging_cfg(wandb="online"))


def test_online_mode_with_a_key_needs_no_network(clean_wandb_env, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    check_wandb(logging_cfg(wandb="online"))
    assert setup_wandb(logging_cfg(wandb="online"), tmp_path, "run-1") == ["wandb"]


def test_disabled_reports_nowhere(clean_wandb_env, tmp_path):
    assert setup_wandb(logging_cfg(wandb="disabled"), tmp_path, "run-1") == []
    assert "WANDB_MODE" not in os.environ


def test_a_torn_last_line_is_dropped_with_one_warning_naming_the_file(tmp_path, caplog):
    from rlvr.tracking.outputs import read_jsonl, truncate_jsonl

    path = tmp_path / "rollouts.jsonl"
    path.write_bytes(b'{"step": 0}\n{"step": 1}\n{"step": 2, "completion": "\xc3')  # a full disk: cut mid-character
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: dropped a torn last line (28 bytes; a write cut short by a crash or a full disk)"
    ]
    truncate_jsonl(path, keep=lambda row: True)  # what a resume does: the file is whole again
    assert path.read_text() == '{"step": 0}\n{"step": 1}\n'


def test_a_bad_line_before_the_last_is_corruption_named_by_file_and_line(tmp_path):
    from rlvr.errors import DataError
    from rlvr.tracking.outputs import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(DataError, match=rf"^{path} line 2 is not a JSON row \(.*\): the file is corrupt; delete or fix that line$"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n5\n')  # JSON, not a row: a reader's row["step"] was a TypeError traceback
    with pytest.raises(DataError, match=rf"^{path} line 2 is not a JSON row \(a JSON int, not an object\): delete or fix that line$"):
        read_jsonl(path)


def test_appending_after_a_torn_line_keeps_every_whole_row(tmp_path, caplog):
    from rlvr.tracking.outputs import JsonlWriter, read_jsonl

    torn, unterminated = tmp_path / "torn.jsonl", tmp_path / "unterminated.jsonl"
    torn.write_text('{"a": 1}\n' + "x" * 70000 + '{"b": ')  # a tail longer than one read of drop_torn_tail
    unterminated.write_text('{"a": 1}\n{"b": 2}')  # a whole row that only lost its newline
    for path in (torn, unterminated):
        writer = JsonlWriter(path)
        writer.write([{"c": 3}])
        writer.close()
    assert read_jsonl(torn) == [{"a": 1}, {"c": 3}]
    assert read_jsonl(unterminated) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert [r.getMessage() for r in caplog.records] == [
        f"{torn}: dropped a torn last line (70006 bytes; a write cut short by a crash or a full disk)"
    ]


def test_a_resume_after_a_torn_rollout_line_goes_on(tmp_path, caplog):
    """`reuse_run_dir` is what every resume calls first: it died in a JSONDecodeError traceback."""
    from rlvr.recipes.common import reuse_run_dir

    (tmp_path / "rollouts.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "comp')
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0}\n{"step": 2, "lo')
    reuse_run_dir(tmp_path, 2)
    assert (tmp_path / "rollouts.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0}\n'
    assert len(caplog.records) == 2


def test_rows_logged_every_few_steps_give_the_training_time_of_every_step(tmp_path, monkeypatch):
    """With logging_steps=2, `step_seconds` was the logged step's time alone, and train_seconds the sum of
    those: half the training time (a reward model's preset logs every 10 steps: a tenth)."""
    import threading
    import time

    from rlvr.recipes.common import training_curve_summary
    from rlvr.tracking.outputs import metrics_callback

    callback = metrics_callback(tmp_path / "metrics.jsonl")  # before the clock is faked: it imports transformers
    clock, real, here = iter([0.0, 1.0, 3.0, 6.0, 10.0]), time.perf_counter, threading.get_ident()
    # the first step begins at 0, the steps end at 1, 3, 6 and 10 (in this thread: other threads time their own work)
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock) if threading.get_ident() == here else real())
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, max_steps=4)
    for step in range(1, 5):
        if step == 1:
            callback.on_step_begin(None, state, None)
        state.global_step, control = step, SimpleNamespace(should_log=False)
        callback.on_step_end(None, state, control)
        assert control.should_log == (step == 4)  # the last step is logged, whatever logging_steps is
        if step % 2 == 0:
            callback.on_log(None, state, None, logs={"loss": float(step), "reward": 0.5})
    monkeypatch.undo()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step_seconds"] for row in rows] == [1.5, 3.5]  # (3 - 0) / 2, (10 - 3) / 2
    summary = training_curve_summary(tmp_path)
    assert summary["train_seconds"] == 10.0 and summary["train_loss"] == 3.0 and summary["train_logged_steps"] == 2


def test_the_reward_of_the_first_and_last_20_percent_is_of_steps_not_of_logged_rows(tmp_path):
    """10 steps logged every 5: the first 20% was the first row, the mean of steps 1-5 (half the run)."""
    from rlvr.recipes.common import training_curve_summary

    rows = [{"step": 5, "loss": 0.1, "reward": 0.2}, {"step": 10, "loss": 0.1, "reward": 0.8}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = training_curve_summary(tmp_path)
    assert (summary["train_reward_first20"], summary["train_reward_last20"]) == (0.2, 0.8)  # steps 1-2 and 9-10
    rows = [{"step": step, "loss": 0.1, "reward": float(step)} for step in (1, 2, 3, 4, 10)]  # the last row: 6 steps
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = training_curve_summary(tmp_path)
    assert (summary["train_reward_first20"], summary["train_reward_last20"]) == (1.5, 10.0)


def test_the_steps_after_the_last_multiple_of_logging_steps_are_logged_and_summed(tmp_path):
    """5 steps logged every 2: step 5 was in no training row (TRL put its reward in transformers'
    end-of-training row), so metrics.json's train_loss, train_seconds and train_reward_last20 left it out."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.config import TinyModelConfig
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
    from rlvr.recipes.common import training_curve_summary
    from rlvr.tracking.outputs import metrics_callback

    tokenizer = build_tiny_tokenizer()
    args = GRPOConfig(
        **dict(output_dir=str(tmp_path), max_steps=5, logging_steps=2, per_device_train_batch_size=4, num_generations=4),
        **dict(max_completion_length=3, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True),
    )
    trainer = GRPOTrainer(
        model=build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0),
        reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions],
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"prompt": f"{i}+1="} for i in range(8)]),
        callbacks=[metrics_callback(tmp_path / "metrics.jsonl")],
    )
    trainer.train()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows if "loss" in row] == [2, 4, 5]
    end = next(row for row in rows if "train_runtime" in row)
    assert "reward" not in end  # every step's metrics are in a training row
    assert training_curve_summary(tmp_path)["train_loss"] == pytest.approx(end["train_loss"], rel=1e-4)  # transformers' mean of 5 steps


def strict_json(text):
    """JSON as RFC 8259 has it: a bare NaN or Infinity is an error, as in jq or JavaScript."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_file_rlvr_writes_is_strict_json_with_null_for_nan_and_infinity(tmp_path):
    from rlvr.tracking.outputs import JsonlWriter, metrics_callback, write_json, write_jsonl

    values = {"accuracy": 1.0, "accuracy_se": math.nan, "nested": [{"low": -math.inf}, (math.inf, 2)], "name": "ü"}
    expected = {"accuracy": 1.0, "accuracy_se": None, "nested": [{"low": None}, [None, 2]], "name": "ü"}
    write_json(tmp_path / "metrics.json", values)
    write_jsonl(tmp_path / "rows.jsonl", [values])
    writer = JsonlWriter(tmp_path / "appended.jsonl")
    writer.write([values])
    writer.close()
    callback = metrics_callback(tmp_path / "metrics.jsonl")
    state = SimpleNamespace(global_step=3, is_world_process_zero=True)
    callback.on_log(None, state, None, logs=values)
    assert strict_json((tmp_path / "metrics.json").read_text()) == expected
    for name in ("rows.jsonl", "appended.jsonl"):
        assert [strict_json(line) for line in (tmp_path / name).read_text().splitlines()] == [expected]
    assert [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [{"step": 3, **expected}]


def test_numpy_and_torch_numbers_and_a_lone_surrogate_are_written_as_strict_json(tmp_path):
    """A numpy float32 NaN was the string "nan", a tensor "tensor(nan)"; a lone surrogate made write_json fail."""
    import numpy as np
    import torch

    from rlvr.tracking.outputs import write_json

    write_json(
        tmp_path / "m.json", {"a": np.float32("nan"), "b": np.int64(3), "c": torch.tensor(0.5), "d": torch.tensor(math.inf), "p": "\udcff"}
    )
    assert strict_json((tmp_path / "m.json").read_text()) == {"a": None, "b": 3, "c": 0.5, "d": None, "p": "\udcff"}


def test_what_reads_a_metrics_log_back_takes_its_nulls_as_nan(tmp_path):
    """A NaN loss or reward, written as null, failed the end of a run (training_curve_summary) and the sweep
    report's reward curves with a TypeError."""
    from rlvr.plots import plot_run
    from rlvr.recipes.common import training_curve_summary
    from rlvr.sweep_report import plot_reward_curves

    callback = metrics_callback(tmp_path / "0" / "metrics.jsonl")
    for step in range(1, 101):
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        callback.on_log(None, state, None, logs={"loss": math.nan if step == 50 else 0.5, "reward": math.nan if step == 60 else 1.0})
    summary = training_curve_summary(tmp_path / "0")
    assert math.isnan(summary["train_loss"]) and summary["train_reward_first20"] == 1.0 and summary["train_logged_steps"] == 100
    assert [path.name for path in plot_run(tmp_path / "0")] == ["reward.png"]
    plot_reward_curves(tmp_path, [{"job": 0, "swept": "lr=1"}], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").exists()


def test_an_uncertainty_read_back_as_null_is_left_out_of_tables_and_intervals():
    from rlvr.evaluation.metrics import interval95, with_uncertainty

    read_back = {"maj@2": 0.5, "maj@2_ci_low": None, "maj@2_ci_high": None, "accuracy": 1.0, "accuracy_se": None}
    assert [with_uncertainty(read_back, name) for name in ("maj@2", "accuracy")] == ["0.5", "1"]
    assert interval95(read_back, "maj@2") is None and interval95(read_back, "accuracy") is None
