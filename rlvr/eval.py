"""Evaluate without training: a saved model, one checkpoint, or every checkpoint of a run (a curve).

    python -m rlvr.eval target=RUN_DIR                       # every complete checkpoint: eval/curve.jsonl, plots/eval_checkpoints.png
    python -m rlvr.eval target=RUN_DIR/checkpoints/checkpoint-200 eval=pass_at_k
    python -m rlvr.eval target=RUN_DIR/final_model eval.n=16 'eval.ks=[1,4,16]'
    python -m rlvr.eval target=/models/Qwen2.5-0.5B-Instruct model=qwen2.5_0.5b_instruct dataset=math500 reward=math_verify \
        eval.max_new_tokens=2048 dataset.eval_holdout=0 eval.split=train output_dir=evals/qwen   # all 500 problems
    python -m rlvr.eval -m target=RUN_A,RUN_B hydra/launcher=slurm  # one job per target, here on SLURM

A Hydra app on the training tree (conf/evaluate.yaml, schema `EvalAppConfig`), set up as `rlvr.run`
is; what it evaluates with, where results go, what a re-run skips: docs/evaluation.md.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rlvr.config import (
    Config,
    EvalAppConfig,
    check_key,
    check_ranges,
    drop_retired_keys,
    exit_on_unknown_keys,
    one_line_preset_errors,
    override_key,
    searchpath_dirs,
)
from rlvr.hardware.checkpoints import COMPLETE, CORRUPT, checkpoint_problem, checkpoint_step, numbered_checkpoints
from rlvr.hardware.distributed import is_main_process
from rlvr.errors import ConfigError, RlvrError
from rlvr.run import CONF_DIR, GROUPS, set_offline, set_up_process
from rlvr.launcher import dir_problem

log = logging.getLogger("rlvr.eval")
APP_KEYS = frozenset(f.name for f in dataclasses.fields(EvalAppConfig)) - {f.name for f in dataclasses.fields(Config)}
RUN_CONFIG = "config_resolved.yaml"
GONE = "gone (removed by the running training's rotation), skipped"  # a checkpoint deleted while the eval runs
RUN_GROUPS = "RLVR_EVAL_RUN_GROUPS"  # hydra.job.env_set: the groups chosen as the target's run chose them (`with_run_choices`)
SHARDED_WEIGHTS = "pytorch_model_fsdp_*"  # accelerate's sharded state dict: one part per process
# What a result depends on (a re-run with other values redoes it): the groups, and the keys outside them
# that an eval reads (the default eval length, the rows of a built-in dataset, the recipe's rewards,
# precision, how chat prompts render)
SETTINGS = (
    "model",
    "dataset",
    "reward",
    "eval",
    "seed",
    "algorithm.name",
    "algorithm.max_completion_length",
    "algorithm.trl.chat_template_kwargs",
    "algorithm.vllm.dtype",  # eval.engine=vllm's weights: bf16 and fp32 give other greedy completions
    "hardware.precision",
)
# The vLLM knobs of training's rollout engines, which rlvr.eval's own engine (one in this process) has no use for
ROLLOUT_ENGINE_ONLY = ("mode", "server_base_url", "tensor_parallel_size", "sleep_mode")


@dataclass
class Target:
    """What to evaluate: (label, model dir, training step or None) each, and the run they belong to."""

    models: list[tuple[str, Path, int | None]]
    run_dir: Path | None
    is_run: bool = False  # a whole run dir: also a curve over its checkpoints


def has_model(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "adapter_config.json").exists()


def read_yaml(path: Path) -> DictConfig:
    """A run's YAML file (config_resolved.yaml, .hydra/hydra.yaml), or a one-line ConfigError naming it."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.load(path)
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as exc:
        mark = getattr(exc, "problem_mark", None)  # YAML's own errors: where, and what
        why = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}" if mark else (str(exc).splitlines() or [""])[0]
        raise ConfigError(f"{path}: not a readable YAML file ({why})") from exc


def read_run_config(run: Path) -> DictConfig:
    """The run's config_resolved.yaml, or a one-line ConfigError naming it where it is no run's config
    (emptied, or overwritten by another file): read as it is, the tree's defaults would stand in for it."""
    config = read_yaml(run / RUN_CONFIG)
    missing = [group for group in GROUPS - {"experiment"} if not isinstance(config, DictConfig) or group not in config]
    if missing:
        raise ConfigError(
            f"{run / RUN_CONFIG}: not the config of a run (no {', '.join(sorted(missing))}): rlvr.run writes it as a run "
            f"starts; restore it from a copy of the run"
        )
    return config


def run_holding(path: Path) -> Path | None:
    """The run dir `path` is, or is in (its final_model/, a checkpoints/checkpoint-N); None outside a run."""
    return next((p for p in (path, path.parent, path.parent.parent) if (p / RUN_CONFIG).exists()), None)


def resolve_target(text: str) -> Target:
    """The target named on the command line, or a one-line ConfigError saying why it cannot be evaluated."""
    path = Path(text).expanduser().resolve()
    if path.is_file():
        raise ConfigError(f"target {text}: a file, not a directory: target= names a run dir, a checkpoints/checkpoint-N dir or a model dir")
    if not path.is_dir():
        raise ConfigError(f"target {text}: no such directory")
    run = run_holding(path)
    run_dir = run if run != path else None  # the run a model dir belongs to (its final_model/, a checkpoint)
    if run is not None and OmegaConf.select(read_run_config(run), "algorithm.name") == "reward_model":
        raise ConfigError(
            f"target {text}: a reward model (algorithm=reward_model): rlvr.eval evaluates policies by what they "
            f"generate; a reward model's eval is its pair accuracy, eval_pair_accuracy in {run / 'metrics.json'}"
        )
    if (path / RUN_CONFIG).exists() and not has_model(path):
        checkpoints = sound_checkpoints(path / "checkpoints")
        if not checkpoints:
            hint = f" (its final model: python -m rlvr.eval target={path / 'final_model'})" if has_model(path / "final_model") else ""
            raise ConfigError(
                f"target {text}: the run dir has no complete checkpoint that rlvr.eval can read "
                f"(checkpoints/checkpoint-N with {COMPLETE}){hint}"
            )
        return Target([(c.name, c, checkpoint_step(c)) for c in checkpoints], path, is_run=True)
    if not has_model(path):
        jobs = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / RUN_CONFIG).exists()), key=lambda p: int(p.name))
        sweep = f" (a -m run's sweep dir: python -m rlvr.eval -m target={','.join(map(str, jobs))})" if jobs else ""
        raise ConfigError(f"target {text}: no model there (no config.json or adapter_config.json), and not a run dir ({RUN_CONFIG}){sweep}")
    if run_dir is not None and path.parent.name == "checkpoints" and path.name.split("-")[-1].isdigit():
        if not (path / COMPLETE).exists():
            why = "a resume found it corrupt" if (path / CORRUPT).exists() else "still being written, or cut short"
            raise ConfigError(f"target {text}: the checkpoint is not marked {COMPLETE} ({why})")
        if problem := unusable_checkpoint(path):
            raise ConfigError(f"target {text}: the checkpoint is {problem}")
        return Target([(path.name, path, checkpoint_step(path))], run_dir)
    if re.fullmatch(r"before|after|step-\d+|curve", path.name):
        owner = "rlvr.eval's curve of a run's checkpoints" if path.name == "curve" else f"a run's own eval (eval_{path.name}_*)"
        raise ConfigError(
            f"target {text}: a model dir named '{path.name}' would write its rows as eval/{path.name}.jsonl, "
            f"the file of {owner}: rename (or copy) the dir"
        )
    return Target([(path.name, path, None)], run_dir)


def unusable_checkpoint(checkpoint: Path) -> str | None:
    """Why a checkpoint marked complete cannot be evaluated, found without reading a tensor ("corrupt (...)",
    or "sharded ..."): the check a resume makes (`checkpoint_problem`), then what loading its model needs
    (its weights, config and, for a whole model, tokenizer: `saved_model_problem`); None if nothing."""
    from rlvr.models.loading import saved_model_problem

    problem = checkpoint_problem(checkpoint) or saved_model_problem(checkpoint)
    if problem and any(checkpoint.glob(SHARDED_WEIGHTS)):
        return "sharded (FSDP): rlvr.eval reads whole models, as the run's final_model/ is"
    return problem and f"corrupt ({problem})"


def sound_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The checkpoints marked complete, lowest step first; each other one named in one line: those a
    resume marked CORRUPT (rlvr.hardware.checkpoints.latest_complete_checkpoint), those whose files an
    eval cannot use (`unusable_checkpoint`), and those not marked complete (the newest of a run that
    is training is being written). Nothing is written: a run may be training in that dir."""
    from rlvr.tracking.run_dir import RunDirLock

    checkpoints, found = [], numbered_checkpoints(checkpoint_dir)
    for checkpoint in found:
        if not (checkpoint / COMPLETE).exists():
            if (checkpoint / CORRUPT).exists():
                log.warning("%s: skipped, marked %s by a resume that could not load it", checkpoint.name, CORRUPT)
            elif not checkpoint.is_dir():
                log.warning("%s: %s", checkpoint.name, GONE)
            elif checkpoint == found[-1] and RunDirLock(checkpoint_dir.parent).in_use():
                log.info("%s: skipped, not marked %s: still being written by the training in this run dir", checkpoint.name, COMPLETE)
            else:
                log.warning("%s: skipped, not marked %s (cut short: its run stopped or crashed while saving it)", checkpoint.name, COMPLETE)
        elif problem := unusable_checkpoint(checkpoint):
            if checkpoint.is_dir():
                log.warning("%s: skipped, %s", checkpoint.name, problem)
            else:
                log.warning("%s: %s", checkpoint.name, GONE)
        else:
            checkpoints.append(checkpoint)
    return checkpoints


def compose(overrides: list[str], run_dir: Path | None) -> DictConfig:
    """`eval_config` of the training tree composed with `overrides` (Hydra's compose API), as the app does."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            composed = hydra_compose("config", overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).splitlines()[0]) from exc
    return eval_config(composed, overrides, run_dir)


def rebase_relative_paths(saved: dict, run_dir: Path) -> None:
    """Make the relative local paths of a run's config (data files, model and reward-model dirs) that
    the run found from the directory it started in absolute (that directory: Hydra's runtime.cwd in the
    run's .hydra/hydra.yaml), so that an eval run from anywhere reads what the run read, with the same
    settings (its saved results are reused by them)."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    started_in = OmegaConf.select(read_yaml(hydra_file), "hydra.runtime.cwd") if hydra_file.exists() else None
    if not started_in:
        return

    def from_start_dir(value):
        if isinstance(value, str) and value and not Path(value).is_absolute() and (Path(started_in) / value).exists():
            return str(Path(started_in) / value)
        return value

    dataset, model = saved.get("dataset", {}), saved.get("model", {})
    places = [(dataset, "source"), (dataset, "eval_source"), (model, "name_or_path")]
    places += [(entry, "reward_model") for entry in (saved.get("reward", {}).get("functions") or {}).values() if isinstance(entry, dict)]
    for node, key in places:
        if key in node:
            node[key] = from_start_dir(node[key])
    if dataset.get("mixer"):
        dataset["mixer"] = {from_start_dir(name): amount for name, amount in dataset["mixer"].items()}


def eval_config(composed: DictConfig, overrides: list[str], run_dir: Path | None, models: list[Path] = ()) -> DictConfig:
    """The config the models are evaluated with, checked: outside a run, `composed` (the tree with the
    command line's `overrides`); inside one, the run's config_resolved.yaml, with each key or group an
    override names taken from `composed`. The app's own keys (`APP_KEYS`) are not settings: left out.
    With the target's `models`, its `model` group is theirs (`model_as_saved`). Sets the offline
    environment it asks for (`rlvr.run.set_offline`)."""
    from omegaconf.errors import OmegaConfBaseException

    settings_only = OmegaConf.masked_copy(composed, [f.name for f in dataclasses.fields(Config)])
    saved_model = None  # the run's model settings, before the command line's
    if run_dir is None:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), settings_only)
    else:
        try:
            saved = OmegaConf.to_container(read_run_config(run_dir))
            rebase_relative_paths(saved, run_dir)
            if retired := drop_retired_keys(saved):
                log.warning("%s: ignoring %s (written by an earlier rlvr; no longer settings)", run_dir / RUN_CONFIG, ", ".join(retired))
            cfg = OmegaConf.merge(OmegaConf.structured(Config), saved)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{run_dir / RUN_CONFIG}: {str(exc).splitlines()[0]}") from exc
        saved_model = copy.deepcopy(cfg.model)
        for override in overrides:
            key = override_key(override)
            if key in APP_KEYS:
                continue
            if key == "experiment":
                raise ConfigError(
                    "experiment=... sets several groups at once: with a run's target, name the groups "
                    "or keys to change (dataset=..., eval=...)"
                )
            if override.startswith("~"):  # a deletion (`~reward.functions.answer_spans`): gone from the run's too
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if node is not None and leaf in node:
                    del node[leaf]
                continue
            OmegaConf.update(cfg, key, OmegaConf.select(settings_only, key), merge=False)
    if models:
        model_as_saved(cfg, overrides, list(models), run_dir, saved_model)
    set_offline(cfg)  # before check_ranges imports transformers: huggingface_hub reads it once, at its import
    check_ranges(cfg)
    return cfg


# The model.* keys that loading a saved model reads (rlvr.recipes.common.load_saved_model); it fixes
# the others: its shape, tokenizer and vocabulary (reasoning copies included) are its files', and its
# warm-up, LoRA and quantization were its training's
LOAD_KEYS = ("dtype", "attn_implementation", "trust_remote_code")
# and those that build a LoRA adapter's base where no run's initial_policy/ holds one (rlvr.models.loading.load_policy)
BASE_KEYS = ("name_or_path", "revision", "quantization", "tiny")
WHERE_KEYS = ("name_or_path", "revision")  # where a model loads from: outside a run, the target is
TRAINING_KEYS = ("warmup_sft_steps", "warmup_sft_learning_rate", "warmup_sft_batch_size", "lora", "quantization")


def applied_model_keys(models: list[Path], run_dir: Path | None) -> tuple[str, ...]:
    """The model.* keys (top-level names) that loading each of `models` reads: `LOAD_KEYS`, and
    `BASE_KEYS` where each is a LoRA adapter merged onto the model group's base."""
    from rlvr.recipes.common import initial_policy_dir, is_adapter

    on_group_base = all(is_adapter(path) for path in models) and (run_dir is None or initial_policy_dir(run_dir) is None)
    return LOAD_KEYS + BASE_KEYS if on_group_base else LOAD_KEYS


def override_setting(overrides: list[str], key: str) -> str | None:
    """The command line's override that sets model.`key`: the last that names it or a node above it,
    else the last group choice that may (`model=...`, `experiment=...`); None: the tree's default."""
    names = [(override, override_key(override)) for override in reversed(overrides)]
    full = f"model.{key}"
    named = next((o for o, name in names if name.startswith("model.") and (full == name or full.startswith(name + "."))), None)
    return named or next((o for o, name in names if name == "model"), None) or next((o for o, name in names if name == "experiment"), None)


def shown(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def model_as_saved(cfg, overrides: list[str], models: list[Path], run_dir: Path | None, saved_model) -> None:
    """Make `cfg.model` describe the models evaluated, as they load: the run's model settings
    (`saved_model`; outside a run, the schema's, with the target as `name_or_path`: nothing built,
    expanded or trained here) with the keys their loading reads (`applied_model_keys`) taken from
    `cfg`. An override that would change any other key is refused in one line naming it: loading
    ignores it, and the result would record it as applied. A group choice (`model=...`,
    `experiment=...`) may differ in the training keys (`TRAINING_KEYS`), and outside a run in where
    the model loads from (`WHERE_KEYS`): those are the saved model's, whatever the group says."""
    from omegaconf.errors import OmegaConfBaseException

    from rlvr.config import ModelConfig
    from rlvr.tracking.run_dir import flatten

    applied = applied_model_keys(models, run_dir)
    base = copy.deepcopy(saved_model) if saved_model is not None else OmegaConf.structured(ModelConfig)
    if saved_model is None and "name_or_path" not in applied:
        base.name_or_path, base.revision = str(models[0]), None
    try:
        asked, have = (flatten(OmegaConf.to_container(node, resolve=True)) for node in (cfg.model, base))
    except OmegaConfBaseException:  # an interpolation that does not resolve: check_ranges names it
        return
    where = f"the saved model {models[0]} fixes" if len(models) == 1 else f"the saved models of {run_dir} fix"
    takes = ", ".join(f"model.{key}" for key in applied)
    for key, value in asked.items():
        top = key.split(".")[0]
        if top in applied or value == have.get(key) or (said := override_setting(overrides, key)) is None:
            continue
        chosen = override_key(said)
        if chosen == "experiment":  # picked for its other groups: its model keys are the saved model's
            continue
        if chosen == "model" and (top in TRAINING_KEYS or (saved_model is None and key in WHERE_KEYS)):
            continue
        runs = f" (its run's value: {shown(have.get(key))})" if saved_model is not None else ""
        what = f"{said} sets model.{key}={shown(value)}, which {where}" if chosen == "model" else f"{said}: {where} model.{key}"
        raise ConfigError(
            f"{what}{runs}: it loads as it was saved, with its own shape, tokenizer, vocabulary and training; "
            f"leave the override out (of model.*, only {takes} apply to a saved model) or evaluate another model as the target"
        )
    for key in applied:
        base[key] = cfg.model[key]
    cfg.model = base


def evaluate_model(cfg, label: str, model_dir: Path, run_dir: Path | None, out_dir: Path) -> tuple[dict[str, float], int | None]:
    """(`eval_<label>_*` metrics of the model in `model_dir`, how many eval prompts were dropped: no room
    for a completion in its context; None where the model states no context); eval/<label>.jsonl written
    under `out_dir`."""
    from rlvr.hardware.stops import phase
    from rlvr.recipes.common import calibrate_rewards, eval_model, load_trained_policy, to_device
    from rlvr.rewards.checks import checked_rewards
    from rlvr.evaluation.vllm_engine import own_completer

    with phase("loading the model and data"):
        setup = load_trained_policy(cfg, run_dir, model_dir)
    if setup.evaluation is None or len(setup.evaluation) == 0:
        raise ConfigError(f"dataset '{cfg.dataset.name}' has no {cfg.eval.split} split to evaluate on (eval.split={cfg.eval.split})")
    setup.rewards = checked_rewards(setup.rewards, cfg.reward.checks)
    # a hybrid reward: the run's own scale, where its reward model is the run's; else one kept in eval/,
    # beside the results (never the run's own file; in a bare model's dir it would change the
    # files_fingerprint the reuse of its results checks)
    calibrate_rewards(cfg, setup, out_dir / "eval", run_dir)
    with own_completer(cfg, setup.model, setup.tokenizer, model_dir) as engine:
        metrics = eval_model(cfg, setup, engine or to_device(cfg, setup.model), out_dir, label)
    return metrics, setup.prompts_dropped.get("eval_prompts_dropped_too_long")


def to_plain(value):
    """A config value as plain Python (a node resolved to dicts and lists)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def data_fingerprints(cfg) -> dict[str, str]:
    """{path: `files_fingerprint`} of each local file the dataset reads (dataset.source,
    dataset.eval_source, the mixer's sources): a data file written anew (other rows, other gold
    answers) changes it. Builtins and Hub names have none."""
    from rlvr.data.loading import local_files
    from rlvr.tracking.outputs import files_fingerprint

    return {str(path): files_fingerprint(path) for path in local_files(cfg.dataset, with_eval=True)}


def named_files(value) -> list[str]:
    """The strings in a reward function's arguments (nested ones, a verifier's, included)."""
    if isinstance(value, dict):
        return [text for key, item in value.items() if key != "_target_" for text in named_files(item)]
    if isinstance(value, list):
        return [text for item in value for text in named_files(item)]
    return [value] if isinstance(value, str) and value.strip() else []


def local_input(text: str) -> Path | None:
    """The local file or directory an argument names, else None: a Hub name in the Hub cache is the
    snapshot it loads from; the filesystem's root, the home and working directories and those above
    them are no input (a "/" or "." argument is a separator or a default, not the tree below it)."""
    from rlvr.models.loading import hub_cached_config

    path = Path(text).expanduser()
    if not path.exists() and (cached := hub_cached_config(text)) is not None:
        path = cached.parent
    if not path.exists():
        return None
    here = path.resolve()
    if any(here == place or here in place.parents for place in (Path.cwd().resolve(), Path.home().resolve())):
        return None
    return here


def reward_fingerprints(cfg) -> dict[str, str]:
    """{argument: `files_fingerprint`} of each local file or directory a reward function's arguments
    name (`local_input`: a hybrid reward's reward model, a reward's word list, ...), of a run dir's
    final_model/ (the model a hybrid reward loads from it): a reward model trained again, or another
    one copied to the same path, changes it. Also {"<module> (code)": ...} of the source file of each
    module a `_target_` names: a reward's code edited changes it."""
    from rlvr.tracking.outputs import files_fingerprint

    functions = to_plain(cfg.reward.functions) or {}
    texts = {text for settings in functions.values() if isinstance(settings, dict) for text in named_files(settings)}
    paths = {text: path for text in sorted(texts) if (path := local_input(text)) is not None}
    modules = {target.rpartition(".")[0] for settings in functions.values() for target in named_targets(settings)}
    code = {f"{module} (code)": files_fingerprint(source) for module in sorted(modules) if (source := module_file(module))}
    return {
        text: files_fingerprint(path / "final_model" if (path / "final_model").is_dir() else path) for text, path in paths.items()
    } | code


def named_targets(value) -> list[str]:
    """The `_target_`s in a reward function's settings (nested ones, a verifier's, included)."""
    if isinstance(value, dict):
        own = [value["_target_"]] if isinstance(value.get("_target_"), str) else []
        return own + [target for key, item in value.items() if key != "_target_" for target in named_targets(item)]
    if isinstance(value, list):
        return [target for item in value for target in named_targets(item)]
    return []


def module_file(module: str) -> Path | None:
    """The source file of the module `module` names, where it is one (a user's reward module edited
    between two evals changes its fingerprint); None where it cannot be found."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        return None
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    return origin if origin is not None and origin.is_file() else None


def eval_inputs(cfg) -> dict:
    """What a saved result must have been made with to stand for a model's eval now: the SETTINGS'
    values and the fingerprints of the local data files and of the rewards' local inputs."""
    return {
        "settings": {name: to_plain(OmegaConf.select(cfg, name)) for name in SETTINGS},
        "data": data_fingerprints(cfg),
        "reward_files": reward_fingerprints(cfg),
    }


def made_with(result: dict) -> dict:
    """The `eval_inputs` a saved result records (one saved before data or reward files were recorded: none)."""
    return {"settings": result.get("settings"), "data": result.get("data", {}), "reward_files": result.get("reward_files", {})}


def evaluate_target(target: Target, cfg, out_dir: Path, inputs: dict) -> list[dict]:
    """One result per model of `target` (`model_result`); in a curve, a checkpoint that the running
    training's rotation deletes before or while it is evaluated is skipped with a line, and the
    checkpoints saved since the curve listed them join it."""
    from rlvr.recipes.common import warn_if_cut_short

    results, models = [], list(target.models)
    listed = {label for label, _, _ in models}
    while models:
        label, model_dir, step = models.pop(0)
        try:
            result = model_result(cfg, target, (label, model_dir, step), inputs, out_dir)
        except Exception as exc:
            # a checkpoint found sound when listed, no longer so: deleted while it loaded (whole, or part of it)
            lost = None if step is None else "removed" if not model_dir.is_dir() else unusable_checkpoint(model_dir)
            if lost is None:
                raise
            if not target.is_run:
                raise ConfigError(f"target {model_dir}: {lost} while it was evaluated (a running training's rotation?)") from exc
            log.warning("%s: %s", label, GONE if lost == "removed" else f"{lost} while it was evaluated, skipped")
            saved_since = [c for c in sound_checkpoints(target.run_dir / "checkpoints") if c.name not in listed]
            listed |= {c.name for c in saved_since}
            models += [(c.name, c, checkpoint_step(c)) for c in saved_since]
            continue
        warn_if_cut_short(cfg, result["label"], result["metrics"].get("truncated_frac", 0.0))
        results.append(result)
    return results


def model_result(cfg, target: Target, model: tuple[str, Path, int | None], inputs: dict, out_dir: Path) -> dict:
    """The result of one model of `target`: evaluated now, or read back when it was done with these
    `inputs` (settings, data files' and reward inputs' fingerprints) on these very model files (a continued run
    rewrites final_model/ and may rebuild a checkpoint). A result of another model under the same label
    (two runs' final_model/ into one output_dir) is refused in one line, not overwritten."""
    from rlvr.tracking.outputs import read_jsonl, write_json

    label, model_dir, step = model
    path = out_dir / "eval" / f"{label}.json"
    result = saved_result(path)
    other = result.get("model") if result is not None else None
    if other and other != str(model_dir) and Path(other).is_dir() and out_dir not in (target.run_dir, model_dir):  # not a copied run
        raise ConfigError(f"{path} holds the result of another model of the same name ({other}): give {model_dir} an output_dir of its own")
    files = model_fingerprint(cfg, model_dir, target.run_dir)
    if result is not None and made_with(result) == inputs and result.get("files") == files:
        log.info("%s: done (%s), skipped", label, path)
        return result
    log.info("%s: evaluating %s", label, model_dir)
    metrics, dropped = evaluate_model(cfg, label, model_dir, target.run_dir, out_dir)
    prefix = f"eval_{label}_"
    result = {
        "label": label,
        "model": str(model_dir),
        "step": step,
        **inputs,
        "files": files,
        "metrics": {k[len(prefix) :]: v for k, v in metrics.items()},
    }
    if is_main_process():
        if (rows := out_dir / "eval" / f"{label}.jsonl").exists():  # one row per prompt scored
            result["prompts"] = len(read_jsonl(rows))
            result["prompts_dropped_too_long"] = dropped
        write_json(path, result)  # atomic: a stop mid-write leaves no result, and the re-run redoes it
    return result


def model_fingerprint(cfg, model_dir: Path, run_dir: Path | None) -> str:
    """`files_fingerprint` of the model's files; for a LoRA adapter also of the base it is merged into
    (`load_saved_policy`'s: the run's initial_policy/, else a local model.name_or_path): a base saved
    anew under the same name makes another model of the same adapter."""
    from rlvr.models.loading import local_model_files
    from rlvr.recipes.common import initial_policy_dir, is_adapter
    from rlvr.tracking.outputs import files_fingerprint

    files = files_fingerprint(model_dir)
    if not is_adapter(model_dir):
        return files
    base = (initial_policy_dir(run_dir) if run_dir is not None else None) or (
        Path(cfg.model.name_or_path).expanduser() if local_model_files(cfg.model.name_or_path) else None
    )
    return files if base is None else f"{files} on {files_fingerprint(base)}"


def saved_result(path: Path) -> dict | None:
    """The result an earlier eval saved at `path`; None if there is none, or (with a warning) if it
    cannot be read (emptied or cut short outside rlvr, which writes it whole): it is evaluated again."""
    from rlvr.tracking.outputs import read_json

    if not path.exists():
        return None
    try:
        result = read_json(path)
        problem = None if isinstance(result, dict) else f"a JSON {type(result).__name__}, not an object"
    except ValueError as exc:  # bad JSON or bad UTF-8
        problem = str(exc)
    if problem is not None:
        log.warning("%s: not a result rlvr.eval can read (%s): its model is evaluated again", path, problem)
        return None
    return result


def rotated_away(results: list[dict], inputs: dict, out_dir: Path, checkpoint_dir: Path) -> list[dict]:
    """The results in `out_dir/eval` of checkpoints of `checkpoint_dir` that are gone (a training's
    rotation deleted them after an earlier eval) made with this eval's `inputs`: points of the curve
    that cannot be redone."""
    labels, kept = {r["label"] for r in results}, []
    for path in sorted((out_dir / "eval").glob("checkpoint-*.json")):
        if (result := saved_result(path)) is None:
            continue
        model = Path(result.get("model") or "")
        if result.get("label") not in labels and made_with(result) == inputs and model.parent == checkpoint_dir and not model.is_dir():
            kept.append(result)
    return kept


def check_curve_kept(target: Target, out_dir: Path, inputs: dict) -> None:
    """One checkpoint of a run evaluated with other `inputs` than its point on the curve in `out_dir`
    (eval/curve.jsonl) is refused in one line: its result would be replaced while the curve and its
    plot kept the earlier figures. A whole run's eval rewrites its curve from its own results."""
    from rlvr.tracking.outputs import read_jsonl
    from rlvr.tracking.run_dir import changed_leaves, listed

    curve = out_dir / "eval" / "curve.jsonl"
    if target.is_run or not curve.exists():
        return
    on_curve = {row.get("checkpoint") for row in read_jsonl(curve)}
    for label, _, step in target.models:
        if step is None or label not in on_curve or (result := saved_result(out_dir / "eval" / f"{label}.json")) is None:
            continue
        if changed := changed_leaves(made_with(result), inputs):
            raise ConfigError(
                f"{curve} holds {label} evaluated with other inputs ({listed(changed)}): evaluated alone it would "
                f"disagree with the curve; evaluate the whole run (target={target.run_dir}) or give it an output_dir of its own"
            )


def write_curve(results: list[dict], out_dir: Path) -> Path:
    """eval/curve.jsonl (one row per checkpoint: step and `eval/<metric>`, as training logs them) and its plot."""
    from rlvr.plots import plot_eval_curve
    from rlvr.tracking.outputs import write_jsonl

    rows = [
        {"step": r["step"], "checkpoint": r["label"], **{f"eval/{k}": v for k, v in r["metrics"].items()}}
        for r in sorted(results, key=lambda r: r["step"])
    ]
    path = out_dir / "eval" / "curve.jsonl"
    write_jsonl(path, rows)
    plot_eval_curve(rows, out_dir / "plots" / "eval_checkpoints.png", title="eval of each checkpoint")
    return path


def output_problem(out_dir: Path, labels: list[str]) -> str | None:
    """Why the eval cannot write its files under `out_dir` (`dir_problem`; its eval/ or plots/ a file, or a
    result file's name taken by a directory), found before anything loads; None when it can."""
    if (problem := dir_problem(out_dir)) is not None:
        return problem
    for path in (out_dir / "eval", out_dir / "plots"):
        if path.exists() and not path.is_dir():
            return f"{path} is a file, not a directory"
    results = [out_dir / "eval" / f"{label}{suffix}" for label in labels for suffix in (".json", ".jsonl")]
    taken = [path for path in results if path.is_dir()]
    return f"{taken[0]} is a directory, where the eval writes its result" if taken else None


def run(target_text: str, output_dir: str | None, composed: DictConfig, overrides: list[str]) -> list[dict]:
    """Evaluate what `target_text` names with `eval_config(composed, overrides, its run)`; every check
    that can refuse it runs before anything loads or is written."""
    from rlvr.recipes.common import check_adapter_base
    from rlvr.trainers.rollout_engine import check_vllm_here

    target = resolve_target(target_text)
    cfg = eval_config(composed, overrides, target.run_dir, [model_dir for _, model_dir, _ in target.models])
    named = [o for o in overrides if override_key(o) in {f"algorithm.vllm.{key}" for key in ROLLOUT_ENGINE_ONLY}]
    if named:
        raise ConfigError(
            f"{named[0]}: rlvr.eval starts no rollout engine, and its own vLLM engine (eval.engine=vllm) is one in this "
            f"process: training's algorithm.vllm.{{{','.join(ROLLOUT_ENGINE_ONLY)}}} are not used: leave it out"
        )
    for _, model_dir, _ in target.models:
        check_adapter_base(cfg, model_dir, target.run_dir)
        if cfg.eval.engine == "vllm":
            check_vllm_here(cfg, "eval.engine=vllm", model_dir)
    out_dir = Path(output_dir).expanduser() if output_dir else target.run_dir or target.models[0][1]
    if (problem := output_problem(out_dir, [label for label, _, _ in target.models])) is not None:
        raise ConfigError(f"output_dir={out_dir}: {problem}")
    inputs = eval_inputs(cfg)
    check_curve_kept(target, out_dir, inputs)
    set_up_process(cfg)
    results = evaluate_target(target, cfg, out_dir, inputs)
    if target.is_run and is_main_process():
        if not (curve := results + rotated_away(results, inputs, out_dir, target.run_dir / "checkpoints")):
            raise ConfigError(
                f"target {target.run_dir}: the running training's rotation removed every checkpoint before its turn: evaluate it "
                "once training has ended, or train with a larger algorithm.save_total_limit"
            )
        log.info("curve: %s", write_curve(curve, out_dir))
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def hydra_main(app: DictConfig) -> None:
    """The task Hydra runs (once, or per job of a `-m` run): each model's metrics printed, a line each.
    An error is one line; a job of a `-m` run that fails lets the sweep go on (`rlvr.launcher.end_run`)."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.evaluation.metrics import with_uncertainty
    from rlvr.launcher import end_run

    try:
        if OmegaConf.is_missing(app, "target") or not str(app.target or "").strip():
            raise ConfigError("no target: target=PATH names a run dir, a checkpoints/checkpoint-N dir or a model dir")
        hydra_cfg = HydraConfig.get()
        from_run = str(hydra_cfg.job.env_set.get(RUN_GROUPS, "")).split()  # `with_run_choices`: the run's, not the command line's
        overrides = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0] not in from_run]
        results = run(app.target, app.output_dir, app, overrides)
    except RlvrError as exc:
        line = f"rlvr.eval: error: {exc}"
        print(line, file=sys.stderr)
        end_run(2, line)
    except KeyboardInterrupt:
        print("rlvr.eval: stopped; the same command goes on from the models not yet evaluated", file=sys.stderr)
        sys.exit(130)
    for result in results:
        metrics = result["metrics"]
        shown = ", ".join(
            f"{name}={with_uncertainty(metrics, name)}" for name in metrics if not name.endswith(("_se", "_ci_low", "_ci_high"))
        )
        dropped = f", {n} dropped: too long for the context" if (n := result.get("prompts_dropped_too_long")) else ""
        scored = f" ({result['prompts']} prompts scored{dropped})" if "prompts" in result else ""
        print(f"{result['label']}: {shown}{scored}")


def option_dir(group: str, option: str, dirs: list) -> str | None:
    """The first of the config dirs `dirs` that holds `group`'s `option` (group/option.yaml)."""
    return next((str(d) for d in dirs if d and (Path(d) / group / f"{option}.yaml").is_file()), None)


def run_choices(target: str, groups: set[str], here: list) -> dict[str, tuple[str, str | None]] | None:
    """{group: (option, where)} of the options that the run of `target` (a run dir, its final_model/
    or a checkpoint) chose for `groups`, as its .hydra/hydra.yaml records them (`hydra.runtime.choices`),
    `where` None when one of the config dirs `here` holds it, else the run's preset dir (`--config-dir`)
    that does, else ""; None for a target outside a run, or a run that recorded none."""
    path = Path(target).expanduser().resolve()
    run = run_holding(path)
    if run is None or not (run / ".hydra" / "hydra.yaml").is_file():
        return None
    try:
        runtime = OmegaConf.select(read_yaml(run / ".hydra" / "hydra.yaml"), "hydra.runtime") or {}
    except ConfigError:
        return None
    chosen = runtime.get("choices") or {}
    sources = [s.get("path") for s in runtime.get("config_sources") or [] if s.get("schema") == "file" and s.get("provider") != "main"]
    found = {}
    for group in groups:
        if option := chosen.get(group):
            if option_dir(group, option, here):
                found[group] = (option, None)
            else:
                found[group] = (option, option_dir(group, option, sources) or "")
    return found


def schema_key(key: str) -> bool:
    """Whether `key` is a field of the schema (not one inside a free-form mapping such as reward.functions)."""
    try:
        return check_key(key, EvalAppConfig)
    except ConfigError:
        return False


def with_run_choices(args: list[str]) -> list[str]:
    """The command line `args`, with the options that the target's run chose for each group whose keys
    it sets without choosing the group (`reward.functions.hybrid.reward_model=...` of a `reward=hybrid`
    run), so that Hydra composes those keys on the run's presets, not the tree's defaults: a
    `group=option` each (with `--config-dir` for a preset dir the run named, where the command line
    names none), and `hydra.job.env_set.RLVR_EVAL_RUN_GROUPS`, which tells `hydra_main` that these
    are the run's own, not choices of the command line (`eval_config` keeps the run's groups). Added
    only where every target is in a run that chose the same option (a `-m` sweep over targets), and
    not beside `experiment=` (refused with a run's target). A ConfigError for a key of a run's option
    found nowhere (its preset dir not named here, or gone), that the schema does not hold."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parsed, _ = get_args_parser().parse_known_args(args)
    try:
        overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    except HydraException:  # Hydra words it, in one line
        return args
    names = [o.key_or_group for o in overrides]
    chosen = {name for name in names if name in GROUPS}
    needed = {name.split(".")[0] for name in names if "." in name} & GROUPS - chosen
    targets = [
        t
        for o in overrides
        if o.key_or_group == "target"
        for t in (o.sweep_string_iterator() if o.is_sweep_override() else [str(o.value())])
    ]
    if not needed or not targets or "experiment" in chosen:
        return args
    found = [run_choices(t, needed, [CONF_DIR, parsed.config_dir, *searchpath_dirs(parsed.overrides)]) for t in targets]
    if any(f is None for f in found):
        return args
    for target, choices in zip(targets, found):
        for group, (option, where) in choices.items():
            if where == "" and (key := next((n for n in names if n.startswith(f"{group}.") and not schema_key(n)), None)):
                raise ConfigError(
                    f"{key}: a key of {group}={option}, which the run of target {target} chose, and no config dir here holds "
                    f"{group}/{option}.yaml: name the preset dir that does (--config-dir DIR), or choose the group ({group}=...)"
                )
    agreed = {
        group: found[0][group] for group in sorted(needed) if group in found[0] and all(f.get(group) == found[0][group] for f in found)
    }
    preset_dir = None if parsed.config_dir else next((where for _, where in agreed.values() if where), None)
    agreed = {group: option for group, (option, where) in agreed.items() if where in (None, preset_dir) and where != ""}
    if not agreed:
        return args
    added = [f"{group}={option}" for group, option in agreed.items()] + [f"++hydra.job.env_set.{RUN_GROUPS}='{' '.join(agreed)}'"]
    at = args.index(parsed.overrides[0])  # beside the command line's overrides: Hydra's parser takes them as one run of arguments
    return (["--config-dir", preset_dir] if preset_dir else []) + args[:at] + added + args[at:]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry (`argv`: the command line's arguments, else sys.argv's): one line for an
    unknown key, a bare path (targets are named `target=`) or a preset that does not fit, before
    Hydra composes anything; a `-m` run's failed job reported by `rlvr.launcher.report_end`."""
    from rlvr.launcher import report_end, report_ended_jobs_once

    if argv is not None:
        sys.argv[1:] = argv
    first = sys.argv[1] if len(sys.argv) > 1 else "-"
    if "=" not in first and not first.startswith("-"):
        print(f"rlvr.eval: error: name what to evaluate as target={first}", file=sys.stderr)
        sys.exit(2)
    exit_on_unknown_keys("rlvr.eval", sys.argv[1:], schema=EvalAppConfig, groups=GROUPS)
    try:
        sys.argv[1:] = with_run_choices(sys.argv[1:])
    except ConfigError as exc:
        print(f"rlvr.eval: error: {exc}", file=sys.stderr)
        sys.exit(2)
    one_line_preset_errors("rlvr.eval", EvalAppConfig, report=report_end)
    report_ended_jobs_once()
    hydra_main()


if __name__ == "__main__":
    main()
