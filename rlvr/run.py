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

import hydra
from omegaconf import DictConfig, OmegaConf

from rlvr.config import check_ranges, conf_dir, exit_on_unknown_keys, one_line_preset_errors, register_schemas
from rlvr.data.loading import builtin_data_path
from rlvr.distributed import EXIT_INTERRUPTED, stops_reported
from rlvr.errors import RlvrError

log = logging.getLogger("rlvr")
CONF_DIR = conf_dir()
GROUPS = frozenset({"model", "dataset", "reward", "algorithm", "hardware", "logging", "eval", "experiment"})

OmegaConf.register_new_resolver("rlvr_data", builtin_data_path, replace=True)
register_schemas()


def needs_hub(cfg: DictConfig) -> bool:
    from rlvr.data.loading import is_local
    from rlvr.models import is_hub_name

    source = cfg.dataset.source
    return is_hub_name(cfg.model.name_or_path) or not (source.startswith("builtin:") or is_local(source))


def set_offline(cfg: DictConfig) -> bool:
    """HF_HUB_OFFLINE=1 when asked, or (offline=null) when nothing in the config lives on the Hub."""
    offline = (not needs_hub(cfg)) if cfg.offline is None else bool(cfg.offline)
    if offline:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[var] = "1"
    return offline


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the composed config in Hydra's output dir; returns the final metrics."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.distributed import close_process_group, export_torch_distributed, is_main_process
    from rlvr.hardware import check_device, export_device_environment
    from rlvr.models import check_quantization
    from rlvr.recipes import get_recipe
    from rlvr.run_dir import RunDirLock, record_start, resume_changes

    export_device_environment(cfg.hardware)  # first: check_ranges imports trl, hence torch
    check_ranges(cfg)
    check_device(cfg.hardware)
    check_quantization(cfg, cfg.hardware.device)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    recipe = get_recipe(cfg.algorithm.name)
    offline = set_offline(cfg)
    world_size = export_torch_distributed()
    RunDirLock(run_dir, main_process=is_main_process()).acquire()  # held until this process exits
    start = recipe.preflight(cfg, run_dir)  # may refuse; writes nothing
    changed = resume_changes(OmegaConf.to_container(cfg, resolve=True), start.checkpoint)
    if is_main_process():  # every check that can refuse the run has passed: now it may write
        record_start(run_dir, cfg, changed, start.mode)
    log.info("run dir %s (offline=%s, processes=%d, %s)", run_dir, offline, world_size,
             start.mode if start.checkpoint is None else f"{start.mode} from {start.checkpoint.name}")
    asked = cfg.hardware.nodes * cfg.hardware.tasks_per_node
    if world_size == 1 and asked > 1:
        log.warning("hardware asks for %d processes but this is one process: start it with -m hydra/launcher=slurm "
                    "(or local), torchrun or accelerate launch to train data-parallel", asked)

    from transformers import set_seed

    from rlvr.hardware import apply_threads

    import datasets
    import transformers

    datasets.disable_progress_bars()  # per-map and per-save bars drown the training progress bar
    # TRL 1.16 calls transformers' deprecated `is_gradient_checkpointing` inside training: a warning
    # the user cannot act on, printed through the progress bar.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # model.quantization=8bit on CPU: bitsandbytes says so on every matmul of every step.
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast from torch.float32 to float16")
    transformers.utils.logging.disable_progress_bar()
    set_seed(cfg.seed)
    apply_threads(cfg.hardware)
    if cfg.hardware.device == "cpu":
        from rlvr.cpu_log_probs import score_labelled_positions_only_on_cpu

        score_labelled_positions_only_on_cpu()
    metrics = recipe.train(cfg, run_dir, start)
    close_process_group()
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    try:
        with stops_reported(HydraConfig.get().runtime.output_dir):  # Ctrl-C, SIGTERM: one line, exit 130 / 143
            metrics = run(cfg)
    except RlvrError as exc:
        log.error("%s", exc)
        from tqdm import tqdm

        tqdm.write(f"rlvr: error: {exc}", file=sys.stderr)  # on a line of its own, also under a live progress bar
        sys.exit(2)
    summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    log.info("final metrics: %s", summary)
    log.info("done: everything this run wrote is in %s", HydraConfig.get().runtime.output_dir)
    return metrics.get(cfg.objective, float("nan"))


def main() -> None:
    """Console-script entry: a one-line error for an unknown key before Hydra composes anything."""
    exit_on_unknown_keys("rlvr", sys.argv[1:], groups=GROUPS)
    one_line_preset_errors("rlvr")
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
