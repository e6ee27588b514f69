"""The run-dir lock and the comparison of a resumed start's config with its checkpoint's (rlvr/tracking/run_dir.py)."""

import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import pytest

from rlvr.errors import ConfigError, DataError
from rlvr.tracking.provenance import run_info
from rlvr.tracking.run_dir import CHECKPOINT_CONFIG, LOCK_NAME, RunDirLock, process_start_time, resume_changes


def write_lock(run_dir, **holder):
    run_dir.mkdir(parents=True, exist_ok=True)
    defaults = {
        "job": "process:other",
        "host": socket.gethostname(),
        "pid": 1,
        "pid_started": None,
        "since": "2026-11-28T00:00:00",
        "command": "python -m rlvr.run",
    }
    (run_dir / LOCK_NAME).write_text(json.dumps(defaults | holder))


def dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    lock = RunDirLock(tmp_path).acquire()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
    assert holder["command"] == shlex.join(run_info()["command"])  # as typed, as run_info.jsonl records it (not run.py's path)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_refuses_the_run_in_one_line(tmp_path):
    write_lock(tmp_path, pid=1, pid_started=process_start_time(1))  # init: alive
    with pytest.raises(ConfigError) as info:
        RunDirLock(tmp_path).acquire()
    message = str(info.value)
    assert f"{tmp_path} is in use by another run: pid 1 on {socket.gethostname()}" in message
    assert "wait for it to end, or pick a new hydra.run.dir" in message and "\n" not in message


def test_a_holder_on_another_host_is_refused_with_how_to_clear_it(tmp_path):
    write_lock(tmp_path, host="node-17")
    with pytest.raises(ConfigError, match=f"pid 1 on node-17 .*if that job is gone, delete {tmp_path / LOCK_NAME}"):
        RunDirLock(tmp_path).acquire()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_log_line(tmp_path, caplog):
    write_lock(tmp_path, pid=dead_pid())
    with caplog.at_level(logging.WARNING, logger="rlvr.tracking.run_dir"):
        lock = RunDirLock(tmp_path).acquire()
    assert "taking over a stale lock" in caplog.text and "is gone" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_recycled_pid_is_not_mistaken_for_the_holder(tmp_path):
    write_lock(tmp_path, pid=os.getpid(), pid_started="1")  # this pid, but started at another time
    RunDirLock(tmp_path).acquire().release()


def test_an_earlier_start_of_the_same_slurm_job_is_taken_over(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    write_lock(tmp_path, job="slurm:4242:", host="node-3", pid=99)  # a requeue lands on any node
    with caplog.at_level(logging.WARNING, logger="rlvr.tracking.run_dir"):
        RunDirLock(tmp_path).acquire().release()
    assert "taking over the lock of an earlier start of this job (pid 99 on node-3)" in caplog.text


def test_a_live_run_of_the_same_slurm_job_on_this_host_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # two runs inside one allocation: not a requeue
    write_lock(tmp_path, job="slurm:4242:", pid=1, pid_started=process_start_time(1))
    with pytest.raises(ConfigError, match="is in use by another run: pid 1"):
        RunDirLock(tmp_path).acquire()


def test_a_rank_above_0_refuses_a_live_holder_at_once_and_waits_for_a_stale_one(tmp_path, monkeypatch):
    """Rank 0 refuses another job alive on this host at once, so its sibling does not wait 30 s; a
    dead holder's lock is rank 0's to take over, so the sibling waits for its job's lock."""
    monkeypatch.setattr("rlvr.tracking.run_dir.SIBLING_WAIT_S", 5.0)
    write_lock(tmp_path, pid=1, pid_started=process_start_time(1))  # init: alive
    began = time.monotonic()
    with pytest.raises(ConfigError, match="is in use by another run: pid 1"):
        RunDirLock(tmp_path, main_process=False).acquire()
    assert time.monotonic() - began < 1
    write_lock(tmp_path, pid=dead_pid())
    with pytest.raises(ConfigError, match="is in use by another run"):
        RunDirLock(tmp_path, main_process=False).acquire()
    assert time.monotonic() - began >= 5


@pytest.mark.parametrize("content", ["", '{"job": "local:1", "pi'])
def test_a_lock_left_empty_or_cut_short_is_named_as_such(tmp_path, content):
    """Killed between creating the lock and writing it: it was refused as held by "pid None on None since None"."""
    (tmp_path / LOCK_NAME).write_text(content)
    with pytest.raises(ConfigError) as refused:
        RunDirLock(tmp_path).acquire()
    assert str(refused.value) == (
        f"{tmp_path / LOCK_NAME} cannot be read (empty or cut short: a run that was killed as it took the lock?): "
        f"if no run uses {tmp_path}, delete it"
    )


def test_release_leaves_someone_elses_lock(tmp_path):
    lock = RunDirLock(tmp_path).acquire()
    write_lock(tmp_path, pid=1)
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def checkpoint_with(tmp_path, config):
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / CHECKPOINT_CONFIG).write_text(json.dumps(config))
    return checkpoint


CONFIG = {
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 64}},
    "seed": 0,
    "algorithm": {"learning_rate": 1e-4, "temperature": 1.0, "max_steps": 10, "num_generations": 8, "num_iterations": 1},
    "dataset": {"mixer": {"/data/b.jsonl": 40}},
    "hardware": {"nodes": 1, "tasks_per_node": 1},
}
TRAINED = CONFIG | {"processes": 1}  # what a checkpoint records: the config and its number of processes


def test_a_resume_may_change_what_the_checkpoint_does_not_depend_on(tmp_path, caplog):
    checkpoint = checkpoint_with(tmp_path, TRAINED)
    changed = {"algorithm": {**CONFIG["algorithm"], "temperature": 0.7, "max_steps": 20}}
    with caplog.at_level(logging.WARNING, logger="rlvr.tracking.run_dir"):
        assert resume_changes(CONFIG | changed, checkpoint, 1) == {"algorithm.max_steps": [10, 20], "algorithm.temperature": [1.0, 0.7]}
    assert "continuing checkpoint-3 with changed values: algorithm.max_steps: 10 -> 20" in caplog.text
    newer = CONFIG | {"logging": {"new_knob": True}}  # a key an older rlvr did not have is no change
    assert resume_changes(newer, checkpoint, 1) == {}
    assert resume_changes(CONFIG, checkpoint, 1) == {}
    evals = {"dataset": {"max_eval_samples": 50}}  # eval only: the training data is the same
    assert resume_changes(CONFIG | evals, checkpoint_with(tmp_path / "b", TRAINED | {"dataset": {"max_eval_samples": 9}}), 1) == {
        "dataset.max_eval_samples": [9, 50]
    }

    def fine_grained(**settings) -> dict:
        return {"algorithm": {**CONFIG["algorithm"], "fine_grained": settings}}

    trained = checkpoint_with(tmp_path / "c", TRAINED | fine_grained(strict=False, eps=1e-4))
    strict = fine_grained(strict=True, eps=1e-4)  # how malformed spans are reported: no change to what trained
    assert resume_changes(CONFIG | strict, trained, 1) == {"algorithm.fine_grained.strict": [False, True]}
    with pytest.raises(ConfigError, match=r"other values of what it depends on \(algorithm.fine_grained.eps: 0.0001 -> 0.01\)"):
        resume_changes(CONFIG | fine_grained(strict=False, eps=0.01), trained, 1)


def test_no_prompt_template_is_the_template_that_names_the_prompt_column(tmp_path):
    """A checkpoint trained with prompt_template "{question}" continues with none (the prompt column
    as it is, the same prompts); "{q}" over the column question would be other prompts."""
    dataset = {"prompt_column": "question", "prompt_template": "{question}"}
    checkpoint = checkpoint_with(tmp_path, TRAINED | {"dataset": dataset})
    assert resume_changes(CONFIG | {"dataset": dataset | {"prompt_template": None}}, checkpoint, 1) == {}
    with pytest.raises(ConfigError, match=r"dataset.prompt_template: '\{question\}' -> '\{q\}'"):
        resume_changes(CONFIG | {"dataset": {"prompt_column": "q", "prompt_template": None}}, checkpoint, 1)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model": {"name_or_path": "tiny", "tiny": {"hidden_size": 128}}}, "model.tiny.hidden_size: 64 -> 128"),
        ({"seed": 1}, "seed: 0 -> 1"),
        ({"algorithm": {**CONFIG["algorithm"], "num_generations": 4}}, "algorithm.num_generations: 8 -> 4"),
        ({"algorithm": {**CONFIG["algorithm"], "learning_rate": 3e-4}}, "algorithm.learning_rate: 0.0001 -> 0.0003"),
        ({"algorithm": {**CONFIG["algorithm"], "num_iterations": 2}}, "algorithm.num_iterations: 1 -> 2"),
        ({"dataset": {"mixer": {}}}, r"dataset.mixer: \{'/data/b.jsonl': 40\} -> \{\}"),
    ],
)
def test_a_resume_that_changes_what_the_checkpoint_depends_on_is_refused(tmp_path, change, named):
    checkpoint = checkpoint_with(tmp_path, TRAINED)
    with pytest.raises(ConfigError, match=f"{checkpoint} was trained with other values of what it depends on \\({named}\\)"):
        resume_changes(CONFIG | change, checkpoint, 1)


def test_a_resume_by_another_number_of_processes_is_refused_whatever_the_hardware_says(tmp_path):
    """torchrun's 2 processes (hardware.tasks_per_node=1) continued by one: the global batch would halve."""
    checkpoint = checkpoint_with(tmp_path, CONFIG | {"processes": 2})
    with pytest.raises(ConfigError, match=r"depends on \(processes: 2 -> 1\)"):
        resume_changes(CONFIG, checkpoint, 1)
    local_launcher = CONFIG | {"hardware": {"nodes": 1, "tasks_per_node": 2}}  # the same 2 processes, asked for
    assert resume_changes(local_launcher, checkpoint, 2) == {"hardware.tasks_per_node": [1, 2]}


def test_finishing_a_run_compares_with_the_config_of_its_last_training_start(tmp_path, caplog):
    """A run killed in its final eval, finished with another learning rate: it started in `finish` mode
    with `"changed": {}` and recorded 0.01 as the learning rate of a model trained at 1e-4."""
    starts = [
        {"mode": "new", "config": CONFIG | {"seed": 5}},
        {"mode": "resume", "config": CONFIG},
        {"ended": "stopped by SIGTERM"},
        {"mode": "finish", "config": CONFIG | {"seed": 7}},  # an earlier finish trained nothing
    ]
    (tmp_path / "run_info.jsonl").write_text("".join(json.dumps(start) + "\n" for start in starts))
    faster = CONFIG | {"algorithm": {**CONFIG["algorithm"], "learning_rate": 1e-2}}
    with pytest.raises(ConfigError, match=f"^the final model in {tmp_path} was trained with other values .*learning_rate: 0.0001 -> 0.01"):
        resume_changes(faster, None, 1, final_model_in=tmp_path)
    cooler = CONFIG | {"algorithm": {**CONFIG["algorithm"], "temperature": 0.7}}
    with caplog.at_level(logging.WARNING, logger="rlvr.tracking.run_dir"):
        assert resume_changes(cooler, None, 1, final_model_in=tmp_path) == {"algorithm.temperature": [1.0, 0.7]}
    assert f"continuing the final model in {tmp_path} with changed values" in caplog.text


def test_a_job_dir_continued_at_another_point_of_its_sweep_is_refused(tmp_path):
    """A swept key, or a key of a swept group (`reward=a,b`: its leaves), may not change in a job dir;
    an unswept one may (a raised max_steps)."""
    checkpoint = checkpoint_with(tmp_path, TRAINED)
    raised = CONFIG | {"algorithm": {**CONFIG["algorithm"], "temperature": 0.7, "max_steps": 20}}
    assert resume_changes(raised, checkpoint, 1, swept=["seed"]) == {"algorithm.max_steps": [10, 20], "algorithm.temperature": [1.0, 0.7]}
    with pytest.raises(ConfigError, match=r"another point of this sweep \(algorithm.temperature: 1.0 -> 0.7\)"):
        resume_changes(raised, checkpoint, 1, swept=["algorithm.temperature"])
    with pytest.raises(ConfigError, match=r"another point of this sweep \(algorithm.max_steps: 10 -> 20, algorithm.temperature"):
        resume_changes(raised, checkpoint, 1, swept=["algorithm"])


def test_a_finished_run_gives_its_metrics_only_to_a_start_with_its_config(tmp_path):
    from rlvr.tracking.run_dir import RUN_INFO, finished_result

    (tmp_path / "metrics.json").write_text('{"eval_after_accuracy": 0.5}')
    start = {"config": CONFIG}
    (tmp_path / RUN_INFO).write_text(json.dumps(start) + "\n" + json.dumps({"ended": "completed"}) + "\n")
    assert finished_result(tmp_path, CONFIG) == {"eval_after_accuracy": 0.5}
    assert finished_result(tmp_path, CONFIG | {"seed": 1}) is None
    (tmp_path / RUN_INFO).write_text(json.dumps(start) + "\n" + json.dumps({"ended": "stopped by Ctrl-C"}) + "\n")
    assert finished_result(tmp_path, CONFIG) is None


def test_a_first_start_is_not_refused_for_hydras_log_or_a_run_far_above(tmp_path):
    """A project root that holds a run's run_info.jsonl (an earlier `hydra.run.dir=.`) refused every
    run under outputs/DATE/TIME as inside it; a job's log is named after hydra.job.name."""
    from rlvr.tracking.run_dir import check_run_dir

    (tmp_path / "run_info.jsonl").write_text("{}\n")
    nested = tmp_path / "outputs" / "2026-12-05" / "10-00-00"
    nested.mkdir(parents=True)
    (nested / "sweep_job.log").write_text("")
    check_run_dir(nested, "grpo")
    with pytest.raises(ConfigError, match="is inside the run dir"):
        check_run_dir(tmp_path / "outputs" / "new", "grpo")


def test_a_training_data_file_written_anew_is_a_change_a_resume_refuses_and_a_copy_is_not(tmp_path):
    """`trained_config` records the digest of each local training file's bytes: other gold answers
    in the same file are refused as a changed setting is; the same bytes elsewhere (a node's local
    copy, a new modification time) are the same data; an eval-only file is no training data."""
    from omegaconf import OmegaConf

    from rlvr.tracking.run_dir import trained_config

    data, held_out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    data.write_text('{"q": "1+1=", "a": "2"}\n')
    held_out.write_text('{"q": "2+2=", "a": "4"}\n')
    cfg = OmegaConf.create({"dataset": {"source": str(data), "mixer": None, "eval_source": str(held_out)}, "seed": 0})
    checkpoint = checkpoint_with(tmp_path / "run", trained_config(cfg))
    os.utime(data, ns=(0, data.stat().st_mtime_ns + 10**9))  # touched: the same bytes
    held_out.write_text('{"q": "2+2=", "a": "5"}\n')
    assert resume_changes(trained_config(cfg), checkpoint, 1) == {}
    data.write_text('{"q": "1+1=", "a": "7"}\n')
    with pytest.raises(ConfigError, match=rf"other values of what it depends on \(data_files\.{data}: '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        resume_changes(trained_config(cfg), checkpoint, 1)


def test_a_local_model_saved_anew_is_a_change_a_resume_refuses(tmp_path):
    """A LoRA run's checkpoints hold the adapter alone: the base at model.name_or_path, saved anew (the
    run it came from continued), took the adapter silently, and evals ended at other numbers."""
    from omegaconf import OmegaConf

    from rlvr.tracking.run_dir import trained_config

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights 1")
    (base / "config.json").write_text("{}")
    cfg = OmegaConf.create({"dataset": {"source": "builtin:arithmetic", "mixer": None}, "model": {"name_or_path": str(base)}, "seed": 0})
    checkpoint = checkpoint_with(tmp_path / "run", trained_config(cfg))
    os.utime(base / "model.safetensors", ns=(0, 10**9))  # touched, or copied: the same bytes
    assert resume_changes(trained_config(cfg), checkpoint, 1) == {}
    (base / "model.safetensors").write_bytes(b"weights 2")
    weights = base / "model.safetensors"
    with pytest.raises(ConfigError, match=rf"other values of what it depends on \(model_files\.{weights}: '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        resume_changes(trained_config(cfg), checkpoint, 1)
    assert trained_config(OmegaConf.merge(cfg, {"model": {"name_or_path": "tiny"}}))["model_files"] == {}


def test_a_resume_with_other_sharding_is_refused_naming_it(tmp_path):
    """A ZeRO-3 checkpoint resumed under FSDP died in torch (no pytorch_model_fsdp_0/); without sharding it
    trained on with a fresh optimizer (ZeRO keeps its state in global_stepN/, which transformers skips unseen)."""
    zero3 = CONFIG | {"hardware": {**CONFIG["hardware"], "sharding": "zero3"}}
    checkpoint = checkpoint_with(tmp_path, zero3 | {"processes": 2})
    for other in ("fsdp", "none"):
        with pytest.raises(ConfigError, match=f"hardware.sharding: 'zero3' -> '{other}'"):
            resume_changes(CONFIG | {"hardware": {**CONFIG["hardware"], "sharding": other}}, checkpoint, 2)
    assert resume_changes(zero3, checkpoint, 2) == {}


def test_the_run_dir_of_another_algorithms_run_is_refused(tmp_path):
    """A reward model started in a stopped fgrpo run's dir was a new run there: it replaced the fgrpo
    run's metrics.jsonl and rollouts.jsonl and left its checkpoints beside a reward model."""
    from rlvr.tracking.run_dir import RUN_INFO, check_run_dir

    start = {"mode": "new", "config": {"algorithm": {"name": "fgrpo"}}}
    (tmp_path / RUN_INFO).write_text(json.dumps(start) + "\n" + json.dumps({"ended": "stopped by Ctrl-C"}) + "\n")
    check_run_dir(tmp_path, "fgrpo")
    with pytest.raises(
        ConfigError, match=r"holds an algorithm=fgrpo run \(run_info.jsonl\): an algorithm=reward_model run is not continued"
    ):
        check_run_dir(tmp_path, "reward_model")


@pytest.mark.parametrize(
    ("name", "make", "kind"),
    [
        ("run_info.jsonl", os.mkfifo, "not a regular file (a FIFO"),
        ("rollouts.jsonl", os.mkfifo, "not a regular file (a FIFO"),
        ("eval/before.jsonl", os.mkfifo, "not a regular file (a FIFO"),
        ("metrics.jsonl", os.mkdir, "a directory"),
    ],
)
def test_a_file_of_the_run_that_is_a_fifo_or_a_directory_is_refused_at_start_up(tmp_path, name, make, kind):
    """A FIFO in its place hung the run for ever (at start-up or at the first write); a directory failed it
    in a traceback after the model loaded. rlvr.plots hung on a FIFO metrics.jsonl the same way."""
    from rlvr.tracking.outputs import read_jsonl
    from rlvr.tracking.run_dir import check_run_dir

    (tmp_path / "eval").mkdir()
    (tmp_path / "run_info.jsonl").write_text("")
    (tmp_path / name).unlink(missing_ok=True)
    make(tmp_path / name)
    expected = rf"^{tmp_path / name} is {re.escape(kind)}.*, where rlvr reads and writes a file of rows: move it away$"
    with pytest.raises(DataError, match=expected):
        check_run_dir(tmp_path, "grpo")
    with pytest.raises(DataError, match=expected):
        read_jsonl(tmp_path / name)


def test_a_failure_of_the_run_dirs_storage_is_one_line_saying_how_to_continue(tmp_path, monkeypatch):
    """A full disk, a read-only run dir or one deleted under the run ended in a traceback "of a bug",
    exit 1 (torch.save's own words for a full disk: "unexpected pos 190848 vs 190740", no OSError). Another
    disk's failure (the Hub cache's, /dev/shm's) is not the run dir's: its traceback stays."""
    import errno
    import shutil
    from collections import namedtuple

    from rlvr.tracking.run_dir import storage_failure

    def raised(exc, cause):
        exc.__cause__ = cause  # `raise exc from cause`
        return exc

    continues = f"then the same command with hydra.run.dir={tmp_path} continues the run from its newest complete checkpoint"
    full = f"no space left on the disk of the run dir {tmp_path}: free some, {continues}"
    named = raised(RuntimeError("wrapped"), OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "rollouts.jsonl")))
    assert str(storage_failure(named, tmp_path)) == full
    torch_words = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 190848 vs 190740")
    assert storage_failure(torch_words, tmp_path) is None  # this disk has room: not a full disk's failure
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30, 4096))
    assert str(storage_failure(torch_words, tmp_path)) == full
    monkeypatch.undo()
    read_only = raised(ValueError("wrapped"), OSError(errno.EROFS, "Read-only file system", str(tmp_path / "metrics.jsonl")))
    assert str(storage_failure(read_only, tmp_path)) == (
        f"cannot write {tmp_path / 'metrics.jsonl'} (Read-only file system): make the run dir writable, {continues}"
    )
    others = [
        PermissionError(errno.EACCES, "Permission denied", "/root/.cache/huggingface/hub/.locks/x.lock"),
        raised(RuntimeError("DataLoader worker failed"), OSError(errno.ENOSPC, "No space left on device", "/dev/shm/torch_1")),
        PermissionError(errno.EPERM, "Operation not permitted"),
        raised(ValueError("a bug"), KeyError("x")),
    ]
    assert [storage_failure(exc, tmp_path) for exc in others] == [None] * 4
    gone = tmp_path / "moved"
    assert str(storage_failure(FileNotFoundError(errno.ENOENT, "gone"), gone)).startswith(f"the run dir {gone} was deleted or moved")
