"""The run every GRPO-family recipe shares (grpo, fgrpo): what a start does in its run dir, the run
itself (new, resumed or finished), and metrics.json. The recipes differ in trainer class and reward adapter."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from rlvr.recipes.common import (
    TRAIN_RESULT,
    calibrate_rewards,
    check_warm_up_meant,
    config_fields,
    eval_callback,
    evaluate,
    final_model_saved,
    final_weights,
    finish,
    ignored_algorithm_settings,
    load_trained_policy,
    restore_checkpoint,
    reuse_run_dir,
    save_final_model,
    save_initial_policy,
    setup_policy,
    trl_config,
    training_curve_summary,
)
from rlvr.hardware.checkpoints import checkpoint_step, latest_complete_checkpoint
from rlvr.hardware.distributed import is_main_process, process_count, rank, weights_digest
from rlvr._compat import generation_used_up
from rlvr.hardware.stops import checkpoint_callback, phase
from rlvr.models.loading import lora_targets
from rlvr.config import SAMPLING_FILTERS, ModelConfig, eval_token_limit
from rlvr.errors import ConfigError, DataError
from rlvr.rewards.base import check_reward_signal
from rlvr.rewards.checks import checked_rewards
from rlvr.tracking.run_dir import Start, checkpoint_config
from rlvr.tracking.outputs import (
    JsonlWriter,
    metrics_callback,
    read_json,
    read_jsonl,
    setup_wandb,
    use_compact_progress,
    write_json,
    write_jsonl,
)
from rlvr.evaluation.vllm_engine import own_completer, trainer_completer

log = logging.getLogger(__name__)
# The reasoning vocabulary's other knobs, as the schema defaults them
VOCAB_DEFAULTS = {key: getattr(ModelConfig, key) for key in ("reasoning_vocab_ids", "reasoning_only_in_think")}


# The sampling filters a reasoning vocabulary's training leaves out, with the values that filter nothing.
# Generation keys (TRL's generation_kwargs, given to transformers' generate or vLLM's SamplingParams) that leave
# each token's sampling distribution as it is: any value of the first, the listed values of the others. A key not
# here may reshape it (typical_p, epsilon_cutoff, no_repeat_ngram_size, bad_words_ids, ...).
NEUTRAL_GENERATION_KEYS = {"use_cache", "cache_implementation", "cache_config", "max_cache_len", "compile_config", "disable_compile"}
NEUTRAL_GENERATION_VALUES = SAMPLING_FILTERS | {
    **{"do_sample": (True, None), "num_beams": (1, None), "typical_p": (1.0, None), "epsilon_cutoff": (0.0, None)},
    **{"eta_cutoff": (0.0, None), "no_repeat_ngram_size": (0, None), "presence_penalty": (0.0, None), "frequency_penalty": (0.0, None)},
}


def policy_ignored_settings(cfg) -> list[str]:
    """The settings of `algorithm` a GRPO-family run never reads: a field GRPOConfig lacks (the reward
    model's center_rewards_coefficient), TRL's own eval batch (rlvr's evals run in eval.batch_size
    batches), the fine-grained settings outside fgrpo, the vLLM engine's with `rollout=hf`."""
    from trl import GRPOConfig

    read = config_fields(GRPOConfig) - {"per_device_eval_batch_size"} | {"rollout"}
    read |= {"fine_grained"} if cfg.algorithm.name == "fgrpo" else set()
    return ignored_algorithm_settings(cfg, read | ({"vllm"} if cfg.algorithm.rollout == "vllm" else set()))


def check(cfg, processes: int) -> None:
    """Refuse, in one line, settings a GRPO-family run cannot train with, before anything loads:
    - the reward model's `eval_steps`, and a LoRA adapter on lm_head (TRL refuses it, after loading);
    - a generation that would split a prompt's group: the completions generated at once (TRL's
      generation_batch_size) are whole groups of `num_generations`, and a set generation_batch_size
      is whole global batches (`processes` x per_device_train_batch_size). TRL's GRPOConfig checks the
      same, but only once the model has loaded and warmed up; tests/recipes/test_recipe_checks.py
      holds the two together;
    - sampling filters and a LoRA dropout that a reasoning vocabulary's training would leave out
      (`check_untruncated_sampling`, `check_no_dropout`), and an explicit list of its source ids of the wrong
      length or with repeats (`check_source_id_list`);
    - rewards with no signal to train on: none configured, or every weight 0 (`check_reward_signal`).
    Settings of `algorithm` this recipe never reads are named in a warning (`ignored_algorithm_settings`)."""
    check_reward_signal(cfg.reward.functions)
    a = cfg.algorithm
    if a.eval_steps is not None:
        raise ConfigError(f"algorithm.eval_steps={a.eval_steps} is for algorithm=reward_model: a GRPO run evaluates every eval.every_steps")
    if ignored := policy_ignored_settings(cfg):
        log.warning("%s: not read by algorithm=%s, which runs as without them", ", ".join(ignored), a.name)
    if cfg.model.lora.enabled and lora_targets(cfg.model.lora.target_modules, "lm_head"):
        raise ConfigError(
            f"model.lora.target_modules={cfg.model.lora.target_modules}: TRL applies no LoRA adapter to lm_head (leave it out)"
        )
    generated, named = completions_per_generation(a, processes)
    if generated % a.num_generations:
        raise ConfigError(
            f"algorithm.num_generations={a.num_generations} must divide the completions generated at once, {named}: "
            f"a prompt's completions are generated together"
        )
    if cfg.model.reasoning_vocab_size > 0:
        from rlvr.models.vocab import check_source_id_list

        if cfg.hardware.sharding == "zero3":
            raise ConfigError(
                f"model.reasoning_vocab_size={cfg.model.reasoning_vocab_size} with hardware.sharding=zero3: TRL's fused LM head "
                "gathers ZeRO-3's partitioned head again in its backward, which the vocabulary's subsets of its rows are not: "
                "use hardware.sharding=fsdp or zero2"
            )
        check_untruncated_sampling(a)
        check_no_dropout(cfg.model.lora, a)
        check_source_id_list(cfg.model.reasoning_vocab_ids, cfg.model.reasoning_vocab_size)
    elif unused := [f"{key}={cfg.model[key]}" for key, default in VOCAB_DEFAULTS.items() if cfg.model[key] != default]:
        # a warning, not a refusal: a sweep over reasoning_vocab_size=0,64 shares the other knobs
        log.warning("%s: no effect with model.reasoning_vocab_size=0 (no reasoning vocabulary)", ", ".join(f"model.{u}" for u in unused))


def completions_per_generation(a, processes: int) -> tuple[int, str]:
    """The completions one generation samples (TRL's generation_batch_size, from `a` = cfg.algorithm as
    GRPOConfig derives it), and how they come about, in words; one line for a set generation_batch_size
    that is no whole number of global batches."""
    global_batch = a.per_device_train_batch_size * processes
    per_step = f"algorithm.per_device_train_batch_size={a.per_device_train_batch_size} x {processes} process{'es' * (processes > 1)}"
    if a.generation_batch_size is not None and a.steps_per_generation is not None:
        raise ConfigError("algorithm.generation_batch_size and algorithm.steps_per_generation are both set: set one of them")
    if a.generation_batch_size is not None:
        if a.generation_batch_size % global_batch:
            raise ConfigError(
                f"algorithm.generation_batch_size={a.generation_batch_size} must be a multiple of {per_step} = {global_batch}"
            )
        return a.generation_batch_size, f"algorithm.generation_batch_size={a.generation_batch_size}"
    key = "steps_per_generation" if a.steps_per_generation is not None else "gradient_accumulation_steps"
    generated = global_batch * a[key]
    return generated, f"{per_step} x algorithm.{key}={a[key]} = {generated}"


def check_untruncated_sampling(algorithm) -> None:
    """With a reasoning vocabulary, training takes each token's log-prob over the ids the think processor
    allowed when it was drawn, at `algorithm.temperature`; a filter that also reshapes the sampling
    distribution would be left out of it: top-k, top-p, min-p or a repetition penalty set as a key of
    `algorithm` or `algorithm.trl`, and any key of TRL's `generation_kwargs` not known to leave it as it is
    (NEUTRAL_GENERATION_KEYS and _VALUES; a temperature of its own among them)."""
    given = {f"algorithm.{key}": algorithm[key] for key in ("top_k", "top_p", "repetition_penalty")}
    given["algorithm.trl.min_p"] = algorithm.trl.get("min_p")
    for key, value in given.items():
        if value not in SAMPLING_FILTERS[key.rsplit(".", 1)[-1]]:
            raise ConfigError(
                f"{key}={value} with a reasoning vocabulary (model.reasoning_vocab_size > 0): "
                "training takes each token's log-prob over the ids allowed when it was drawn, without this filter, so it "
                "would not train on the distribution it samples from: leave it at its default"
            )
    for key, value in (algorithm.trl.get("generation_kwargs") or {}).items():
        neutral = (algorithm.temperature,) if key == "temperature" else NEUTRAL_GENERATION_VALUES.get(key, ())
        if key not in NEUTRAL_GENERATION_KEYS and value not in neutral:
            raise ConfigError(
                f"algorithm.trl.generation_kwargs.{key}={value} with a reasoning vocabulary (model.reasoning_vocab_size > 0): "
                "training takes each token's log-prob over the ids allowed when it was drawn, at algorithm.temperature, "
                "without this sampling setting, so it would not train on the distribution it samples from: leave it out"
                + (" (set algorithm.temperature instead)" if key == "temperature" else "")
            )


def check_no_dropout(lora, algorithm) -> None:
    """With a reasoning vocabulary, training scores each token as it was sampled (`vocab/logprob_gap`): a
    LoRA dropout, active in the training forward and not in generation, would score it otherwise."""
    if lora.enabled and lora.dropout > 0 and not algorithm.trl.get("disable_dropout"):
        raise ConfigError(
            f"model.lora.dropout={lora.dropout} with a reasoning vocabulary (model.reasoning_vocab_size > 0): the dropout is "
            "active when training scores a token and not when it is sampled, so it would not train on the distribution it "
            "samples from: set model.lora.dropout=0 (or +algorithm.trl.disable_dropout=true)"
        )


def preflight(cfg, run_dir: Path) -> Start:
    """What this start does in `run_dir`; refuses in one line a run
    dir whose run is finished, and writes nothing but the CORRUPT marker of a checkpoint that cannot
    be loaded (`latest_complete_checkpoint`: the previous one is used).

    `finish` is a run whose training ended but whose eval, plots or metrics.json did not: with its
    final model saved (train_result.json) it is evaluated from disk; stopped after its last
    checkpoint, the final model is restored from that checkpoint first.
    """
    checkpoint = latest_complete_checkpoint(run_dir / "checkpoints")
    step = None if checkpoint is None else checkpoint_step(checkpoint)
    trained = read_json(run_dir / TRAIN_RESULT) if final_model_saved(run_dir) else None
    if trained is not None and step is not None and step > trained["train_steps"]:
        trained = None  # a later start trained past the saved final model: its checkpoint is the newer state
    trained_steps = max(step or 0, trained["train_steps"] if trained else 0)
    max_steps = cfg.algorithm.max_steps
    if max_steps > 0:
        done = (trained is not None or step is not None) and trained_steps >= max_steps
    else:  # epochs: only a saved final model says that training ended
        done = trained is not None
    finished = (run_dir / "metrics.json").exists()
    if (finished or (trained is not None and not done)) and checkpoint is None:
        raise ConfigError(
            f"{run_dir} already holds a finished GRPO run (it saved no checkpoint to continue from): pick a new hydra.run.dir"
        )
    if done and finished:
        asked = f"algorithm.max_steps={max_steps}" if max_steps > 0 else f"algorithm.num_train_epochs={cfg.algorithm.num_train_epochs}"
        raise ConfigError(
            f"{run_dir} already holds a run trained to step {trained_steps} ({asked}): set algorithm.max_steps "
            f"above {trained_steps} to continue it, or pick a new hydra.run.dir"
        )
    if done:
        return Start("finish", None if trained is not None else checkpoint, trained_steps)
    if checkpoint is None:
        check_warm_up_meant(cfg)  # a resume has its warm-up behind it
        return Start("new")
    return Start("resume", checkpoint, step)


def run_grpo(cfg, run_dir: Path, start: Start, trainer_class, **trainer_extra) -> dict[str, float]:
    """The GRPO run every GRPO-family recipe shares; they differ in trainer class and reward adapter
    (the recipe's `adapt_rewards`, applied by `policy_rewards`). Each mode of `preflight` is one
    straight path: finish from the saved final model; or build the trainer, then train (new, resume)
    or restore the last checkpoint (finish), then end."""
    if start.mode == "finish" and start.checkpoint is None:
        return finish_saved_run(cfg, run_dir, start)
    setup, trainer, rollouts, stops = build_trainer(cfg, run_dir, start, trainer_class, trainer_extra)
    if start.mode == "finish":
        log.info("%s is the end of training: restoring it to save the final model", start.checkpoint)
        with phase("restoring the last checkpoint"):
            restore_checkpoint(trainer, start.checkpoint)
        stops.on_train_end(trainer.args, trainer.state, trainer.control)  # no training: Ctrl-C/SIGTERM stop at once
    else:
        if start.checkpoint is not None:
            log.info("resuming from %s", start.checkpoint)
        with phase("training"):
            trainer.train(resume_from_checkpoint=str(start.checkpoint) if start.checkpoint else None)
    return end_training(cfg, run_dir, setup, trainer, rollouts)


def finish_saved_run(cfg, run_dir: Path, start: Start) -> dict[str, float]:
    """Training ended and its final model is saved: only what is missing (eval, plots, metrics.json)."""
    log.info("%s: training ended and its final model is saved: doing what is missing (eval, plots, metrics)", run_dir)
    with phase("loading the model and data"):
        setup = load_trained_policy(cfg, run_dir)
    setup.rewards = checked_rewards(setup.rewards, cfg.reward.checks)
    with own_completer(cfg, setup.model, setup.tokenizer, final_weights(run_dir)) as engine:
        return finish(cfg, run_dir, completion_metrics(cfg, setup, run_dir, start.step, engine))


def build_trainer(cfg, run_dir: Path, start: Start, trainer_class, trainer_extra: dict):
    """(setup, trainer, rollout writer or None, stop callback): the policy loaded (from the start's
    checkpoint's weights on resume), rewards checked and calibrated, the eval before and the initial
    policy saved on a new run, the trainer with rlvr's callbacks. The eval before comes before the
    trainer, unless it generates with the trainer's vLLM engine (eval.engine=vllm)."""
    from trl import GRPOConfig

    from rlvr.models.loading import lora_config
    from rlvr.trainers.rollout_engine import prepare_vllm, trl_vllm_fields, uses_vllm

    reuse_run_dir(run_dir, start.step)
    if is_main_process() and start.mode != "finish":  # they describe an earlier end of training, not this one
        for stale in (run_dir / "metrics.json", run_dir / TRAIN_RESULT):
            stale.unlink(missing_ok=True)
    report_to = setup_wandb(cfg.logging, run_dir, run_dir.name)  # first: a missing wandb key fails before loading
    with phase("loading the model and data"):
        setup = setup_policy(
            cfg, run_dir, resuming=start.checkpoint is not None, check_train=functools.partial(check_enough_prompts, cfg=cfg)
        )
    setup.rewards = checked_rewards(setup.rewards, cfg.reward.checks)  # for training, calibration and eval alike
    args = trl_config(
        GRPOConfig, cfg, run_dir, report_to, setup.trainer_kwargs, reward_weights=[r.weight for r in setup.rewards], **trl_vllm_fields(cfg)
    )
    calibrate_rewards(cfg, setup, run_dir)
    if start.mode == "new":
        if cfg.eval.engine == "hf":
            evaluate(cfg, setup, run_dir, "before")
        save_initial_policy(cfg, setup, run_dir)
    rollouts = JsonlWriter(run_dir / "rollouts.jsonl") if cfg.logging.rollouts and is_main_process() else None
    stops = checkpoint_callback(checkpoint_config(cfg, process_count()))
    if uses_vllm(cfg):
        prepare_vllm(cfg)
    trainer = trainer_class(
        model=setup.model,
        rewards=setup.rewards,
        args=args,
        train_dataset=setup.train,
        processing_class=setup.tokenizer,
        peft_config=lora_config(cfg.model, setup.reasoning_vocab),
        callbacks=[metrics_callback(run_dir / "metrics.jsonl"), stops],
        rollouts=cfg.logging.rollouts,
        rollout_writer=rollouts,
        stage_timing=cfg.logging.stage_timing,
        inverse_cdf_on_cpu=cfg.hardware.cpu_inverse_cdf_sampling,
        **trainer_extra,
    )
    stops.between_generations = lambda: generation_used_up(trainer)
    use_compact_progress(trainer)
    if cfg.eval.every_steps > 0:
        trainer.add_callback(eval_callback(cfg, setup, run_dir, trainer))
    if start.mode == "new" and cfg.eval.engine == "vllm":
        evaluate(cfg, setup, run_dir, "before", trainer_completer(cfg, trainer, setup.model, setup.tokenizer))
    return setup, trainer, rollouts, stops


def check_enough_prompts(prompts: int, cfg) -> None:
    """One generation takes generation_batch_size / num_generations prompts, and TRL's sampler drops
    a partial one: with fewer train prompts the run would train 0 steps and end as if it had trained.
    Checked once the prompts that fit the context are known, before the SFT warm-up."""
    generated, _ = completions_per_generation(cfg.algorithm, process_count())
    needed = generated // cfg.algorithm.num_generations
    if prompts < needed:
        raise DataError(
            f"{prompts} train prompts (after dataset limits and prompts too long for the context), fewer than the {needed} "
            f"that one generation of {generated} completions takes at algorithm.num_generations="
            f"{cfg.algorithm.num_generations}: use more data or a smaller algorithm.per_device_train_batch_size"
        )


def end_training(cfg, run_dir: Path, setup, trainer, rollouts) -> dict[str, float]:
    """After training (or restoring its last checkpoint): the final model saved, the reasoning
    vocabulary's map, train_result.json, then the eval after and metrics.json."""
    with phase("saving the final model"):  # from training's end until train_result.json says it is saved
        for reward in setup.rewards:  # the eval after training gathers every rank's error itself: raised at once
            reward.fn.defer_errors = False
        if rollouts is not None:
            rollouts.close()
        # synced before a LoRA adapter is merged to save; no sync where no eval follows
        evaluating = cfg.eval.after and not evaluated_at(setup, trainer.state.global_step)
        engine = trainer_completer(cfg, trainer, setup.model, setup.tokenizer) if evaluating else None
        setup.model = save_final_model(trainer, setup.tokenizer, cfg.model, run_dir)
        if setup.reasoning_vocab is not None and is_main_process():  # the map, and where each copy ended up
            vocab = setup.reasoning_vocab
            write_json(run_dir / "reasoning_vocab.json", vocab.as_dict() | vocab.embedding_norms(setup.model))
        if trainer.accelerator.num_processes > 1 and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
            # data-parallel: each rank's own copy (sharded, each weight is held once, and setup.model is final_model/ read back)
            print(f"rlvr: rank {rank()} weights {weights_digest(setup.model)}", flush=True)
        if is_main_process():
            write_json(run_dir / TRAIN_RESULT, {"train_steps": trainer.state.global_step})
    return finish(cfg, run_dir, completion_metrics(cfg, setup, run_dir, trainer.state.global_step, engine))


def completion_metrics(cfg, setup, run_dir: Path, train_steps: int, engine=None) -> dict[str, float]:
    """metrics.json's content, over every start of the run: the warm-up, the first start's eval before,
    training totals and curve from metrics.jsonl, and the eval after (run now, on every rank; by
    `engine`, a vLLM completer, if given)."""
    from rlvr.evaluation.engine import answer_equivalence, summarise

    metrics = read_json(run_dir / "warmup.json") if (run_dir / "warmup.json").exists() else {}
    before = read_jsonl(run_dir / "eval" / "before.jsonl") if (run_dir / "eval" / "before.jsonl").exists() else None
    if before is not None:
        metrics |= summarise(before, "before", cfg.eval.ks, answer_equivalence(setup.rewards, before), cfg.eval.seed)
    metrics |= setup.prompts_dropped | training_curve_summary(run_dir) | {"train_steps": train_steps}
    if cfg.eval.after and evaluated_at(setup, train_steps):
        metrics |= eval_after_from_last_step(cfg, setup, run_dir, train_steps)
    else:
        metrics |= evaluate(cfg, setup, run_dir, "after", engine)
    after = run_dir / "eval" / "after.jsonl"
    if before is not None and after.exists() and [r["prompt_id"] for r in before] != [r["prompt_id"] for r in read_jsonl(after)]:
        unlike = "on different prompts (the eval data changed"
    elif before is not None and (moved := eval_settings_moved(cfg, run_dir)):
        unlike = f"scored or sampled otherwise ({moved} changed"
    else:
        return metrics
    log.warning(
        "the eval before training (eval/before.jsonl) and after it are %s when the run was continued): eval_before_* "
        "are left out of metrics.json, which would compare them",
        unlike,
    )
    return {k: v for k, v in metrics.items() if not k.startswith("eval_before_")}


def evaluated_at(setup, last_step: int) -> bool:
    """Whether this process evaluated the final weights during training, at their `last_step`
    (`eval.every_steps` dividing it): the eval after training is that eval (`eval_after_from_last_step`)."""
    return setup.step_evaluated == last_step


def eval_after_from_last_step(cfg, setup, run_dir: Path, train_steps: int) -> dict[str, float]:
    """The eval after training when this process evaluated the final weights at their last step
    (`eval.every_steps` dividing it): eval/step-<N>.jsonl copied to eval/after.jsonl and summarised as
    "after" (rank 0), instead of generating the same completions again."""
    from rlvr.evaluation.engine import answer_equivalence, summarise

    if not is_main_process():
        return {}
    rows = read_jsonl(run_dir / "eval" / f"step-{train_steps}.jsonl")
    write_jsonl(run_dir / "eval" / "after.jsonl", rows)
    log.info("eval after: the eval of step %d, on the same weights (eval/step-%d.jsonl)", train_steps, train_steps)
    return summarise(rows, "after", cfg.eval.ks, answer_equivalence(setup.rewards, rows), cfg.eval.seed)


def eval_settings_moved(cfg, run_dir: Path) -> str:
    """The settings that make an eval's numbers (the `reward` group, the `eval` group but when and in
    what batches it runs, the eval's token limit however it is set) that differ from the run's first
    start, which made eval/before.jsonl, as "key, key"; "" where none does or nothing is recorded."""
    from omegaconf import OmegaConf

    from rlvr.tracking.run_dir import RUN_INFO, as_recorded, changed_leaves, under

    starts = read_jsonl(run_dir / RUN_INFO) if (run_dir / RUN_INFO).exists() else []
    first = next((start["config"] for start in starts if start.get("mode") == "new"), None)
    if first is None:
        return ""
    now = as_recorded(OmegaConf.to_container(cfg, resolve=True))
    changed = changed_leaves(first, now)
    when = ("eval.before", "eval.after", "eval.every_steps", "eval.batch_size")
    moved = [k for k in changed if under(k, ("reward", "eval")) and not under(k, when + ("eval.max_new_tokens",))]
    if eval_token_limit(first) != eval_token_limit(now):  # what the eval may generate, however it is set
        unset = first["eval"]["max_new_tokens"] is None and now["eval"]["max_new_tokens"] is None
        moved.append("algorithm.max_completion_length (the eval's limit: eval.max_new_tokens is unset)" if unset else "eval.max_new_tokens")
    return ", ".join(moved)
