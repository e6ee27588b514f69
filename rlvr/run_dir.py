"""One run at a time in a run dir, and a record of every start in it.

- `RunDirLock`: a lock file naming its holder (job, host, pid). A second run is refused in one line
  naming the holder; a lock left by a dead process on this host (kill -9, a lost node's job) is
  taken over with a log line, and so is one left by an earlier start of the same SLURM job (a
  requeue lands on any node). A lock file rather than flock(): flock is not reliable across the
  nodes of a shared file system, and a holder must be named to the user anyway.
- `resume_changes`: a continued run must keep the values its checkpoint was trained with (the
  model, the data, the rewards, the batch geometry); other changes (learning rate, max_steps,
  eval, logging) are allowed and recorded.
- `record_start`: written only after every check that can refuse the run has passed:
  `config_resolved.yaml` and `.hydra/` for the latest start, and one `run_info.jsonl` line per start
  with its overrides, its resolved config and what it changed.
- `resumable_checkpoint`: the newest complete checkpoint that a resume can load whole, its files
  checked as the Trainer will read them; one that cannot be loaded in any part (weights, optimizer,
  scheduler, RNG or trainer state) is reported in one line, marked CORRUPT, and the previous one used.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.errors import ConfigError

log = logging.getLogger(__name__)
LOCK_NAME = ".rlvr.lock"
CHECKPOINT_CONFIG = "rlvr_config.json"  # in every checkpoint: the resolved config that trained it
CORRUPT = "CORRUPT"  # what a corrupt checkpoint's COMPLETE marker is renamed to (as rlvr.distributed does)
# What a checkpoint's weights, optimizer state and step count mean (the model, the data order it
# has consumed, the batch geometry, the optimizer and schedule, whose state transformers restores
# over the config's values): a resume may not change these. Rewards, beta, max_steps, eval and
# logging may change: the checkpoint stays valid, and the change is recorded.
CHECKPOINT_DEPENDS_ON = (
    "model", "dataset", "seed", "algorithm.name", "algorithm.learning_rate", "algorithm.lr_scheduler_type",
    "algorithm.warmup_steps", "algorithm.weight_decay", "algorithm.per_device_train_batch_size",
    "algorithm.gradient_accumulation_steps", "algorithm.num_generations", "algorithm.generation_batch_size",
    "algorithm.steps_per_generation", "algorithm.optim", "algorithm.fine_grained", "hardware.nodes",
    "hardware.tasks_per_node", "hardware.precision",
)
EVAL_ONLY = ("dataset.max_eval_samples", "dataset.eval_source", "dataset.eval_split")  # not the training data
SIBLING_WAIT_S = 30.0  # how long a rank > 0 waits for rank 0 to take the lock for their job


@dataclass(frozen=True)
class Start:
    """What a start does in its run dir: `new` (train from scratch), `resume` (continue from
    `checkpoint`) or `finish` (training is complete: do what is missing, e.g. the final eval)."""

    mode: str
    checkpoint: Path | None = None
    step: int | None = None


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so a recycled pid is not mistaken for the holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def is_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return started is None or process_start_time(pid) in (None, started)


def job_identity() -> str:
    """What makes two processes one run: the SLURM job (any node, any requeue), the torch.distributed
    job (all ranks), else this process."""
    if "SLURM_JOB_ID" in os.environ:
        return f"slurm:{os.environ['SLURM_JOB_ID']}:{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"dist:{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    return f"process:{socket.gethostname()}:{os.getpid()}:{process_start_time(os.getpid())}"


class RunDirLock:
    """Held by rank 0 from before anything is written until the process exits, however it exits."""

    def __init__(self, run_dir: Path, main_process: bool = True):
        self.path = run_dir / LOCK_NAME
        self.main_process = main_process
        self.me = {"job": job_identity(), "host": socket.gethostname(), "pid": os.getpid(),
                   "pid_started": process_start_time(os.getpid()), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "command": " ".join(sys.argv)}

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being written this instant, or torn by a crash mid-write
            return {}

    def _refuse(self, holder: dict) -> ConfigError:
        who = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} ({holder.get('command')})"
        gone = "" if holder.get("host") == self.me["host"] else f"; if that job is gone, delete {self.path}"
        return ConfigError(f"{self.path.parent} is in use by another run: {who}: wait for it to end, "
                           f"or pick a new hydra.run.dir{gone}")

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
                alive = same_host and holder.get("pid") is not None and is_alive(holder["pid"], holder.get("pid_started"))
                if holder.get("job") == self.me["job"] and not alive:  # a requeue; a live one is a second run
                    log.warning("taking over the lock of an earlier start of this job (pid %s on %s)",
                                holder.get("pid"), holder.get("host"))
                elif holder and same_host and not alive:
                    log.warning("taking over a stale lock: pid %s on %s (since %s) is gone", holder["pid"],
                                holder["host"], holder.get("since"))
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
        """Ranks > 0 write nothing: they wait until rank 0 holds the lock for their job, or refuse with it."""
        deadline = time.monotonic() + SIBLING_WAIT_S
        while True:
            holder = self._holder()
            if holder and holder.get("job") == self.me["job"]:
                return self
            if time.monotonic() > deadline and holder:
                raise self._refuse(holder)
            time.sleep(0.2)

    def release(self) -> None:
        holder = self._holder()
        if self.main_process and holder and holder.get("pid") == self.me["pid"] and holder.get("job") == self.me["job"]:
            self.path.unlink(missing_ok=True)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    return flat


def changes(old: dict, new: dict) -> dict[str, list]:
    """{dotted.key: [old, new]} for every leaf that differs."""
    before, after = flatten(old), flatten(new)
    return {key: [before.get(key), after.get(key)] for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}


def depends_on_checkpoint(key: str) -> bool:
    def under(prefixes) -> bool:
        return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)

    return under(CHECKPOINT_DEPENDS_ON) and not under(EVAL_ONLY)


def resume_changes(resolved: dict, checkpoint: Path | None) -> dict[str, list]:
    """What this start changes from the config that trained `checkpoint`; refused in one line when
    the checkpoint depends on it. A checkpoint saved before rlvr recorded its config: nothing to compare."""
    if checkpoint is None or not (checkpoint / CHECKPOINT_CONFIG).exists():
        return {}
    before = json.loads((checkpoint / CHECKPOINT_CONFIG).read_text())
    shared = set(flatten(before)) & set(flatten(resolved))  # a key that one rlvr version lacks is no change
    changed = {k: v for k, v in changes(before, resolved).items() if k in shared}
    if refused := {k: v for k, v in changed.items() if depends_on_checkpoint(k)}:
        listed = ", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in refused.items())
        raise ConfigError(f"{checkpoint} was trained with other values of what it depends on ({listed}): continue "
                          f"with the same values, or start a new run (a new hydra.run.dir)")
    if changed:
        log.warning("continuing %s with changed values: %s", checkpoint.name,
                    ", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in changed.items()))
    return changed


def record_start(run_dir: Path, cfg, changed: dict[str, list], mode: str) -> None:
    """config_resolved.yaml and .hydra/ (the latest start), and this start's line in run_info.jsonl."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from rlvr.provenance import run_info
    from rlvr.tracking import JsonlWriter

    hydra_cfg = HydraConfig.get()
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    hydra_dir = run_dir / ".hydra"  # what Hydra writes at job start, written here once the run is accepted
    hydra_dir.mkdir(exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), hydra_dir / "overrides.yaml")
    writer = JsonlWriter(run_dir / "run_info.jsonl")
    writer.write([run_info() | {"mode": mode, "overrides": list(hydra_cfg.overrides.task), "changed": changed,
                                "config": OmegaConf.to_container(cfg, resolve=True)}])
    writer.close()


def checkpoint_config(cfg) -> dict[str, str]:
    """The file every checkpoint carries (written before it is marked complete): the resolved config
    that trained it, which a resume compares with (`resume_changes`)."""
    from omegaconf import OmegaConf

    return {CHECKPOINT_CONFIG: json.dumps(OmegaConf.to_container(cfg, resolve=True), indent=1, default=str)}


def resumable_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The highest-step checkpoint marked complete whose files pass `checkpoint_problem` (rlvr.distributed:
    JSON, safetensors headers, torch zip directories) and `state_problem` (the training state loads).
    One that fails is reported in one line naming it and why, and its marker renamed to CORRUPT (so
    that its step, when trained again, is not taken for complete while it is being rewritten); the
    previous complete one is tried next. None when none is left: the run starts over, as after a crash
    before its first checkpoint. Every rank finds the same one; rank 0 alone renames."""
    from rlvr.distributed import COMPLETE, checkpoint_problem, is_main_process, numbered_checkpoints

    for path in reversed([p for p in numbered_checkpoints(checkpoint_dir) if (p / COMPLETE).exists()]):
        problem = checkpoint_problem(path) or state_problem(path)
        if problem is None:
            return path
        log.warning("%s is marked complete but is corrupt (%s): using the previous complete checkpoint, if any",
                    path, problem)
        if is_main_process():
            os.replace(path / COMPLETE, path / CORRUPT)
    return None


def state_problem(checkpoint: Path) -> str | None:
    """What of `checkpoint`'s training state a resume could not load, found by loading each file as the
    Trainer does (`torch.load(weights_only=True)`, `TrainerState.load_from_json`) and checking that
    it holds what the Trainer takes from it, without reading tensor data (mmap) or touching the
    process's random generators; None if all of it loads. Files a checkpoint lacks are not checked:
    the Trainer skips them too (an FSDP or DeepSpeed optimizer is saved elsewhere)."""
    checks = {"trainer_state.json": trainer_state_problem, "optimizer.pt": optimizer_state_problem,
              "scheduler.pt": scheduler_state_problem, "scaler.pt": scaler_state_problem}
    files = [(checkpoint / name, check) for name, check in checks.items()]
    files += [(file, rng_state_problem) for file in sorted(checkpoint.glob("rng_state*.pth"))]
    for file, check in files:
        if not file.is_file():
            continue
        try:
            problem = check(file)
        except Exception as exc:  # noqa: BLE001  whatever the Trainer's own load would have raised
            return f"{file.name} does not load: {one_line(exc)}"
        if problem:
            return f"{file.name}: {problem}"
    return None


def one_line(exc: Exception) -> str:
    """An exception as one short line: its type and first line, its first sentence if that line runs on."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text.split('. ')[0] if len(text) > 200 else text}"


def load_torch_state(file: Path):
    """`file` as the Trainer loads it (weights_only, numpy's types allowed), its tensors left on disk."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def trainer_state_problem(file: Path) -> str | None:
    from transformers import TrainerState

    step = TrainerState.load_from_json(str(file)).global_step
    return None if isinstance(step, int) and step >= 0 else f"global_step {step!r} is not a step count"


def optimizer_state_problem(file: Path) -> str | None:
    state = load_torch_state(file)
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not (isinstance(groups, list) and isinstance(state.get("state"), dict)
            and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups)):
        return "not an optimizer's state_dict (state, param_groups)"
    return None


def scheduler_state_problem(file: Path) -> str | None:
    state = load_torch_state(file)
    return None if isinstance(state, dict) and "last_epoch" in state else "not a scheduler's state_dict (last_epoch)"


def scaler_state_problem(file: Path) -> str | None:
    return None if isinstance(load_torch_state(file), dict) else "not a gradient scaler's state_dict"


def rng_state_problem(file: Path) -> str | None:
    """The python, numpy and CPU torch states, each set on a generator of its own (device states are
    not checked: the Trainer only warns when it cannot set them)."""
    import random

    import numpy as np
    import torch

    state = load_torch_state(file)
    if not (isinstance(state, dict) and {"python", "numpy", "cpu"} <= state.keys()):
        return "not an RNG state (python, numpy, cpu)"
    random.Random().setstate(state["python"])
    np.random.RandomState().set_state(state["numpy"])
    torch.Generator().set_state(state["cpu"])
    return None
