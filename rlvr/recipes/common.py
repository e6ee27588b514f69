"""Steps every policy-training recipe shares: build the blocks, evaluate, save, summarise."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from rlvr.config import eval_token_limit
from rlvr.hardware import device as hardware
from rlvr.hardware.distributed import barrier, is_main_process
from rlvr.hardware.stops import phase
from rlvr.errors import DIVERGED_TRAINING, ConfigError, DivergedError, ModelLoadError
from rlvr.rewards.checks import check_reward_parameters, required_columns
from rlvr.tracking.outputs import close_wandb, read_metrics, write_json

log = logging.getLogger(__name__)
INITIAL_POLICY = "initial_policy"  # the policy as RL started, where only this run could rebuild it
TRAIN_RESULT = "train_result.json"  # written once training has ended and final_model/ is saved


@dataclass
class PolicySetup:
    model: Any
    tokenizer: Any
    train: Any
    evaluation: Any
    rewards: list
    trainer_kwargs: dict
    warmup_loss: float | None = None
    reasoning_vocab: Any = None  # rlvr.models.vocab.ReasoningVocab when model.reasoning_vocab_size > 0
    prompts_dropped: dict = field(default_factory=dict)  # {split}_prompts_dropped_too_long: no room in the context
    step_evaluated: int | None = None  # the last step this process evaluated during training (eval.every_steps)


# AlgorithmConfig fields that are rlvr's, not TRL's.
NOT_TRL = {"name", "trl", "save_steps", "eval_steps", "fine_grained"}


def ignored_algorithm_settings(cfg, read: set[str]) -> list[str]:
    """`algorithm.<field>=<value>` for each field of `cfg.algorithm` moved from the schema's default that
    is not among the fields the recipe reads (`read`; `name` and `trl` always are). The recipes warn of
    them rather than refuse: a sweep over recipes shares its settings."""
    from omegaconf import OmegaConf

    from rlvr.config import AlgorithmConfig

    schema, algorithm = OmegaConf.structured(AlgorithmConfig), OmegaConf.to_container(cfg.algorithm)
    return [f"algorithm.{k}={algorithm[k]}" for k in schema if k not in {*read, "name", "trl"} and cfg.algorithm[k] != schema[k]]


def own_overrides() -> list[str]:
    """This job's command-line overrides (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def check_warm_up_meant(cfg) -> None:
    """For a new run: refuse in one line a model given on the command line (`model.name_or_path=`) that
    keeps an SFT warm-up the config sets for a built-in random model (model=tiny's, an experiment's),
    unless the warm-up is set on the command line too: `model.name_or_path=/my/model` alone ran 100
    steps at lr 1e-3 on a pretrained model before its first eval."""
    steps, given = cfg.model.warmup_sft_steps, [o.lstrip("+~") for o in own_overrides()]
    if cfg.model.name_or_path == "tiny" or not steps or not any(o.startswith("model.name_or_path=") for o in given):
        return
    if any(o.startswith("model.warmup_sft_steps=") for o in given):
        return
    raise ConfigError(
        f"model.name_or_path={cfg.model.name_or_path} keeps the SFT warm-up the config sets for its built-in random model "
        f"({steps} steps at lr {cfg.model.warmup_sft_learning_rate}), which would train your model first: set "
        "model.warmup_sft_steps (0: no warm-up), or name your model's preset (model=qwen2.5_0.5b_instruct model.name_or_path=...)"
    )


def config_fields(config_class) -> set[str]:
    """The field names of a TRL config class."""
    return {f.name for f in fields(config_class)}


def trl_config(config_class, cfg, run_dir: Path, report_to: list[str], trainer_kwargs: dict, **extra):
    """A TRL config (GRPOConfig, RewardConfig, ...) from `cfg.algorithm`: the fields that class has,
    plus `algorithm.trl.*` passed through (checked by `rlvr.config.check_ranges`), plus the hardware
    arguments. One-line errors."""
    from omegaconf import OmegaConf

    algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
    known = config_fields(config_class)
    knobs = {k: v for k, v in algorithm.items() if k in known and k not in NOT_TRL}
    save_steps, eval_steps = algorithm["save_steps"], algorithm["eval_steps"]
    schedule = {"save_strategy": "steps" if save_steps > 0 else "no", "save_steps": save_steps if save_steps > 0 else 500}
    if eval_steps:
        schedule |= {"eval_strategy": "steps", "eval_steps": eval_steps}
    try:
        return config_class(
            output_dir=str(run_dir / "checkpoints"),
            seed=cfg.seed,
            report_to=report_to,
            run_name=run_dir.name,
            **schedule,
            **knobs,
            **trainer_kwargs,
            **extra,
            **algorithm["trl"],
        )
    except ValueError as exc:  # TRL's own consistency checks (batch divisibility, ...), in one line
        raise ConfigError(f"algorithm: {' '.join(str(exc).split())}") from exc


def bind_chat_template_kwargs(tokenizer, cfg) -> None:
    """TRL renders the chat prompts it generates from with `algorithm.trl.chat_template_kwargs` (Qwen3's
    enable_thinking=false, say); bound to this tokenizer's apply_chat_template, they render every other
    prompt too (the evals, the context-length check), which would otherwise be prompts the policy never
    trained on. A call's own keywords still win."""
    import functools

    from omegaconf import OmegaConf

    kwargs = cfg.algorithm.trl.get("chat_template_kwargs")
    if kwargs:
        tokenizer.apply_chat_template = functools.partial(tokenizer.apply_chat_template, **OmegaConf.to_container(kwargs))


def policy_rewards(cfg) -> list:
    """The `reward` group's functions as the recipe calls them, in training and in every eval of its
    models: through the recipe's `adapt_rewards` where it has one (fgrpo: span rewards)."""
    from rlvr.recipes import get_recipe
    from rlvr.rewards import build_rewards

    rewards = build_rewards(cfg.reward.functions)
    adapt = getattr(get_recipe(cfg.algorithm.name), "adapt_rewards", None)
    return adapt(rewards, cfg.algorithm) if adapt is not None else rewards


def load_rewarded_prompts(cfg, rewards):
    """(train, eval) prompts of `cfg.dataset`, each row with what `rewards` need: a value in each column a
    Reward declares, and a column for each parameter of a reward function that has no default. The eval
    prompts are what evals run on: the train prompts under `eval.split=train` (then fitted to the eval's
    completion budget, not training's, by `fit_to_context`)."""
    from rlvr.data import load_prompt_datasets

    train, evaluation = load_prompt_datasets(cfg.dataset, required_columns(rewards))
    if cfg.eval.split == "train":
        evaluation = train
    for dataset, where in ((train, "the train data"), (evaluation, "the eval data")):
        if dataset is not None:
            check_reward_parameters(rewards, dataset.column_names, where)
    return train, evaluation


def setup_policy(cfg, run_dir: Path, resuming: bool = False, check_train: Callable[[int], None] | None = None) -> PolicySetup:
    """Model, data and rewards from their config groups; `check_train` of the number of train prompts
    that fit the context; then `warm_up_and_expand`.

    A resumed run skips the warm-up: its checkpoint holds the weights, or (LoRA: the checkpoint holds
    the adapter) its base is the policy as RL started, saved by the first start (`initial_policy/`).
    """
    from rlvr.data.lengths import fit_to_context
    from rlvr.models.loading import check_lora_targets, load_policy
    from rlvr.rewards.checks import warn_unreadable_golds

    rewards = policy_rewards(cfg)  # first: a bad reward config fails before any loading
    trainer_kwargs = hardware.trainer_arguments(cfg.hardware)
    train, evaluation = load_rewarded_prompts(cfg, rewards)
    initial = initial_policy_dir(run_dir)
    restored = resuming and initial is not None
    model, tokenizer = (
        load_saved_model(cfg.model, initial) if restored else load_policy(cfg.model, cfg.seed, hardware.torch_device(cfg.hardware))
    )
    check_lora_targets(model, cfg.model.lora)
    if cfg.model.reasoning_vocab_size > 0 and not restored:
        from rlvr.models.vocab import check_source_ids

        check_source_ids(cfg.model.reasoning_vocab_ids, cfg.model.reasoning_vocab_size, tokenizer)
    bind_chat_template_kwargs(tokenizer, cfg)
    if cfg.dataset.chat and not tokenizer.chat_template:
        raise ConfigError(
            f"dataset.chat=true (chat-message prompts) but the tokenizer of '{cfg.model.name_or_path}' "
            f"has no chat template: use an instruct model, or dataset.chat=false for plain-text prompts"
        )
    train, evaluation, dropped = fit_to_context(train, evaluation, model, tokenizer, cfg)
    for dataset, where in ((train, "the train data"), (evaluation, "the eval data")):
        if dataset is not None:
            warn_unreadable_golds(rewards, dataset["answer"], where)
    if check_train is not None:
        check_train(len(train))
    evaluated = len(evaluation or [])
    log.info(
        "policy %s: %.2fM parameters; %d train / %d eval prompts%s",
        initial if restored else cfg.model.name_or_path,
        model.num_parameters() / 1e6,  # transformers': a 4-bit weight's packed storage counted as the values it holds
        len(train),
        evaluated,
        f" ({cfg.eval.limit} evaluated: eval.limit)" if cfg.eval.limit is not None and cfg.eval.limit < evaluated else "",
    )
    setup = PolicySetup(model, tokenizer, train, evaluation, rewards, trainer_kwargs, prompts_dropped=dropped)
    if restored:
        from rlvr.models.vocab import ReasoningVocab

        log.info("resuming: no SFT warm-up (the policy as RL started is loaded from %s)", initial)
        setup.reasoning_vocab = ReasoningVocab.of(model)  # saved with the policy: not expanded again
        return setup
    warm_up_and_expand(setup, cfg, run_dir, resuming)
    return setup


def warm_up_and_expand(setup: PolicySetup, cfg, run_dir: Path, resuming: bool) -> None:
    """The SFT warm-up the model asks for (not on a resume: the checkpoint holds the trained weights),
    then the reasoning vocabulary, its copies made from the warmed-up rows so that they start equal."""
    model, tokenizer = setup.model, setup.tokenizer
    if cfg.model.warmup_sft_steps > 0 and resuming and not cfg.model.lora.enabled:
        log.info("resuming: no SFT warm-up (the checkpoint holds the trained weights)")
    elif cfg.model.warmup_sft_steps > 0:
        from rlvr.recipes.warmup import sft_warmup

        # data-parallel, never sharded: sharding would leave the policy wrapped before the RL trainer wraps it
        setup.warmup_loss = sft_warmup(model, tokenizer, setup.train, cfg, hardware.trainer_arguments(cfg.hardware, shard=False), cfg.seed)
        if is_main_process():
            write_json(run_dir / "warmup.json", {"warmup_sft_loss": setup.warmup_loss})
    if cfg.model.reasoning_vocab_size > 0:
        from rlvr.models.vocab import expand_vocabulary

        setup.reasoning_vocab = expand_vocabulary(
            model,
            tokenizer,
            cfg.model.reasoning_vocab_size,
            cfg.model.reasoning_vocab_ids,
            setup.train["prompt"],  # for reasoning_vocab_ids=frequent
            only_in_think=cfg.model.reasoning_only_in_think,
        )
        log.info(
            "reasoning vocabulary: %d tokens after the %d standard ones", setup.reasoning_vocab.size, setup.reasoning_vocab.standard_size
        )


def initial_policy_dir(run_dir: Path) -> Path | None:
    """The policy as the run's RL started, where the run saved it (a LoRA adapter's base); else None."""
    return run_dir / INITIAL_POLICY if (run_dir / INITIAL_POLICY / "config.json").exists() else None


def final_weights(run_dir: Path) -> Path | None:
    """What a run saved at its end: final_model/, else (a LoRA run that saved its adapter only:
    `save_merged=false`, a 4-bit base) final_adapter/; None before either is written whole."""
    if (run_dir / "final_model" / "config.json").exists():
        return run_dir / "final_model"
    return run_dir / "final_adapter" if (run_dir / "final_adapter" / "adapter_config.json").exists() else None


def final_model_saved(run_dir: Path) -> bool:
    """Training ended and its final weights were written whole (train_result.json comes after them)."""
    return (run_dir / TRAIN_RESULT).exists() and final_weights(run_dir) is not None


def load_saved_model(model_cfg, path: Path, auto_class_name: str = "AutoModelForCausalLM", **model_kwargs):
    """(model, tokenizer) saved by a run (initial_policy/, final_model/), with the model group's dtype."""
    from omegaconf import OmegaConf

    from rlvr.models.loading import load_pretrained

    return load_pretrained(OmegaConf.merge(model_cfg, {"name_or_path": str(path), "revision": None}), auto_class_name, **model_kwargs)


def is_adapter(path: Path) -> bool:
    """A LoRA adapter alone (a LoRA run's checkpoints, final_adapter/): no whole model to load."""
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def load_saved_policy(cfg, path: Path, run_dir: Path | None):
    """(model, tokenizer) saved at `path`: a whole model, or a LoRA run's adapter (its checkpoints),
    merged into its base as the run built it: the run's initial_policy/ if it saved one, else the model
    group's (which `check_adapter_base` makes sure is no random model). On a 4-bit base the adapter
    stays unmerged, as the run evaluated it."""
    if not is_adapter(path):
        return load_saved_model(cfg.model, path)
    from peft import PeftModel

    from rlvr.models.loading import load_policy

    base = initial_policy_dir(run_dir) if run_dir is not None else None
    model, tokenizer = load_saved_model(cfg.model, base) if base is not None else load_policy(cfg.model, cfg.seed)
    adapted = PeftModel.from_pretrained(model, str(path))
    if cfg.model.quantization == "4bit":  # merged into a 4-bit base, its updates would round away (`save_final_model`)
        return adapted, tokenizer
    return adapted.merge_and_unload(), tokenizer


def check_adapter_base(cfg, path: Path, run_dir: Path | None) -> None:
    """Refuses in one line a LoRA adapter at `path` that `load_saved_policy` would merge onto a random
    model: with no run's initial_policy/ to put it on (outside its run dir, or a run dir without one),
    its base is the model group's, and the built-in tiny model (the default) is built afresh."""
    import json

    from rlvr.models.loading import TINY

    if not is_adapter(path) or (run_dir is not None and initial_policy_dir(run_dir) is not None) or cfg.model.name_or_path != TINY:
        return
    where = "outside its run dir" if run_dir is None else f"in a run dir without {INITIAL_POLICY}/ ({run_dir})"
    try:
        recorded = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):  # unreadable: no hint
        recorded = None
    hint = f" (its adapter_config.json names {recorded})" if recorded and recorded != TINY else ""
    raise ModelLoadError(
        f"{path} is a LoRA adapter {where}, with no base to put it on: name its base model with "
        f"model.name_or_path=PATH_OR_HUB_NAME{hint}; it is not merged onto the built-in tiny model "
        f"built afresh (random weights)"
    )


def load_trained_policy(cfg, run_dir: Path, model_dir: Path | None = None) -> PolicySetup:
    """A trained model (default: the run's final model), eval data and rewards: what an eval needs, no training."""
    from rlvr.data.lengths import fit_to_context

    rewards = policy_rewards(cfg)
    train, evaluation = load_rewarded_prompts(cfg, rewards)
    model, tokenizer = load_saved_policy(cfg, model_dir or final_weights(run_dir), run_dir)
    bind_chat_template_kwargs(tokenizer, cfg)
    train, evaluation, dropped = fit_to_context(train, evaluation, model, tokenizer, cfg)  # as when it trained
    return PolicySetup(model, tokenizer, train, evaluation, rewards, hardware.trainer_arguments(cfg.hardware), prompts_dropped=dropped)


def calibrate_rewards(cfg, setup: PolicySetup, out_dir: Path, run_dir: Path | None = None) -> None:
    """Let rewards that normalise by the starting policy's outputs (hybrid) see a few of them, recorded
    in `out_dir/<name>_calibration.json` (made if need be); a later start of the run (a resume, a
    finish) reads the first start's calibration, and an eval of a run (`run_dir`) the run's: the same
    scale throughout."""
    for reward in setup.rewards:
        if getattr(reward.fn, "needs_calibration", False):
            out_dir.mkdir(parents=True, exist_ok=True)
            to_device(cfg, setup.model)
            reward.fn.calibrate(
                setup.model,
                setup.tokenizer,
                setup.train["prompt"],
                cfg.algorithm.max_completion_length,
                out_dir / f"{reward.name}_calibration.json",
                earlier=run_dir / f"{reward.name}_calibration.json" if run_dir is not None else None,
            )


def restore_checkpoint(trainer, checkpoint: Path) -> None:
    """The trainer as `checkpoint` left it, without training: the weights (or a LoRA run's adapter)
    through transformers' own loader, and the state with its step count. Resuming at max_steps
    instead would train one step more (transformers' resume always runs a step)."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def reuse_run_dir(run_dir: Path, resume_step: int | None) -> None:
    """Drop what an earlier start logged after the step this start continues from (all of it for a
    start from scratch, e.g. after a crash before the first checkpoint), so no step appears twice:
    training and `eval/` rows of metrics.jsonl alike, and the eval/step-<N>.jsonl of those steps.
    Other eval files are not touched: each is replaced whole when its eval is done (rlvr/evaluation/engine.py)."""
    from rlvr.tracking.outputs import truncate_jsonl

    step = -1 if resume_step is None else resume_step
    if is_main_process():  # the one writer of these files
        truncate_jsonl(run_dir / "metrics.jsonl", keep=lambda row: row.get("step", 0) <= step)
        truncate_jsonl(run_dir / "rollouts.jsonl", keep=lambda row: row.get("step", 0) <= step)
        for path in (run_dir / "eval").glob("step-*.jsonl"):
            if int(path.stem.split("-")[1]) > step:
                path.unlink()
    barrier()


def save_initial_policy(cfg, setup: PolicySetup, run_dir: Path) -> None:
    """Save the policy as RL starts (after any warm-up and vocabulary expansion) where nothing else
    could rebuild it, and point its config at it.

    TRL builds the KL reference model (beta != 0, now or after a resume that raises it) by loading
    `model.config.name_or_path`, and a colocated vLLM engine `model.name_or_path`: a model made in memory
    has no path, and a warmed-up or expanded one differs from its path. A resume loads it too (no warm-up again; a LoRA adapter's base).
    """
    import shutil

    path = run_dir / INITIAL_POLICY
    if is_main_process():
        shutil.rmtree(path, ignore_errors=True)  # an earlier, crashed attempt's: not this run's start
    built_here = cfg.model.name_or_path == "tiny" or setup.warmup_loss is not None or cfg.model.reasoning_vocab_size > 0
    if built_here:
        if is_main_process():
            setup.model.save_pretrained(path)
            setup.tokenizer.save_pretrained(path)
        setup.model.config.name_or_path = setup.model.name_or_path = str(path)  # vLLM's engine loads the latter
    barrier()  # every rank loads it


def refuse_diverged(trainer, what: str, advice: str = DIVERGED_TRAINING) -> None:
    """A DivergedError where the model `trainer` trained holds NaN or infinite parameters (`what`
    diverged; `advice`: what to do): transformers' logged losses leave non-finite ones out, so a
    diverged run would end "completed", its final model NaN. Every process calls it, and all raise."""
    from rlvr.hardware.sharding import non_finite_share

    if share := non_finite_share(trainer):
        step = trainer.state.global_step
        raise DivergedError(f"{what} diverged: {100 * share:.3g}% of the model's parameters are NaN or infinite at step {step}: {advice}")


def save_final_model(trainer, tokenizer, model_cfg, run_dir: Path):
    """Write final_model/ so that it loads with transformers alone; returns the model to evaluate.

    A LoRA run also leaves its adapter in final_adapter/, and final_model/ is the adapter merged
    into its base: the base may be SFT-warmed or vocabulary-expanded in memory, which no Hub name or
    path reproduces, so an adapter alone could not be loaded again. `model.lora.save_merged=false`
    writes the adapter only (a base too large to store twice), and so does a 4-bit base: merged
    into it, the adapter's updates vanish in the re-quantization (the merged model evaluates as the
    base did before training).
    """
    from peft import PeftModel

    from rlvr.hardware.sharding import save_gathered

    refuse_diverged(trainer, "training")
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return save_gathered(trainer, tokenizer, model_cfg, run_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    lora = isinstance(model, PeftModel)
    out = str(run_dir / ("final_adapter" if lora else "final_model"))
    trainer.save_model(out)
    if is_main_process():
        tokenizer.save_pretrained(out)
    if lora and model_cfg.lora.save_merged and model_cfg.quantization == "4bit":
        log.info("final_adapter/ only: merged into the 4-bit base, the adapter's updates would round away")
    if not lora or not model_cfg.lora.save_merged or model_cfg.quantization == "4bit":
        return model
    merged = model.merge_and_unload()  # every rank, so that their weights stay equal
    if is_main_process():
        merged.save_pretrained(str(run_dir / "final_model"))
        tokenizer.save_pretrained(str(run_dir / "final_model"))
    return merged


def evaluate(cfg, setup: PolicySetup, run_dir: Path, label: str, engine=None) -> dict[str, float]:
    """The eval `label` (before, after) if `cfg.eval` asks for it: on every rank, each its share of
    the rows, generated by `engine` (a vLLM completer, rlvr.evaluation.vllm_engine) or else by the policy through
    transformers; rank 0 gets the metrics, the others {}."""
    if not getattr(cfg.eval, label):
        return {}
    metrics = eval_model(cfg, setup, engine or to_device(cfg, setup.model), run_dir, label)
    warn_if_cut_short(cfg, f"eval {label}", metrics.get(f"eval_{label}_truncated_frac", 0.0))
    return metrics


def to_device(cfg, model):
    """`model` on this process's device; a quantized one stays where bitsandbytes placed it as it
    loaded (it refuses `.to()`)."""
    if not getattr(model, "is_quantized", False):
        model.to(hardware.torch_device(cfg.hardware))
    return model


CUT_SHORT_WARN_FRAC = 0.5  # a larger share of greedy completions cut at the length limit is warned of


def warn_if_cut_short(cfg, label: str, truncated_frac: float) -> None:
    """One warning line when most of the eval `label`'s greedy completions hit the token limit
    (`truncated_frac`): its numbers then measure the limit more than the model."""
    if truncated_frac > CUT_SHORT_WARN_FRAC:
        source = "" if cfg.eval.max_new_tokens else ", from algorithm.max_completion_length as eval.max_new_tokens is unset"
        log.warning(
            "%s: %.0f%% of the greedy completions were cut at the limit of %d new tokens%s: raise eval.max_new_tokens",
            label,
            100 * truncated_frac,
            eval_token_limit(cfg),
            source,
        )


def eval_model(cfg, setup: PolicySetup, model, run_dir: Path, label: str) -> dict[str, float]:
    """`model` (or a vLLM completer) on the eval prompts (`setup.evaluation`) with the eval config's settings,
    rows in eval/<label>.jsonl; every rank calls it."""
    from rlvr.evaluation.engine import run_eval

    if setup.evaluation is None:
        return {}
    max_new, rows = eval_token_limit(cfg), run_dir / "eval" / f"{label}.jsonl"
    result = run_eval(model, setup.tokenizer, setup.evaluation, setup.rewards, cfg.eval, max_new, rows, label, cfg.eval.seed)
    if result:
        engine = "vLLM" if hasattr(model, "complete") else "transformers"
        log.info("eval %s (%s): %s", label, engine, {k: round(v, 4) for k, v in result.items()})
    return result


def eval_callback(cfg, setup: PolicySetup, run_dir: Path, trainer):
    """A TrainerCallback evaluating the policy every `eval.every_steps` steps (all ranks take part):
    eval/step-<N>.jsonl, and `eval/<metric>` in the trainer's log at step N (metrics.jsonl, wandb)."""
    from transformers import Trainer, TrainerCallback

    from rlvr.hardware.sharding import generating_model
    from rlvr.evaluation.vllm_engine import trainer_completer

    class EvalEverySteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % cfg.eval.every_steps:
                return
            label = f"step-{state.global_step}"
            engine = trainer_completer(cfg, trainer, setup.model, setup.tokenizer)
            if engine is not None:
                metrics = eval_model(cfg, setup, engine, run_dir, label)
            else:
                with generating_model(trainer) as model:  # whole: the ranks generate apart
                    metrics = eval_model(cfg, setup, model, run_dir, label)
            setup.step_evaluated = state.global_step
            if metrics:  # rank 0; the base class's log: GRPOTrainer's would flush this step's training metrics into it
                log_due = control.should_log  # logging resets it: the step's own training row is still to come
                Trainer.log(trainer, {f"eval/{k[len(f'eval_{label}_') :]}": v for k, v in metrics.items()})
                control.should_log = log_due

    return EvalEverySteps()


def training_curve_summary(run_dir: Path) -> dict[str, float]:
    """From metrics.jsonl's training rows, so that they cover every start of a resumed run, each row
    standing for the steps since the row before it (it holds their means): the mean reward over the
    first and last 20% of the steps, the mean training loss and the training time (`step_seconds`).
    The last step trained is always logged (`metrics_callback`), so the rows cover every step."""
    path = run_dir / "metrics.jsonl"
    rows = [m for m in read_metrics(path) if "loss" in m] if path.exists() else []
    steps = [row["step"] - before["step"] for before, row in zip([{"step": 0}, *rows], rows)]
    rewards = [m["reward"] for m, n in zip(rows, steps) if "reward" in m for _ in range(int(n))]  # one per step
    k = max(1, len(rewards) // 5)  # 20% of the steps, at least one
    first, last = (sum(rewards[:k]) / k, sum(rewards[-k:]) / k) if rewards else (float("nan"), float("nan"))
    loss = sum(m["loss"] * n for m, n in zip(rows, steps)) / sum(steps) if rows else float("nan")
    seconds = sum((m.get("step_seconds") or 0.0) * n for m, n in zip(rows, steps))
    return {
        "train_reward_first20": first,
        "train_reward_last20": last,
        "train_logged_steps": float(len(rows)),
        "train_loss": loss,
        "train_seconds": seconds,
    }


def finish(cfg, run_dir: Path, metrics: dict[str, Any]) -> dict[str, float]:
    """Plots and metrics.json (rank 0 only); returns the flat float metrics."""
    flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    if not is_main_process():
        return flat
    with phase("writing plots and metrics.json"):
        if cfg.logging.plots:
            from rlvr.plots import plot_run

            plot_run(run_dir)
        write_json(run_dir / "metrics.json", flat)
        close_wandb(flat)
    return flat
