"""Reward model: Bradley–Terry on preference pairs with TRL's RewardTrainer.

loss = -logsigmoid(r_chosen - r_rejected).mean(), the reward read at the last non-pad token of a
right-padded sequence (transformers' sequence-classification heads do this).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from rlvr.hardware import device as hardware
from rlvr.hardware.checkpoints import checkpoint_step, latest_complete_checkpoint
from rlvr.hardware.distributed import is_main_process, process_count
from rlvr.hardware.stops import checkpoint_callback, phase
from rlvr.errors import ConfigError, DataError
from rlvr.recipes.common import (
    TRAIN_RESULT,
    final_model_saved,
    final_weights,
    config_fields,
    finish,
    ignored_algorithm_settings,
    own_overrides,
    load_saved_model,
    restore_checkpoint,
    reuse_run_dir,
    save_final_model,
    training_curve_summary,
    trl_config,
)
from rlvr.tracking.run_dir import Start, checkpoint_config
from rlvr.tracking.outputs import metrics_callback, read_json, setup_wandb, use_compact_progress, write_json

log = logging.getLogger(__name__)
SANITY_CHECK_PAIRS = 100
TOKENS_SEEN = "num_input_tokens_seen"  # kept in train_result.json (not a metric): the count the final eval logs after a stop


def prepare_split(ds, cfg, tokenizer, limit_key: str, where: str, prefix: str, context: int | None = None):
    """Pairs drawn to the `dataset.<limit_key>` limit (as prompts are: `limit_rows`), then without the
    degenerate ones and length-filtered (max_token_length, or the model's `context` where it is shorter);
    with the counts of what was dropped, which add up to the pairs drawn. A split that this leaves without
    pairs is refused, naming what emptied it."""
    from rlvr.data.loading import limit_rows
    from rlvr.data.preferences import drop_degenerate, length_filter

    pref = cfg.dataset.preference
    ds = limit_rows(ds, where, SANITY_CHECK_PAIRS if pref.sanity_check else cfg.dataset[limit_key], cfg.dataset.shuffle_seed)
    read = len(ds)
    ds, dropped = drop_degenerate(ds)
    if not len(ds):
        raise DataError(
            f"{where} has no pairs left: all {read} have chosen == rejected ({dropped['identical']}), an empty chosen or rejected "
            f"answer ({dropped['empty']}), or sides that part before the answer ({dropped['different_prompts']}: another question, "
            "or a transcript against a bare answer)"
        )
    longest, named = pref.max_token_length, f"max_token_length={pref.max_token_length}"
    if context is not None and (longest is None or context < longest):
        longest, named = context, f"the model's {context}-token context (max_position_embeddings)"
    ds, counts = length_filter(ds, tokenizer, longest, pref.max_prompt_token_length)
    if not len(ds):
        raise ConfigError(
            f"{where} has no pairs left after dataset.preference length filters: {counts.dropped_too_long} longer than "
            f"{named}, {counts.dropped_prompt_too_long} with a prompt longer than "
            f"max_prompt_token_length={pref.max_prompt_token_length}"
        )
    counts = dataclasses.replace(counts, **{f"dropped_{reason}": count for reason, count in dropped.items()})
    return ds, {f"{prefix}_{k}": v for k, v in dataclasses.asdict(counts).items()}


def load_pairs(cfg, tokenizer, context: int | None = None):
    """(train, eval, counts): preference pairs as TRL conversational rows, limited and length-filtered
    (a pair longer than the model's `context` too: dropped_too_long). Each source's rows become pairs
    as read, so that an error names the file and line the user wrote."""
    from rlvr.data.loading import read_splits
    from rlvr.data.preferences import convert

    data = cfg.dataset
    train, evaluation = read_splits(data, lambda ds, where, label: convert(ds, data.preference, where, label))
    source = "the mixture" if data.mixer else data.source
    train, counts = prepare_split(train, cfg, tokenizer, "max_train_samples", f"dataset '{data.name}' ({source})", "train", context)
    if evaluation is not None:
        where = f"eval data of '{data.name}' ({data.eval_source or source})"
        evaluation, eval_counts = prepare_split(evaluation, cfg, tokenizer, "max_eval_samples", where, "eval", context)
        counts |= eval_counts
    log.info("preference pairs: %s", counts)
    return train, evaluation, counts


def set_chat_template(tokenizer, name: str) -> None:
    from rlvr.data.preferences import CHAT_TEMPLATES

    if name == "tokenizer":
        if not tokenizer.chat_template:
            raise ConfigError("the tokenizer has no chat template: set dataset.preference.chat_template=simple_chat")
        return
    tokenizer.chat_template = CHAT_TEMPLATES[name]


def check(cfg, processes: int) -> None:
    """A reward model has no reasoning vocabulary (a policy's); the policy settings it is given are
    named in a warning (`policy_settings`): a sweep over algorithm=grpo,reward_model shares them."""
    if cfg.model.reasoning_vocab_size:
        raise ConfigError("model.reasoning_vocab_size is for policies (algorithm=grpo or fgrpo), not reward models")
    if ignored := policy_settings(cfg, own_overrides()):
        log.warning(
            "%s: for policies (algorithm=grpo or fgrpo); a reward model trains and evaluates on preference pairs without them",
            ", ".join(ignored),
        )


def policy_settings(cfg, overrides: list[str]) -> list[str]:
    """What a reward-model run would ignore: a field of `algorithm` that TRL's RewardConfig lacks, moved
    from the schema's default ("algorithm.beta=0.3"), and the `reward` or `eval` group in `overrides`."""
    import trl

    moved = ignored_algorithm_settings(cfg, config_fields(trl.RewardConfig))
    return [o for o in overrides if re.match(r"[+~]*(reward|eval)[.=]", o)] + moved


def preflight(cfg, run_dir: Path) -> Start:
    """A finished reward-model run is kept; one stopped after training (its final model saved) is
    finished by evaluating that model; one stopped in training continues from its newest complete
    checkpoint (`latest_complete_checkpoint`), else starts over."""
    if (run_dir / "metrics.json").exists():
        raise ConfigError(f"{run_dir} already holds a finished reward-model run: pick a new hydra.run.dir")
    if final_model_saved(run_dir) and final_weights(run_dir).name == "final_model":  # not an adapter alone
        return Start("finish")
    checkpoint = latest_complete_checkpoint(run_dir / "checkpoints")
    return Start("new") if checkpoint is None else Start("resume", checkpoint, checkpoint_step(checkpoint))


def without_evals(cfg):
    """`cfg` for a run without eval pairs (`dataset.eval_holdout=0` and no eval_source or eval split):
    no evals during training (algorithm.eval_steps=0), which TRL would refuse without eval data, so that
    every pair trains, as asked; the log says that the run has no eval_* metrics."""
    from omegaconf import OmegaConf

    log.info(
        "no eval pairs (dataset.eval_holdout=0 and no eval data of the dataset's own): training on every pair without evals, "
        "so no eval_* metrics (eval_pair_accuracy); for them, set dataset.eval_holdout=N or dataset.eval_source"
    )
    return OmegaConf.merge(cfg, {"algorithm": {"eval_steps": 0}})


def train(cfg, run_dir: Path, start: Start) -> dict[str, float]:
    from trl import RewardConfig

    from rlvr.models.loading import check_lora_targets, load_reward_model, lora_config
    from rlvr.data.lengths import context_length
    from rlvr.data.preferences import as_whole_conversations
    from rlvr.trainers.reward import PreferenceRewardTrainer

    finishing = start.mode == "finish"
    if not finishing:
        reuse_run_dir(run_dir, start.step)
    trainer_kwargs = hardware.trainer_arguments(cfg.hardware)
    report_to = setup_wandb(cfg.logging, run_dir, run_dir.name)  # first: a missing wandb key fails before loading
    with phase("loading the model and data"):
        if finishing:
            log.info("%s: training ended and its final model is saved: evaluating it", run_dir)
            model, tokenizer = load_saved_model(cfg.model, run_dir / "final_model", "AutoModelForSequenceClassification", num_labels=1)
        else:
            model, tokenizer = load_reward_model(cfg.model, cfg.seed)
            check_lora_targets(model, cfg.model.lora)
        set_chat_template(tokenizer, cfg.dataset.preference.chat_template)
        train_pairs, eval_pairs, counts = load_pairs(cfg, tokenizer, context_length(model))
    args = trl_config(
        RewardConfig,
        without_evals(cfg) if eval_pairs is None else cfg,
        run_dir,
        report_to,
        trainer_kwargs,
        max_length=None,
        disable_dropout=True,
    )
    trainer = PreferenceRewardTrainer(
        model=model,
        args=args,
        train_dataset=as_whole_conversations(train_pairs),
        eval_dataset=None if eval_pairs is None else as_whole_conversations(eval_pairs),
        processing_class=tokenizer,
        peft_config=None if finishing else lora_config(cfg.model, task_type="SEQ_CLS"),
        callbacks=[metrics_callback(run_dir / "metrics.jsonl"), no_eval_at_the_last_step()]
        + ([] if finishing else [checkpoint_callback(checkpoint_config(cfg, process_count()))]),
    )
    use_compact_progress(trainer)
    if finishing:
        metrics = read_json(run_dir / TRAIN_RESULT)
        # the final eval is logged at the step, epoch and token count where training ended, not at those of an untrained trainer (0)
        trainer.state.global_step, trainer.state.epoch = metrics["train_steps"], metrics.get("epoch")
        trainer.state.num_input_tokens_seen = metrics.pop(TOKENS_SEEN, 0)
    else:
        metrics = train_and_save(cfg, run_dir, trainer, tokenizer, train_pairs, start.checkpoint)
    metrics |= counts
    if eval_pairs is not None:
        metrics |= evaluate_pairs(cfg, trainer, tokenizer, eval_pairs)
    log.info("reward model: %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return finish(cfg, run_dir, metrics)


def train_and_save(cfg, run_dir: Path, trainer, tokenizer, train_pairs, checkpoint: Path | None) -> dict[str, float]:
    """The token-length plot and a coloured example, training (from `checkpoint` if given), then the
    final model and train_result.json (before the eval: a run stopped in it is finished from them); the
    train metrics."""
    from rlvr.plots import plot_token_lengths, print_coloured_tokens

    if cfg.logging.plots:
        plot_token_lengths(trainer.train_dataset, train_pairs, tokenizer, run_dir / "plots" / "token_lengths.png")
        print_coloured_tokens(tokenizer, trainer.train_dataset[0]["chosen_ids"])
    if checkpoint is not None and 0 < trainer.args.max_steps <= checkpoint_step(checkpoint):
        with phase("restoring the last checkpoint"):
            log.info("%s is the end of training: restoring it", checkpoint.name)
            restore_checkpoint(trainer, checkpoint)
    else:
        with phase("training"):
            trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
    with phase("saving the final model"):
        trainer.model = save_final_model(trainer, tokenizer, cfg.model, run_dir)
        # over every start of the run, as logged: transformers' training_loss covers this start's steps only
        metrics = {
            "train_loss": training_curve_summary(run_dir)["train_loss"],
            "train_steps": trainer.state.global_step,
            "epoch": trainer.state.epoch,
        }
        if is_main_process():
            write_json(run_dir / TRAIN_RESULT, metrics | {TOKENS_SEEN: trainer.state.num_input_tokens_seen})
    return metrics


def no_eval_at_the_last_step():
    """A callback: no eval during training at its last step, which the final eval (`evaluate_pairs`) evaluates
    (at an `eval_steps` multiple, the same model was evaluated and logged twice at that step)."""
    from transformers import TrainerCallback

    class NoEvalAtTheLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = False

    return NoEvalAtTheLastStep()


def evaluate_pairs(cfg, trainer, tokenizer, eval_pairs) -> dict[str, float]:
    """TRL's eval metrics (batch-averaged) and, per pair, `eval_pair_accuracy` (the share of eval pairs whose
    chosen reply the trained model scores above the rejected one) and `eval_pair_margin` (its mean lead)."""
    from rlvr.rewards.hybrid import RewardModelScorer

    with phase("eval 'after'"):
        metrics = trainer.evaluate()
        device, batch_size = hardware.torch_device(cfg.hardware), cfg.algorithm.per_device_eval_batch_size
        scorer = RewardModelScorer(trainer.model, tokenizer, device=device, batch_size=batch_size)
        metrics |= {f"eval_pair_{name}": value for name, value in scorer.pair_metrics(eval_pairs).items()}
    return metrics
