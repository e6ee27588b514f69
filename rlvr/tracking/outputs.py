"""What a run leaves in its Hydra run dir: run.log, metrics.jsonl, rollouts.jsonl, metrics.json, wandb files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import logging.handlers
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from rlvr.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def prompt_id(prompt: Any) -> str:
    """A short stable id for a prompt (text or chat messages), for per-prompt curves."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


# How the JSON files are encoded: a lone surrogate (half a pair, as in a path decoded with surrogateescape),
# which UTF-8 cannot encode and which only occurs inside a JSON string, is written as its JSON escape.
UNPAIRED_AS_ESCAPE = "backslashreplace"


def json_text(value: Any, indent: int | None = None) -> str:
    """`value` as strict JSON (RFC 8259, what jq and JavaScript read, where Python's default writes a
    bare NaN): a NaN or infinite float is written as null (an SE over one prompt, a logged mean of
    nothing); an object JSON has no type for, as its str. The run dir's metrics, eval and rollout files
    and rlvr.score's output are written through it."""
    return json.dumps(finite_or_null(value), ensure_ascii=False, indent=indent, default=str, allow_nan=False)


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float in it (inside dicts, lists and tuples) replaced by None;
    a numpy or 0-d torch number as the Python number it holds (JSON would have its str)."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars, 0-d tensors
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def check_a_file(path: Path) -> None:
    """A DataError if `path` is there but is not a regular file: a FIFO would hang its reader or writer
    for ever, a directory fail deep inside the write."""
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, a socket or a device)"
        raise DataError(f"{path} is {kind}, where rlvr reads and writes a file of rows: move it away")


class JsonlWriter:
    """Appends JSON rows to a file, line-buffered so a crash loses at most the current line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        check_a_file(path)
        drop_torn_tail(path)  # else the first new row would be glued to a torn one, corrupting both
        self._handle = open(path, "a", encoding="utf-8", errors=UNPAIRED_AS_ESCAPE, buffering=1)

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._handle.write(json_text(row) + "\n")

    def close(self) -> None:
        self._handle.close()


def warn_torn(path: Path, size: int) -> None:
    log.warning("%s: dropped a torn last line (%d bytes; a write cut short by a crash or a full disk)", path, size)


def read_jsonl(path: Path, row_problem: Callable[[dict], str | None] | None = None) -> list[dict]:
    """The rows of a JSONL file. A bad last line with no newline after it is a write cut short (a
    crash, a full disk): dropped with a warning. A bad line anywhere else is corruption that no
    crash makes: a one-line DataError naming file and line, rather than rows silently lost. So is a
    line of JSON that is not an object (a row), and a row for which `row_problem` (the reader's
    check of the fields it reads: a file edited by hand) returns a problem."""
    check_a_file(path)
    lines = path.read_bytes().split(b"\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:  # bad JSON or bad UTF-8
            if number == len(lines):
                warn_torn(path, len(line))
                break
            raise DataError(f"{path} line {number} is not a JSON row ({exc}): the file is corrupt; delete or fix that line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is not a JSON row (a JSON {type(row).__name__}, not an object): delete or fix that line")
        if row_problem and (problem := row_problem(row)):
            raise DataError(f"{path} line {number}: {problem}: delete or fix that line")
        rows.append(row)
    return rows


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's rows (`read_jsonl`), every null read as NaN: each value of a metrics row is a
    number, and `json_text` writes a NaN or infinite one as null. A row without a whole-number `step`,
    or with a value of another type, is a DataError naming file, line and key."""
    return [nulls_as_nan(row) for row in read_jsonl(path, metrics_row_problem)]


def nulls_as_nan(values: dict) -> dict:
    """`values` with every null read as NaN: `json_text` writes a NaN or infinite number as null."""
    return {key: math.nan if value is None else value for key, value in values.items()}


def metrics_row_problem(row: dict) -> str | None:
    """Why `row` is not a metrics.jsonl row (see `read_metrics`); None when it is one."""
    return step_problem(row) or number_problem(row)


def step_problem(row: dict) -> str | None:
    """ "no step", or "step is ..., not a whole number", where `row`'s `step` is not one; else None."""
    if is_whole_number(step := row.get("step")):
        return None
    return f"step is {json.dumps(step)}, not a whole number" if "step" in row else "no step"


def is_whole_number(value: Any) -> bool:
    """An integer, or a float with an integer value (3.0); not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or (math.isfinite(value) and float(value).is_integer())


def number_problem(values: dict) -> str | None:
    """ "KEY is ..., not a number" for the first of `values` that is neither a number nor null (a NaN
    written by `json_text`); else None. true and false are not numbers here."""
    wrong = next(
        (key for key, value in values.items() if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))),
        None,
    )
    return f"{wrong} is {json.dumps(values[wrong])[:40]}, not a number" if wrong is not None else None


def drop_torn_tail(path: Path) -> None:
    """Cut a file back to its last newline if what follows it is not a whole JSON row (reads the
    tail only: a rollout log can be large)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        start, tail = end, b""
        while start > 0 and b"\n" not in tail:
            start = max(0, start - 65536)
            handle.seek(start)
            tail = handle.read(end - start)
        if tail.endswith(b"\n"):
            return
        cut = start + tail.rfind(b"\n") + 1  # 0 when the file holds no newline at all
        last = tail[cut - start :]
        try:
            json.loads(last)
        except ValueError:
            warn_torn(path, len(last))
            handle.truncate(cut)
        else:  # a whole row that only lost its newline
            handle.seek(end)
            handle.write(b"\n")


def truncate_jsonl(path: Path, keep) -> None:
    """Rewrite a JSONL file with only the rows `keep(row)` accepts (atomically; no-op if absent)."""
    if path.exists():
        write_jsonl(path, [row for row in read_jsonl(path) if keep(row)])


def write_whole(path: Path, text: str) -> None:
    """Write a file whole (a temp file, then a rename): readers never see part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8", errors=UNPAIRED_AS_ESCAPE)
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """`rows` as a JSONL file, written whole (`write_whole`)."""
    write_whole(path, "".join(json_text(row) + "\n" for row in rows))


def files_fingerprint(path: Path) -> str:
    """A digest of the name, size and modification time of `path` if it is a file, else of each file in
    it (not of its subdirectories): it changes when the files are written again (a model saved anew,
    a data file rewritten)."""
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    stats = sorted(f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256("\n".join(stats).encode()).hexdigest()[:16]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, payload: dict) -> None:
    write_whole(path, json_text(payload, indent=2) + "\n")


def check_wandb(logging_cfg) -> None:
    """Refuse, at start-up, a run that logs to wandb where wandb is not installed (it is a dependency,
    but images built without it exist), and an online one without an API key; else transformers'
    WandbCallback fails as the trainer is built, or wandb at the first training step, after the start
    was recorded. A terminal without a stored key is asked for one (wandb's own prompt)."""
    if logging_cfg.wandb == "disabled":
        return
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"logging.wandb={logging_cfg.wandb} but wandb is not installed: pip install wandb, or logging=disabled")
    if logging_cfg.wandb == "online":
        import wandb

        os.environ["WANDB_MODE"] = "online"  # what `setup_wandb` sets: a WANDB_MODE=offline in the shell does not apply
        try:
            wandb.login(verify=False)  # a stored key or WANDB_API_KEY
        except wandb.errors.UsageError as exc:
            raise ConfigError(f"logging.wandb=online: {exc} (or logging=offline: the same logs, `wandb sync` them later)") from exc


def wandb_run_id(run_dir: Path) -> str:
    """One id per run, the same for every start of it: a digest of its first start's line in
    run_info.jsonl (else of the run dir's path)."""
    from rlvr.tracking.run_dir import RUN_INFO

    info = run_dir / RUN_INFO
    first = info.read_bytes().split(b"\n", 1)[0] if info.exists() else str(run_dir.resolve()).encode()
    return hashlib.sha256(first).hexdigest()[:16]


def setup_wandb(logging_cfg, run_dir: Path, run_name: str) -> list[str]:
    """Configure wandb through its own env vars; returns TRL's `report_to`. A run after another in this
    process (a `-m` run's jobs under Hydra's basic launcher) starts wandb afresh: wandb reads its env
    vars once per process, and each job's files went to the first job's run dir. The starts of a run
    are one wandb run online (`wandb_run_id`, resumed), and one group of runs offline."""
    mode = logging_cfg.wandb
    if mode == "disabled":
        return []
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_DIR"] = str(run_dir)
    os.environ["WANDB_PROJECT"] = logging_cfg.project
    os.environ.setdefault("WANDB_NAME", run_name)
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "online":  # a continued run resumes its wandb run
        os.environ["WANDB_RUN_ID"], os.environ["WANDB_RESUME"] = wandb_run_id(run_dir), "allow"
    else:  # offline, each start is a wandb run of its own (synced, one would replace another's history), grouped
        os.environ.pop("WANDB_RUN_ID", None)
        os.environ.pop("WANDB_RESUME", None)
        os.environ["WANDB_RUN_GROUP"] = wandb_run_id(run_dir)
        log.info("wandb offline: its files go to %s; `wandb sync %s` uploads them", run_dir / "wandb", run_dir / "wandb" / "offline-run-*")
    if logging_cfg.entity:
        os.environ["WANDB_ENTITY"] = logging_cfg.entity
    return ["wandb"]


class NotRunLogOnly(logging.Filter):
    """The console handler's filter (conf/hydra/job_logging/rlvr.yaml): a record logged with
    extra={"run_log_only": True} goes to run.log only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "run_log_only", False)


def start_run_log(run_dir: Path) -> None:
    """Once a start is accepted: what this process logged so far, and all it logs from now on, goes
    to run.log in `run_dir`. Until then conf/hydra/job_logging/rlvr.yaml holds the lines in memory,
    so that a refused start writes no run.log, nor into the run.log of the run that holds the dir.
    Does nothing under another job_logging (Hydra's default opens run.log at once).

    The processes of a torchrun or `accelerate launch` launch share one console: there, ranks above 0
    print only their warnings and errors (rank 0 says the rest once); run.log has every rank's lines."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.hardware.distributed import rank, torchrun_launched

    root = logging.getLogger()
    if rank() > 0 and torchrun_launched():
        for console in [h for h in root.handlers if type(h) is logging.StreamHandler]:
            console.setLevel(logging.WARNING)
    for held in [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        file = RunLog(run_dir / f"{HydraConfig.get().job.name}.log", encoding="utf-8")
        file.setFormatter(held.formatter if rank() == 0 else RankTagged(held.formatter, f"[rank {rank()}]"))
        file.setLevel(held.level)
        for record in held.buffer:
            file.handle(record)
        root.removeHandler(held)
        held.close()
        root.addHandler(file)


class RunLog(logging.FileHandler):
    """run.log's handler: a line it cannot write (a full or read-only disk) is said once on stderr and
    the run's later lines dropped from it, where logging would print a traceback for each one."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            print(f"rlvr: cannot write {self.baseFilename} ({sys.exc_info()[1]}): its lines are dropped", file=sys.stderr)


class RankTagged(logging.Formatter):
    """Another formatter's lines, each tagged with the rank that logged it: the ranks of a run share run.log."""

    def __init__(self, base: logging.Formatter, tag: str):
        super().__init__()
        self.base, self.tag = base, tag

    def format(self, record: logging.LogRecord) -> str:
        return self.tag + self.base.format(record)


# The row transformers' Trainer logs when training ends (runtime, throughput, mean loss), by a key only it has.
TRAINING_SUMMARY_KEY = "train_runtime"


def metrics_callback(path: Path):
    """A transformers TrainerCallback writing every logged dict, with its step, to metrics.jsonl.

    Each training row also carries `step_seconds`: wall time per optimizer step since the previous
    training row (generation, rewards, backward, optimizer, logging, an eval during training: all of it; one step's time when
    every step is logged, the mean over the `logging_steps` a row stands for otherwise), and on a
    GPU `gpu_peak_memory_mb`, this process's peak of allocated GPU memory so far. The last step of
    training is logged whatever `logging_steps` is (transformers would log none of the steps after the
    last multiple, and TRL would put their metrics in the end-of-training row). When training
    (re)starts, the end-of-training row of an earlier start is dropped (a continued run has one, its
    own), and so are the rows of steps after the checkpoint it resumes from (a crash lost them; they
    are trained and logged again): no step is logged twice.
    """
    import time

    import torch
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        def __init__(self):
            path.parent.mkdir(parents=True, exist_ok=True)
            self.last_end = None
            self.logged_end = None  # the end of the step of the last training row
            self.steps_since_logged = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                truncate_jsonl(path, keep=lambda row: TRAINING_SUMMARY_KEY not in row)

        def on_step_begin(self, args, state, control, **kwargs):
            if self.last_end is None:  # the first step of this start: the resumed state is loaded by now
                if state.is_world_process_zero:
                    truncate_jsonl(path, keep=lambda row: row.get("step", 0) <= state.global_step)
                self.last_end = self.logged_end = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.last_end = time.perf_counter()
            self.steps_since_logged += 1
            if state.global_step >= state.max_steps:
                control.should_log = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            timing = {}
            if "loss" in (logs or {}) and self.steps_since_logged:
                timing["step_seconds"] = (self.last_end - self.logged_end) / self.steps_since_logged
                self.logged_end, self.steps_since_logged = self.last_end, 0
            if state.is_world_process_zero and logs:
                if "loss" in logs and torch.cuda.is_initialized():
                    timing["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
                with open(path, "a", encoding="utf-8", errors=UNPAIRED_AS_ESCAPE) as handle:  # also after training: final eval logs
                    handle.write(json_text({"step": state.global_step, **logs, **timing}) + "\n")

    return MetricsJsonl()


PROGRESS_KEYS = {"reward": "reward", "loss": "loss", "kl": "kl", "completions/mean_length": "len"}


def use_compact_progress(trainer) -> None:
    """Replace a Trainer's progress bar by one showing the key numbers as its postfix, instead of a
    printed dict of every metric per step."""
    from transformers.trainer_callback import ProgressCallback

    class CompactProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {short: f"{logs[key]:.3g}" for key, short in PROGRESS_KEYS.items() if isinstance(logs.get(key), (int, float))}
                if shown:
                    self.training_bar.set_postfix(shown, refresh=False)

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(CompactProgress())


def close_wandb(metrics: dict) -> None:
    """Put the final metrics in the wandb run summary and finish it (one wandb run per sweep job)."""
    wandb = sys.modules.get("wandb")  # imported by transformers' callback only when it reports to wandb
    if wandb is not None and wandb.run is not None:
        wandb.run.summary.update(metrics)
        wandb.finish()
