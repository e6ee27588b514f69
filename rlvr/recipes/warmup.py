"""Supervised warm-up: a few steps of TRL's SFTTrainer on the gold answers before RL.

A random-init model almost never produces a right answer, so GRPO sees zero-variance groups and
learns nothing; ~100 SFT steps make it right sometimes, which is where RL takes over.
"""

from __future__ import annotations

import logging
import tempfile

from rlvr.errors import DataError

log = logging.getLogger(__name__)
SFT_LENGTH = 1024  # TRL's SFTConfig.max_length: the longest warm-up pair, also for models of a longer context


def sft_dataset(train, template: str, chat: bool):
    """prompt/completion pairs for SFTTrainer: the completion is `template` filled from the row; a
    template that does not fit the rows (a column they lack, a format the value refuses) is one line."""
    from rlvr.data.loading import map_rows, template_error
    from rlvr.rewards.answers import gold_answer

    def to_pair(row: dict, index: int) -> dict:
        try:
            text = template.format_map({**row, "gold": gold_answer(row["answer"])})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise DataError(f"dataset.sft_completion_template {template!r} fails on training row {index}: {template_error(exc)}") from exc
        completion = [{"role": "assistant", "content": text}] if chat else text
        return {"prompt": row["prompt"], "completion": completion}

    return map_rows(train, to_pair, remove_columns=train.column_names, desc="warm-up targets")


def warn_if_no_end_is_taught(model, tokenizer, pair: dict) -> None:
    """A warning when the chat template ends an assistant turn with none of the ids that end generation:
    the warm-up's targets then hold no end, and the policy learns to write on to max_completion_length."""
    from rlvr.evaluation.engine import end_ids

    prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(pair["prompt"] + pair["completion"], tokenize=False)
    target = tokenizer(whole[len(prompt) :] if whole.startswith(prompt) else whole, add_special_tokens=False)["input_ids"]
    ends = end_ids(model, tokenizer)
    if not set(ends) & set(target):
        log.warning(
            "SFT warm-up: the chat template ends an assistant turn with none of the ids that end generation (%s): the warm-up "
            "teaches no end, so completions run on to algorithm.max_completion_length",
            tokenizer.convert_ids_to_tokens(ends),
        )


def sft_warmup(model, tokenizer, train, cfg, trainer_kwargs: dict, seed: int):
    """Train `model` in place for `cfg.model.warmup_sft_steps` steps; returns the final SFT loss. Each
    prompt + target is cut to the model's context (TRL's SFT length where that is longer), and the
    pairs cut are counted in a warning: a longer one failed deep inside the model's forward (GPT-2's
    learned positions) or trained past the positions it has (RoPE)."""
    from trl import SFTConfig, SFTTrainer

    from rlvr.data.lengths import context_length
    from rlvr.hardware.stops import phase
    from rlvr.recipes.common import refuse_diverged
    from rlvr.recipes.warmup_cache import KeptWarmup, forget_trainer_state, keep_warmup, kept_warmup, load_warmup, warmup_key

    steps = cfg.model.warmup_sft_steps
    max_length = min(context_length(model) or SFT_LENGTH, SFT_LENGTH)
    pairs = sft_dataset(train, cfg.dataset.sft_completion_template, cfg.dataset.chat)
    if cfg.dataset.chat and len(pairs):
        warn_if_no_end_is_taught(model, tokenizer, pairs[0])
    with phase("the SFT warm-up"), tempfile.TemporaryDirectory(prefix="rlvr-warmup-") as tmp:
        attributes, use_cache = set(vars(model)), model.config.use_cache
        args = SFTConfig(
            output_dir=tmp,
            max_steps=steps,
            learning_rate=cfg.model.warmup_sft_learning_rate,
            per_device_train_batch_size=cfg.model.warmup_sft_batch_size,
            lr_scheduler_type="constant",
            logging_steps=steps,
            save_strategy="no",
            report_to=[],
            seed=seed,
            max_length=max_length,
            **trainer_kwargs,
        )
        key = warmup_key(model, tokenizer, pairs, args) if cfg.model.warmup_sft_cache else None
        if (entry := kept_warmup(key)) is not None:
            kept = load_warmup(model, entry)
            model.train()  # as the SFT trainer leaves it
            warn_of_cut_pairs(kept.cut, kept.pairs, max_length)
            log.info("SFT warm-up: %d steps, final loss %.4f (loaded: trained before on this machine, %s)", steps, kept.loss, entry)
            return kept.loss
        trainer = SFTTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
        tokenized = trainer.train_dataset
        if not len(tokenized):
            raise DataError(f"SFT warm-up: every prompt reaches {max_length} tokens, so no target is left to learn: shorten the prompts")
        # TRL drops a pair whose prompt alone reaches max_length (no target left), and cuts the others there
        cut = sum(len(ids) == max_length for ids in tokenized["input_ids"]) + len(pairs) - len(tokenized)
        warn_of_cut_pairs(cut, len(pairs), max_length)
        result = trainer.train()
        refuse_diverged(trainer, "the SFT warm-up", "lower model.warmup_sft_learning_rate")
        forget_trainer_state(model, attributes, use_cache)
        if key is not None:
            keep_warmup(key, model, KeptWarmup(result.training_loss, cut, len(pairs)))
    log.info("SFT warm-up: %d steps, final loss %.4f", steps, result.training_loss)
    return result.training_loss


def warn_of_cut_pairs(cut: int, pairs: int, max_length: int) -> None:
    """A warning counting the `cut` of `pairs` warm-up pairs cut to (or dropped at) `max_length` tokens, if any."""
    if cut:
        log.warning("SFT warm-up: %d of %d prompt + target pairs reach %d tokens: cut there, or dropped", cut, pairs, max_length)
