"""Evaluate without training: a saved model, one checkpoint, or every checkpoint of a run (a curve).

    python -m rlvr.eval RUN_DIR                                  # every complete checkpoint: eval/curve.jsonl, plots/eval_checkpoints.png
    python -m rlvr.eval RUN_DIR/checkpoints/checkpoint-200 eval=pass_at_k
    python -m rlvr.eval RUN_DIR/final_model eval.n=16 'eval.ks=[1,4,16]'
    python -m rlvr.eval /models/Qwen2.5-0.5B-Instruct dataset=math500 reward=math_verify --output-dir evals/qwen

The config is the training tree (conf/, schema-checked): a target inside a run starts from the run's
config_resolved.yaml (model, dataset, reward, eval), and what the command line names replaces the
run's (a group choice its whole group, a key that key); outside a run the tree's defaults apply.
Each model's per-example rows and metrics go to `<out>/eval/<label>.jsonl` and `<label>.json`
(label: the checkpoint or directory name; out: --output-dir, else the run dir, else the model dir);
a re-run skips a model whose results exist with the same eval, dataset, reward and model settings.
A run's corrupt checkpoints are skipped, each named in one line, and the curve is of the others.
A LoRA adapter goes on its run's initial_policy/; outside its run dir, on the base model named with
model.name_or_path=... (refused without one: the default tiny model would be built with random weights).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from rlvr.config import Config, check_ranges, drop_retired_keys, exit_on_unknown_keys
from rlvr.hardware.distributed import COMPLETE, CORRUPT, checkpoint_problem, checkpoint_step, is_main_process, numbered_checkpoints
from rlvr.errors import ConfigError, RlvrError
from rlvr.run import CONF_DIR, GROUPS, set_offline, set_up_process

log = logging.getLogger("rlvr.eval")
USAGE = "usage: python -m rlvr.eval TARGET [--output-dir DIR] [group=option ...] [key=value ...]"
RUN_CONFIG = "config_resolved.yaml"
SETTINGS = ("model", "dataset", "reward", "eval")  # what a result depends on: a re-run with other values redoes it
CURVE = "curve.jsonl"


@dataclass
class Target:
    """What to evaluate: (label, model dir, training step or None) each, and the run they belong to."""

    models: list[tuple[str, Path, int | None]]
    run_dir: Path | None
    is_run: bool = False  # a whole run dir: also a curve over its checkpoints


def has_model(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "adapter_config.json").exists()


def run_dir_of(path: Path) -> Path | None:
    """The run a model dir belongs to: final_model/ or checkpoints/checkpoint-N inside a run dir."""
    for parent in (path.parent, path.parent.parent):
        if (parent / RUN_CONFIG).exists():
            return parent
    return None


def resolve_target(text: str) -> Target:
    """The target named on the command line, or a one-line ConfigError saying why it cannot be evaluated."""
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"target {text}: no such directory")
    if (path / RUN_CONFIG).exists() and not has_model(path):
        checkpoints = sound_checkpoints(path / "checkpoints")
        if not checkpoints:
            hint = f" (its final model: python -m rlvr.eval {path / 'final_model'})" if has_model(path / "final_model") else ""
            raise ConfigError(
                f"target {text}: the run dir has no complete checkpoint that is not corrupt "
                f"(checkpoints/checkpoint-N with {COMPLETE}){hint}"
            )
        return Target([(c.name, c, checkpoint_step(c)) for c in checkpoints], path, is_run=True)
    if not has_model(path):
        raise ConfigError(f"target {text}: no model there (no config.json or adapter_config.json), and it is not a run dir ({RUN_CONFIG})")
    run_dir = run_dir_of(path)
    if run_dir is not None and path.parent.name == "checkpoints" and path.name.split("-")[-1].isdigit():
        if not (path / COMPLETE).exists():
            why = "a resume found it corrupt" if (path / CORRUPT).exists() else "still being written, or cut short"
            raise ConfigError(f"target {text}: the checkpoint is not marked {COMPLETE} ({why})")
        if problem := checkpoint_problem(path):
            raise ConfigError(f"target {text}: the checkpoint is corrupt ({problem})")
        return Target([(path.name, path, checkpoint_step(path))], run_dir)
    return Target([(path.name, path, None)], run_dir)


def sound_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The checkpoints marked complete, lowest step first, less the corrupt ones, each named in one
    line: those a resume marked CORRUPT (rlvr.hardware.distributed.latest_complete_checkpoint) and those whose files
    fail the check a resume makes before loading (`checkpoint_problem`). Nothing is written: a run may
    be training in that dir."""
    checkpoints = []
    for checkpoint in numbered_checkpoints(checkpoint_dir):
        if not (checkpoint / COMPLETE).exists():
            if (checkpoint / CORRUPT).exists():
                log.warning("%s: skipped, marked %s by a resume that could not load it", checkpoint.name, CORRUPT)
        elif problem := checkpoint_problem(checkpoint):
            log.warning("%s: skipped, corrupt (%s)", checkpoint.name, problem)
        else:
            checkpoints.append(checkpoint)
    return checkpoints


def compose(overrides: list[str], run_dir: Path | None):
    """The eval's config: the run's (if any) with the command line's overrides on top, checked."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            composed = hydra_compose("config", overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).splitlines()[0]) from exc
    if run_dir is None:
        cfg = composed
    else:
        try:
            saved = OmegaConf.to_container(OmegaConf.load(run_dir / RUN_CONFIG))
            if retired := drop_retired_keys(saved):
                log.warning("%s: ignoring %s (written by an earlier rlvr; no longer settings)", run_dir / RUN_CONFIG, ", ".join(retired))
            cfg = OmegaConf.merge(OmegaConf.structured(Config), saved)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{run_dir / RUN_CONFIG}: {str(exc).splitlines()[0]}") from exc
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key == "experiment":
                raise ConfigError(
                    "experiment=... sets several groups at once: with a run's target, name the groups "
                    "or keys to change (dataset=..., eval=...)"
                )
            OmegaConf.update(cfg, key, OmegaConf.select(composed, key), merge=False)
    check_ranges(cfg)
    return cfg


def settings(cfg) -> dict:
    from omegaconf import OmegaConf

    return {name: OmegaConf.to_container(cfg[name], resolve=True) for name in SETTINGS}


def done_result(path: Path, wanted: dict) -> dict | None:
    """The saved result at `path` if it was made with the `wanted` settings."""
    from rlvr.tracking.outputs import read_json

    if not path.exists():
        return None
    result = read_json(path)
    return result if result.get("settings") == wanted else None


def evaluate_model(cfg, label: str, model_dir: Path, run_dir: Path | None, out_dir: Path) -> dict[str, float]:
    """`eval_<label>_*` metrics of the model in `model_dir`; eval/<label>.jsonl written under `out_dir`."""
    from rlvr.hardware.distributed import phase
    from rlvr.recipes.common import calibrate_rewards, eval_model, load_trained_policy, to_device
    from rlvr.rewards.checks import checked_rewards
    from rlvr.evaluation.vllm_engine import own_completer

    with phase("loading the model and data"):
        setup = load_trained_policy(cfg, run_dir, model_dir)
    data = setup.train if cfg.eval.split == "train" else setup.evaluation
    if data is None or len(data) == 0:
        raise ConfigError(f"dataset '{cfg.dataset.name}' has no {cfg.eval.split} split to evaluate on (eval.split={cfg.eval.split})")
    setup.rewards = checked_rewards(setup.rewards, cfg.reward.checks)
    calibrate_rewards(cfg, setup, run_dir or out_dir)  # a hybrid reward: the run's own scale
    with own_completer(cfg, setup.model, setup.tokenizer, model_dir) as engine:
        return eval_model(cfg, setup, engine or to_device(cfg, setup.model), out_dir, label)


def evaluate_target(target: Target, cfg, out_dir: Path) -> list[dict]:
    """One result per model of `target` (evaluated now, or read back when done with these settings)."""
    from rlvr.tracking.outputs import write_json

    wanted = settings(cfg)
    results = []
    for label, model_dir, step in target.models:
        path = out_dir / "eval" / f"{label}.json"
        result = done_result(path, wanted)
        if result is not None:
            log.info("%s: done (%s), skipped", label, path)
        else:
            log.info("%s: evaluating %s", label, model_dir)
            metrics = evaluate_model(cfg, label, model_dir, target.run_dir, out_dir)
            prefix = f"eval_{label}_"
            result = {
                "label": label,
                "model": str(model_dir),
                "step": step,
                "settings": wanted,
                "metrics": {k[len(prefix) :]: v for k, v in metrics.items()},
            }
            if is_main_process():
                write_json(path, result)  # atomic: a stop mid-write leaves no result, and the re-run redoes it
        results.append(result)
    return results


def write_curve(results: list[dict], out_dir: Path) -> Path:
    """eval/curve.jsonl (one row per checkpoint: step and `eval/<metric>`, as training logs them) and its plot."""
    from rlvr.plots import plot_eval_curve
    from rlvr.tracking.outputs import write_jsonl

    rows = [
        {"step": r["step"], "checkpoint": r["label"], **{f"eval/{k}": v for k, v in r["metrics"].items()}}
        for r in sorted(results, key=lambda r: r["step"])
    ]
    path = out_dir / "eval" / CURVE
    write_jsonl(path, rows)
    plot_eval_curve(rows, out_dir / "plots" / "eval_checkpoints.png", title="eval of each checkpoint")
    return path


def parse_args(argv: list[str]) -> tuple[str, str | None, list[str]]:
    """(target, output dir or None, Hydra overrides) from the command line; ConfigError on anything else."""
    target, output_dir, overrides = None, None, []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--output-dir"):
            output_dir = arg.split("=", 1)[1] if "=" in arg else next(args, None)
            if not output_dir:
                raise ConfigError("--output-dir needs a directory")
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg}")
        elif "=" in arg:
            overrides.append(arg)
        elif target is None:
            target = arg
        else:
            raise ConfigError(f"one target only, got {target} and {arg}")
    if target is None:
        raise ConfigError("no target: name a run dir, a checkpoints/checkpoint-N dir or a model dir")
    return target, output_dir, overrides


def run(argv: list[str]) -> list[dict]:
    from rlvr.recipes.common import check_adapter_base
    from rlvr.trainers.rollout_engine import check_vllm_here

    target_text, output_dir, overrides = parse_args(argv)
    target = resolve_target(target_text)
    cfg = compose(overrides, target.run_dir)
    for _, model_dir, _ in target.models:  # before anything loads or is written
        check_adapter_base(cfg, model_dir, target.run_dir)
        if cfg.eval.engine == "vllm":
            check_vllm_here(cfg, "eval.engine=vllm", model_dir)
    set_offline(cfg)
    out_dir = Path(output_dir).expanduser() if output_dir else target.run_dir or target.models[0][1]
    out_dir.mkdir(parents=True, exist_ok=True)
    set_up_process(cfg)
    results = evaluate_target(target, cfg, out_dir)
    if target.is_run and is_main_process():
        log.info("curve: %s", write_curve(results, out_dir))
    return results


def main(argv: list[str] | None = None) -> int:
    from rlvr.evaluation.metrics import with_uncertainty

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    exit_on_unknown_keys("rlvr.eval", [a for a in argv if "=" in a and not a.startswith("-")], groups=GROUPS)
    try:
        results = run(argv)
    except RlvrError as exc:
        print(f"rlvr.eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlvr.eval: stopped; the same command goes on from the models not yet evaluated", file=sys.stderr)
        return 130
    for result in results:
        metrics = result["metrics"]
        shown = ", ".join(
            f"{name}={with_uncertainty(metrics, name)}" for name in metrics if not name.endswith(("_se", "_ci_low", "_ci_high"))
        )
        print(f"{result['label']}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
