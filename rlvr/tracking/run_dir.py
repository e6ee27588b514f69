"""One run at a time in a run dir (`RunDirLock`), what a continued run may change from its checkpoint
(`resume_changes`), and the record of every start in it (`record_start`, written only once every check
that can refuse the start has passed). What users see: docs/run-dir.md.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import socket
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rlvr.config import MAPPINGS
from rlvr.errors import ConfigError, StorageError
from rlvr.tracking.provenance import invoked_command

log = logging.getLogger(__name__)
LOCK_NAME = ".rlvr.lock"
RUN_INFO = "run_info.jsonl"  # a line per start of the run (what it is, what produced it) and one per end
CHECKPOINT_CONFIG = "rlvr_config.json"  # in every checkpoint: the resolved config that trained it
# What a checkpoint's weights, optimizer state and step count mean (the model, the data order it
# has consumed, the batch geometry, the optimizer and schedule, whose state transformers restores
# over the config's values): a resume may not change these. Rewards, beta, max_steps, eval and
# logging may change: the checkpoint stays valid, and the change is recorded.
CHECKPOINT_DEPENDS_ON = (
    "model",
    "dataset",
    "data_files",  # `trained_config`'s fingerprints of the local training data files
    "model_files",  # and of a local model's files: a LoRA run's adapter holds no base weights
    "seed",
    "algorithm.name",
    "algorithm.learning_rate",
    "algorithm.lr_scheduler_type",
    "algorithm.warmup_steps",
    "algorithm.weight_decay",
    "algorithm.per_device_train_batch_size",
    "algorithm.gradient_accumulation_steps",
    "algorithm.num_generations",
    "algorithm.generation_batch_size",
    "algorithm.steps_per_generation",
    "algorithm.num_iterations",  # TRL's sampler repeats each batch this often: the data order
    "algorithm.optim",
    "algorithm.fine_grained",
    "processes",  # that trained it, however started (not hardware.nodes x tasks_per_node: torchrun's are its own)
    "hardware.precision",
    "hardware.sharding",  # how its weights and optimizer state are laid out (FSDP's shards, ZeRO's global_stepN/)
)
# Keys under those above that the trained model does not depend on: the eval data, how malformed spans are
# reported, whether a kept SFT warm-up is loaded (it is the one the run would train)
NOT_TRAINED_ON = (
    "dataset.max_eval_samples",
    "dataset.eval_source",
    "dataset.eval_split",
    "algorithm.fine_grained.strict",
    "model.warmup_sft_cache",
)
SIBLING_WAIT_S = 30.0  # how long a rank > 0 waits for rank 0 to take the lock for their job


@dataclass(frozen=True)
class Start:
    """What a start does in its run dir: `new` (train from scratch), `resume` (continue from
    `checkpoint`), `finish` (training is complete: do what is missing, e.g. the final eval) or `done`
    (a job of a rerun `-m` command that finished with the same config: nothing)."""

    mode: str
    checkpoint: Path | None = None
    step: int | None = None


def process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/`pid`/stat after the command's name (Linux): [0] the state, [19] the start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so a recycled pid is not mistaken for the holder."""
    stat = process_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def is_alive(pid: int, started: str | None) -> bool:
    """Whether `pid` runs, and is the process that started at `started` (None: any); an exited process
    its parent has not yet reaped (a zombie) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    stat = process_stat(pid)
    if stat is None or len(stat) <= 19:  # gone this instant, or no /proc: taken as the holder
        return True
    return stat[0] != "Z" and (started is None or stat[19] == started)


def job_identity() -> str:
    """What makes two processes one run: the SLURM job (any node, any requeue), the torch.distributed
    job (all ranks), else this process."""
    if "SLURM_JOB_ID" in os.environ:
        return f"slurm:{os.environ['SLURM_JOB_ID']}:{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"dist:{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    return f"process:{socket.gethostname()}:{os.getpid()}:{process_start_time(os.getpid())}"


class RunDirLock:
    """Held by rank 0 from before anything is written until the process exits, however it exits. A lock
    file naming its holder rather than flock(), which is not reliable across the nodes of a shared file
    system. A lock left by a dead process on this host, or by an earlier start of the same SLURM job (a
    requeue lands on any node), is taken over with a log line."""

    def __init__(self, run_dir: Path, main_process: bool = True):
        self.path = run_dir / LOCK_NAME
        self.main_process = main_process
        self.me = {
            "job": job_identity(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_started": process_start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": shlex.join(invoked_command()),
        }

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being written this instant, or torn by a crash mid-write
            return {}

    def in_use(self) -> bool:
        """Whether a run holds this lock: a live process of this host, or any of another host (which this
        host cannot look at); a lock file being written counts. A crashed run's lock does not."""
        holder = self._holder()
        if holder is None or holder == {}:
            return holder == {}
        return holder.get("host") != self.me["host"] or self._alive_here(holder)

    def running_here(self) -> bool:
        """Whether another live process of this host holds this lock (a run going on here; this process
        holds the locks of the jobs it ran until it exits)."""
        holder = self._holder()
        mine = holder and holder.get("pid") == self.me["pid"]
        return bool(holder) and not mine and holder.get("host") == self.me["host"] and self._alive_here(holder)

    def _refuse(self, holder: dict) -> ConfigError:
        if not holder:  # still empty or torn after the retries: its writer died between creating and writing it
            return ConfigError(
                f"{self.path} cannot be read (empty or cut short: a run that was killed as it took the lock?): "
                f"if no run uses {self.path.parent}, delete it"
            )
        who = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} ({holder.get('command')})"
        gone = "" if holder.get("host") == self.me["host"] else f"; if that job is gone, delete {self.path}"
        return ConfigError(f"{self.path.parent} is in use by another run: {who}: wait for it to end, or pick a new hydra.run.dir{gone}")

    def acquire(self) -> "RunDirLock":
        if not self.main_process:
            return self._wait_for_rank_zero()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                with open(self.path, "x", encoding="utf-8") as handle:
                    handle.write(json.dumps(self.me))
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released between our two looks
                same_host = holder.get("host") == self.me["host"]
                if same_host and holder.get("pid") == self.me["pid"]:  # this process's own, from an earlier run
                    self.path.unlink(missing_ok=True)
                    continue
                alive = self._alive_here(holder)
                if holder.get("job") == self.me["job"] and not alive:  # a requeue; a live one is a second run
                    log.warning(
                        "taking over the lock of an earlier start of this job (pid %s on %s)", holder.get("pid"), holder.get("host")
                    )
                elif holder and same_host and not alive:
                    log.warning(
                        "taking over a stale lock: pid %s on %s (since %s) is gone", holder["pid"], holder["host"], holder.get("since")
                    )
                elif holder:
                    raise self._refuse(holder) from None
                else:
                    time.sleep(0.2)
                    continue
                self.path.unlink(missing_ok=True)
                continue
            atexit.register(self.release)
            return self
        raise self._refuse(self._holder() or {})

    def _wait_for_rank_zero(self) -> "RunDirLock":
        """Ranks > 0 write nothing: they wait until rank 0 holds the lock for their job, or refuse with
        the holder: at once when it is another job alive on this host (rank 0 refuses it too), else
        after SIBLING_WAIT_S."""
        deadline = time.monotonic() + SIBLING_WAIT_S
        while True:
            holder = self._holder()
            if holder and holder.get("job") == self.me["job"]:
                return self
            if holder and (time.monotonic() > deadline or self._alive_here(holder)):
                raise self._refuse(holder)
            time.sleep(0.2)

    def _alive_here(self, holder: dict) -> bool:
        here = holder.get("host") == self.me["host"] and holder.get("pid") is not None
        return here and is_alive(holder["pid"], holder.get("pid_started"))

    def release(self) -> None:
        holder = self._holder()
        if self.main_process and holder and holder.get("pid") == self.me["pid"] and holder.get("job") == self.me["job"]:
            self.path.unlink(missing_ok=True)


# The free-form mappings but TRL's fields (compared one by one): compared whole, so that adding or
# dropping an entry is a change, and a dot in a file path is not a level
WHOLE_MAPPINGS = tuple(m for m in MAPPINGS if m != "algorithm.trl")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted.key: value} of each leaf, a `WHOLE_MAPPINGS` setting being one."""
    if not isinstance(tree, dict) or prefix in WHOLE_MAPPINGS:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    return flat


def changed_leaves(before: dict, after: dict) -> dict[str, list]:
    """{dotted.key: [old, new]} of each leaf (`flatten`) that differs between two configs, a leaf that
    only one holds included (the other's value None)."""
    old, new = flatten(before), flatten(after)
    return {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def as_recorded(config: dict) -> dict:
    """`config` as run_info.jsonl holds it once read back (JSON's types: a path or an enum as text)."""
    return json.loads(json.dumps(config, default=str))


def under(key: str, prefixes) -> bool:
    """`key` is one of the dotted `prefixes` or a key below one (a group: its keys)."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def depends_on_checkpoint(key: str) -> bool:
    return under(key, CHECKPOINT_DEPENDS_ON) and not under(key, NOT_TRAINED_ON)


def resume_changes(
    resolved: dict, checkpoint: Path | None, processes: int, swept: Sequence[str] = (), final_model_in: Path | None = None
) -> dict[str, list]:
    """What this start (its resolved config, run by `processes` processes) changes from what trained
    `checkpoint`, or with no checkpoint the final model saved in the run dir `final_model_in` (a start
    that finishes its eval: the config of the run's last training start); refused in one line when the
    trained model depends on it, or when it is one of the `swept` keys of the `-m` run this start is a
    job of (its job dir holds another point of the sweep: a rerun of an interrupted search whose sampler
    drew again). Nothing recorded: nothing to compare."""
    if checkpoint is not None and (checkpoint / CHECKPOINT_CONFIG).exists():
        trained, what = json.loads((checkpoint / CHECKPOINT_CONFIG).read_text()), str(checkpoint)
    elif checkpoint is None and final_model_in is not None and (final_model_in / RUN_INFO).exists():
        from rlvr.tracking.outputs import read_jsonl

        trainings = [start for start in read_jsonl(final_model_in / RUN_INFO) if start.get("mode") in ("new", "resume")]
        trained, what = (trainings[-1].get("config") if trainings else None), f"the final model in {final_model_in}"
    else:
        trained = None
    if not trained:
        return {}
    before = flatten(trained)
    after = flatten(resolved | {"processes": processes})
    for config in (before, after):  # no prompt_template is the prompt column as it is: "{<column>}" (format_prompt)
        if "dataset.prompt_template" in config and config["dataset.prompt_template"] is None:
            config["dataset.prompt_template"] = "{" + str(config.get("dataset.prompt_column")) + "}"
    # {dotted.key: [old, new]} per leaf that differs; a key that one rlvr version lacks is no change
    changed = {k: [before[k], after[k]] for k in sorted(before.keys() & after.keys()) if before[k] != after[k]}
    if moved := {k: v for k, v in changed.items() if under(k, swept)}:
        raise ConfigError(
            f"{what} was trained at another point of this sweep ({listed(moved)}): rerun the sweep with the same "
            f"values to continue it, or give it a new hydra.sweep.dir"
        )
    if refused := {k: v for k, v in changed.items() if depends_on_checkpoint(k)}:
        raise ConfigError(
            f"{what} was trained with other values of what it depends on ({listed(refused)}): continue "
            f"with the same values, or start a new run (a new {'hydra.sweep.dir' if swept else 'hydra.run.dir'})"
        )
    if changed:
        log.warning("continuing %s with changed values: %s", Path(what).name if checkpoint else what, listed(changed))
    return changed


def listed(changes: dict[str, list]) -> str:
    """ "key: old -> new, ..." of `resume_changes`' {key: [old, new]}."""
    return ", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in changes.items())


MODEL_FILES = ("trainer_state.json", "adapter_config.json", "config.json")  # a checkpoint's, an adapter's, a model's


# What a run dir may hold before its first start is recorded: Hydra's, the log (`<hydra.job.name>.log`),
# the lock of a start under way
BEFORE_FIRST_START = frozenset({".hydra", LOCK_NAME})


def check_run_dir(run_dir: Path, algorithm: str) -> None:
    """Refuse a run dir that is not a run's, where a new run would write among what is there: one that
    holds a saved model or a checkpoint (`hydra.run.dir=RUN/final_model`, or `RUN/checkpoints/checkpoint-8`
    meant as "continue from here"), one inside another run (`RUN/eval`), a folder of other files
    (`hydra.run.dir=.` in a project: its metrics.jsonl, plots/ and eval/ were overwritten), and the
    run dir of another algorithm's run (a reward model started in a stopped GRPO run's dir replaced its logs),
    and one where a file of the run is something else (a FIFO would hang the run, a directory fail it)."""
    from rlvr.tracking.outputs import check_a_file, read_jsonl

    for entry in [*run_dir.glob("*"), *run_dir.glob("eval/*")]:
        if entry.suffix in (".json", ".jsonl", ".log", ".yaml") or not (entry.is_file() or entry.is_dir()):
            check_a_file(entry)

    run = next((parent for parent in run_dir.absolute().parents[:2] if (parent / RUN_INFO).is_file()), None)  # RUN/x, RUN/x/y
    continue_run = f"to continue that run from its newest complete checkpoint, pass hydra.run.dir={run}"
    if held := next((name for name in MODEL_FILES if (run_dir / name).is_file()), None):
        fix = continue_run if run else "pick a new hydra.run.dir (model.name_or_path= trains from a saved model)"
        raise ConfigError(f"hydra.run.dir={run_dir} holds a saved model or checkpoint ({held}), not a run: {fix}")
    if run is not None:
        raise ConfigError(f"hydra.run.dir={run_dir} is inside the run dir {run}: pick a dir outside it, or {continue_run}")
    starts = [row for row in read_jsonl(run_dir / RUN_INFO) if "config" in row] if (run_dir / RUN_INFO).is_file() else []
    if starts and (held := starts[-1]["config"].get("algorithm", {}).get("name")) not in (None, algorithm):
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds an algorithm={held} run (run_info.jsonl): an algorithm={algorithm} run "
            "is not continued from it and would replace its logs: pick a new hydra.run.dir"
        )
    if run_dir.is_dir() and not (run_dir / RUN_INFO).exists():
        others = sorted(e.name for e in run_dir.iterdir() if e.name not in BEFORE_FIRST_START and not e.name.endswith(".log"))
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise ConfigError(
                f"hydra.run.dir={run_dir} holds files that no rlvr run wrote ({shown}): a run would write among them; "
                "pick a new or empty dir"
            )


# How the libraries that write a run dir's big files say a write did not fit, without an OSError to read:
# torch.save's C++ writer ("unexpected pos 190848 vs 190740") and safetensors' I/O error.
CUT_WRITE_WORDS = ("unexpected pos", "No space left on device")


def storage_failure(exc: BaseException, run_dir: Path) -> StorageError | None:
    """`exc` as a one-line StorageError when the storage of the run dir `run_dir` (one this start has
    written to) caused it, found in the exception or those it was raised from: the run dir gone; a file
    in it not writable (EROFS, EACCES, EPERM naming it); its disk full (ENOSPC or EDQUOT naming one of
    its files, or, naming none, or in a library's words for a cut write, with under 1 MiB left there).
    None for any other failure: a bug, or another disk's (the Hub cache's, /dev/shm) with its traceback."""
    import errno
    import shutil

    from rlvr.hardware.stops import how_to_continue

    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if not run_dir.is_dir():
        return StorageError(f"the run dir {run_dir} was deleted or moved while the run wrote to it")

    def in_run_dir(error: OSError) -> bool:
        names = [n for n in (error.filename, getattr(error, "filename2", None)) if isinstance(n, (str, Path))]
        return any(Path(n).absolute().is_relative_to(run_dir.absolute()) for n in names)

    os_errors = [e for e in chain if isinstance(e, OSError) and e.errno is not None]
    then = f"then {how_to_continue(run_dir)} continues the run from its newest complete checkpoint"
    full_here = any(e.errno in (errno.ENOSPC, errno.EDQUOT) and in_run_dir(e) for e in os_errors)
    unnamed = any(e.errno in (errno.ENOSPC, errno.EDQUOT) and e.filename is None for e in os_errors)
    cut = any(any(words in str(e) for words in CUT_WRITE_WORDS) for e in chain if not isinstance(e, OSError))
    if full_here or ((unnamed or cut) and shutil.disk_usage(run_dir).free < 2**20):
        return StorageError(f"no space left on the disk of the run dir {run_dir}: free some, {then}")
    if denied := next((e for e in os_errors if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and in_run_dir(e)), None):
        return StorageError(f"cannot write {denied.filename} ({denied.strerror}): make the run dir writable, {then}")
    return None


def save_overrides(run_dir: Path) -> None:
    """.hydra/overrides.yaml: this job's command-line overrides, as Hydra writes them."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create(list(HydraConfig.get().overrides.task)), run_dir / ".hydra" / "overrides.yaml")


def finished_result(run_dir: Path, resolved: dict) -> dict | None:
    """The metrics (metrics.json) of the run `run_dir` holds when its last start completed with the
    config `resolved` (as run_info.jsonl records it); None otherwise. A rerun of a `-m` command takes
    a finished job's result from it instead of refusing the job."""
    from rlvr.tracking.outputs import read_json, read_jsonl

    if not (run_dir / "metrics.json").exists() or not (run_dir / RUN_INFO).exists():
        return None
    rows = read_jsonl(run_dir / RUN_INFO)
    starts = [row for row in rows if "config" in row]
    if not starts or rows[-1].get("ended") != "completed":
        return None
    if starts[-1]["config"] != as_recorded(resolved):
        return None
    return read_json(run_dir / "metrics.json")


def record_start(run_dir: Path, cfg, changed: dict[str, list], mode: str) -> None:
    """This start's line in run_info.jsonl, then config_resolved.yaml and .hydra/ (the latest start)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from rlvr.tracking.provenance import run_info

    hydra_cfg = HydraConfig.get()
    config = trained_config(cfg)  # the line first: with it the dir is a run's (`check_run_dir`)
    append_run_info(run_dir, run_info() | {"mode": mode, "overrides": list(hydra_cfg.overrides.task), "changed": changed, "config": config})
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    hydra_dir = run_dir / ".hydra"  # what Hydra writes at job start, written here once the run is accepted
    hydra_dir.mkdir(exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), hydra_dir / "hydra.yaml")
    save_overrides(run_dir)


def record_end(run_dir: Path, ended: str, error: str | None = None) -> None:
    """This start's end, a line after its start line in run_info.jsonl: `ended` is "completed",
    "failed" (with its `error`, the line it ended with) or how it was stopped ("stopped by Ctrl-C",
    with how to continue it); the sweep report reads it. A start with no end line was killed. Rank 0
    writes it; a write that fails (a full disk) is a warning, so that the run ends as it was ending."""
    from rlvr.hardware.distributed import is_main_process
    from rlvr.hardware.stops import how_to_continue

    if not is_main_process():
        return
    end = {"ended": ended, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")} | ({"error": error} if error else {})
    if ended.startswith("stopped"):
        end["continue"] = f"{how_to_continue(run_dir)} continues it from its newest complete checkpoint"
    try:
        append_run_info(run_dir, end)
    except OSError as exc:
        log.warning("could not record how this start ended in %s: %s", RUN_INFO, exc)


def append_run_info(run_dir: Path, row: dict) -> None:
    """`row` as the last line of `run_dir`'s run_info.jsonl."""
    from rlvr.tracking.outputs import JsonlWriter

    writer = JsonlWriter(run_dir / RUN_INFO)
    writer.write([row])
    writer.close()


def latest_end(run_dir: Path) -> dict | None:
    """The end line `record_end` wrote for the latest start in `run_dir`, if any."""
    from rlvr.tracking.outputs import read_jsonl

    path = run_dir / RUN_INFO
    last = read_jsonl(path)[-1:] if path.exists() else []
    return last[0] if last and "ended" in last[0] else None


@functools.lru_cache(maxsize=256)
def content_digest(path: str, size: int, mtime_ns: int) -> str:
    """A digest of the file's bytes; read again only when its size or modification time changes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def trained_config(cfg) -> dict:
    """The resolved config as a start records it (run_info.jsonl, every checkpoint) and a later start
    compares with it, with `data_files`: {path: `content_digest`} of each local file the training rows
    come from (dataset.source, the mixer's sources), so that a data file written anew with other rows
    or gold answers is a change as a changed setting is (the same bytes copied elsewhere, e.g. to a
    node's local disk, are not); and `model_files`, the same of a local model dir's files (a model
    saved anew at that path: a LoRA checkpoint's adapter would go on other base weights)."""
    from omegaconf import OmegaConf

    from rlvr.data.loading import local_files
    from rlvr.models.loading import local_model_files

    def digests(files) -> dict[str, str]:
        return {str(f): content_digest(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files}

    model = local_model_files(cfg.model.name_or_path) if cfg.get("model") else []
    return OmegaConf.to_container(cfg, resolve=True) | {"data_files": digests(local_files(cfg.dataset)), "model_files": digests(model)}


def checkpoint_config(cfg, processes: int) -> dict[str, str]:
    """The file every checkpoint carries (written before it is marked complete): the config that
    trained it (`trained_config`) and its number of processes, which a resume compares with (`resume_changes`)."""
    return {CHECKPOINT_CONFIG: json.dumps(trained_config(cfg) | {"processes": processes}, indent=1, default=str)}
