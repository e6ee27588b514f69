"""The one entry point: `python -m rlvr.run [group=option ...] [key=value ...] [-m]`.

validate → seed → offline env → recipe(cfg) → metrics.json, and the objective returned for sweepers.
Composing or printing a config (`--cfg job`, `--help`) imports no torch.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from omegaconf import DictConfig, OmegaConf

from rlvr.config import check_ranges, conf_dir, exit_on_unknown_keys, one_line_preset_errors, register_schemas
from rlvr.data.loading import builtin_data_path
from rlvr.hardware.stops import EXIT_INTERRUPTED, how_it_ended, stops_reported
from rlvr.errors import RlvrError

log = logging.getLogger("rlvr")
CONF_DIR = conf_dir()
GROUPS = frozenset({"model", "dataset", "reward", "algorithm", "hardware", "logging", "eval", "experiment"})

OmegaConf.register_new_resolver("rlvr_data", builtin_data_path, replace=True)
register_schemas()


def set_offline(cfg: DictConfig) -> bool:
    """HF_HUB_OFFLINE=1 when asked, or (offline=null) when nothing in the config lives on the Hub.
    A value that does not resolve sets nothing: check_ranges refuses it next, in one line."""
    from omegaconf.errors import OmegaConfBaseException

    from rlvr.data.loading import is_local
    from rlvr.models.loading import is_hub_name

    try:
        source, model, asked = cfg.dataset.source, cfg.model.name_or_path, cfg.offline
    except OmegaConfBaseException:
        return False
    needs_hub = is_hub_name(model) or not (source.startswith("builtin:") or is_local(source))
    offline = (not needs_hub) if asked is None else bool(asked)
    if offline:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[var] = "1"
    return offline


class Accepted(NamedTuple):
    """A start that every check has let through: what it does in its run dir, and how."""

    run_dir: Path  # every process's, rank 0's (rlvr.hardware.distributed.agreed_run_dir)
    recipe: Any  # the recipe's module (rlvr/recipes/)
    start: Any  # rlvr.tracking.run_dir.Start: new, resume, finish or done
    changed: dict[str, list]  # what a continued run changes from its checkpoint's config
    processes: int
    offline: bool
    earlier: dict | None = None  # a finished job's metrics, reused by a rerun of its `-m` command (nothing runs)


def start_up(cfg: DictConfig, run_dir: Path) -> Accepted:
    """Every check that can refuse this start, in one place, before any model or data loads and
    before anything is written; takes the run dir's lock. A refusal is a one-line RlvrError, with
    the lock given back."""
    from rlvr.hardware.distributed import agreed_run_dir, export_torch_distributed, is_main_process
    from rlvr.hardware.device import check_device, check_torchvision, export_device_environment
    from rlvr.models.loading import check_model_source, check_quantization, check_tiny_shape
    from rlvr.recipes.common import initial_policy_dir
    from rlvr.recipes import get_recipe
    from rlvr.rewards.base import preflight_rewards
    from rlvr.tracking.outputs import check_wandb
    from rlvr.launcher import is_multirun, swept_in_this_job
    from rlvr.tracking.run_dir import RunDirLock, Start, check_run_dir, finished_result, resume_changes, trained_config
    from rlvr.trainers.rollout_engine import check_rollout_engine

    offline = set_offline(cfg)  # first: huggingface_hub reads HF_HUB_OFFLINE once, at its import (check_ranges's)
    export_device_environment(cfg.hardware)  # before check_ranges imports trl, hence torch
    check_torchvision()  # before anything imports transformers
    check_ranges(cfg)
    check_device(cfg.hardware)
    check_quantization(cfg, cfg.hardware.device)
    check_tiny_shape(cfg.model)
    check_wandb(cfg.logging)
    recipe = get_recipe(cfg.algorithm.name)
    world_size = export_torch_distributed()
    check_rollout_engine(cfg, world_size)
    run_dir = agreed_run_dir(run_dir)
    check_run_dir(run_dir, cfg.algorithm.name)
    from rlvr.hardware.sharding import check_sharding  # imports transformers: after export_device_environment

    check_sharding(cfg.hardware, world_size)
    recipe.check(cfg, world_size)
    preflight_rewards(cfg.reward.functions)
    lock = RunDirLock(run_dir, main_process=is_main_process()).acquire()  # held until this process exits
    resolved, swept = trained_config(cfg), swept_in_this_job()
    try:  # a job of a -m run (one with a single point too) finished with this config: its result stands
        if is_multirun() and (earlier := finished_result(run_dir, resolved)) is not None:
            return Accepted(run_dir, recipe, Start("done"), {}, world_size, offline, earlier)
        try:
            start = recipe.preflight(cfg, run_dir)  # may refuse; writes nothing
        except RlvrError:
            if swept:  # a finished job not reused: say which of its swept values moved, where one did
                resume_changes(resolved, None, world_size, swept, final_model_in=run_dir)
            raise
        if start.mode == "new" or (start.mode == "resume" and initial_policy_dir(run_dir) is None):  # what loads the base
            check_model_source(cfg.model, policy=cfg.algorithm.name != "reward_model")
        changed = resume_changes(resolved, start.checkpoint, world_size, swept, final_model_in=run_dir if start.mode == "finish" else None)
    except RlvrError:
        lock.release()
        raise
    return Accepted(run_dir, recipe, start, changed, world_size, offline)


LOGGED_ONCE: set[str] = set()


def first_of_each_message(record: logging.LogRecord) -> bool:
    """A logging filter that lets each message through once per process (`LOGGED_ONCE`)."""
    message = record.getMessage()
    if message in LOGGED_ONCE:
        return False
    LOGGED_ONCE.add(message)
    return True


def set_up_process(cfg: DictConfig) -> None:
    """What every process that loads a model sets first (a run, `rlvr.eval`): quiet progress bars and
    warnings the user cannot act on, the seed, the thread count, the CPU patches."""
    from rlvr._compat import wandb_offline_notice_to_stderr
    from rlvr.hardware.device import apply_threads
    import datasets
    import transformers

    wandb_offline_notice_to_stderr()

    datasets.disable_progress_bars()  # per-map and per-save bars drown the training progress bar
    # TRL 1.16 calls transformers' deprecated `is_gradient_checkpointing` inside training: a warning
    # the user cannot act on, printed through the progress bar.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # model.quantization=8bit in fp32: bitsandbytes logs the cast on every matmul of every step; once says it.
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(first_of_each_message)
    transformers.utils.logging.disable_progress_bar()
    transformers.set_seed(cfg.seed)
    apply_threads(cfg.hardware)
    if cfg.hardware.device == "cpu":
        # what DeepSpeed finds by itself, as it is imported (the trainers import it), warning on every CPU run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from rlvr._compat import score_labelled_positions_only_on_cpu

        score_labelled_positions_only_on_cpu()


def run(cfg: DictConfig, accepted: Accepted) -> dict[str, float]:
    """Run an accepted start in its run dir, its start and end recorded; returns the final metrics."""
    from rlvr.hardware.distributed import close_process_group, is_main_process
    from rlvr.tracking.run_dir import record_end, record_start

    if accepted.earlier is not None:
        if is_main_process():
            print(
                f"rlvr: {accepted.run_dir} holds this job, finished with the same config: its metrics.json is the result", file=sys.stderr
            )
        close_process_group()
        return accepted.earlier
    if is_main_process():  # every check that can refuse the run has passed: now it may write
        record_start(accepted.run_dir, cfg, accepted.changed, accepted.start.mode)
    try:
        metrics = train(cfg, accepted)
    except BaseException as exc:
        ended = how_it_ended(exc)
        error = str(exc) if isinstance(exc, RlvrError) else f"{type(exc).__name__}: {exc}"  # RlvrError: the line printed
        record_end(accepted.run_dir, ended, error.splitlines()[0] if ended == "failed" and error.strip() else None)
        raise
    record_end(accepted.run_dir, "completed")
    close_process_group()
    return metrics


def train(cfg: DictConfig, accepted: Accepted) -> dict[str, float]:
    """The recorded start's work: its run.log, the process set up, the recipe."""
    from rlvr.tracking.outputs import start_run_log

    run_dir, start = accepted.run_dir, accepted.start
    start_run_log(run_dir)
    log.info(
        "run dir %s (offline=%s, processes=%d, %s)",
        run_dir,
        accepted.offline,
        accepted.processes,
        start.mode if start.checkpoint is None else f"{start.mode} from {start.checkpoint.name}",
    )
    asked = cfg.hardware.nodes * cfg.hardware.tasks_per_node
    if accepted.processes == 1 and asked > 1:
        log.warning(
            "hardware asks for %d processes but this is one process: start it with -m hydra/launcher=slurm "
            "(or local), torchrun or accelerate launch to train data-parallel",
            asked,
        )
    set_up_process(cfg)
    return accepted.recipe.train(cfg, run_dir, start)


def fail(exc: RlvrError, run_dir: Path, refused: bool) -> None:
    """One line naming the cause and the fix, exit code 2 (a job of a `-m` run: the sweep goes on).
    A refused start leaves nothing behind (`rlvr.launcher.forget_refused_start`)."""
    from rlvr._compat import close_progress_bars
    from rlvr.launcher import end_run, forget_refused_start

    logged = forget_refused_start(run_dir) if refused else True
    log.error("%s", exc, extra={"run_log_only": True})  # the console shows the line below
    line = f"rlvr: error: {exc}"
    close_progress_bars()  # the line comes last, on a line of its own
    print(line, file=sys.stderr, flush=True)
    end_run(2, line, logs=logged)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """The task Hydra runs (once, or per job of a `-m` run): start-up check, run, the objective for
    the sweeper. An error is one line (`fail`); a stop is one line from rlvr.hardware.stops."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.hardware.distributed import is_main_process
    from rlvr.launcher import announce_job, end_stopped_job, is_multirun, objective_value, stop_when_launcher_gone
    from rlvr.tracking.run_dir import storage_failure

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    announce_job(run_dir)
    accepted = None
    try:
        with stops_reported(run_dir):  # Ctrl-C, SIGTERM: one line, exit 130 / 143
            stop_when_launcher_gone()  # its SIGTERM needs these handlers: submitit's own only logs one
            accepted = start_up(cfg, run_dir)
            metrics = run(cfg, accepted)
    except RlvrError as exc:
        fail(exc, run_dir, refused=accepted is None)
    except SystemExit as stop:
        end_stopped_job(stop)  # a job of a -m run in its own process: reported by the launching process
    except Exception as exc:
        if accepted is not None and (storage := storage_failure(exc, accepted.run_dir)) is not None:
            fail(storage, run_dir, refused=False)
        # Not one of rlvr's errors: a bug, here or in a library. Hydra prints the traceback of a single run;
        # a -m job's reaches the launching process without its frames: its own log is where it is kept.
        log.exception(
            "stopped by an unexpected error (a bug: please report it with this traceback)", extra={"run_log_only": not is_multirun()}
        )
        raise
    if is_main_process():  # the others hold no eval results
        log.info("final metrics: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    log.info("done: everything this run wrote is in %s", accepted.run_dir)
    return objective_value(cfg, metrics)


def main() -> None:
    """Console-script entry: a one-line error for an unknown key before Hydra composes anything,
    and for a preset that does not fit or does not parse; a `-m` run's job that failed or stopped
    reported by `rlvr.launcher.report_end`, with the job's exit code."""
    from rlvr.launcher import report_end, report_ended_jobs_once

    exit_on_unknown_keys("rlvr", sys.argv[1:], groups=GROUPS)
    one_line_preset_errors("rlvr", report=report_end)
    report_ended_jobs_once()
    import signal

    try:
        hydra_main()
    except KeyboardInterrupt:  # a second Ctrl-C landing while the run was already exiting after its checkpoint
        sys.exit(EXIT_INTERRUPTED)
    finally:  # the run is over: a Ctrl-C or SIGTERM during the interpreter's exit changes nothing
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
