"""Prompts against the model's context: a prompt with no room left for its completion is dropped.

Before training (and before the SFT warm-up), so one oversized row costs a log line and a metric,
not a stalled run: a 5 MB prompt is never tokenized, only its length in characters is read.
"""

from __future__ import annotations

import logging

from rlvr.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def context_length(model) -> int | None:
    """The positions the model has (None when its config does not say)."""
    return getattr(model.config, "max_position_embeddings", None)


def context_limit(model, cfg) -> tuple[int | None, str]:
    """The tokens a prompt and its completion share (None: not known), and what sets them: the
    model's context, or a shorter vLLM rollout engine's (`engine_max_length`: vLLM refuses a longer
    prompt and cuts its completion short)."""
    from rlvr.trainers.rollout_engine import engine_max_length

    context = context_length(model)
    engine = engine_max_length(cfg)
    if engine and (context is None or engine < context):
        return engine, f"algorithm.trl.vllm_max_model_length={engine}"
    return context, f"the model's {context}-token context"


def check_completion_fits(context: int, limit: str, completion_tokens: dict[str, int]) -> None:
    """One line for a completion budget (`algorithm.max_completion_length`, `eval.max_new_tokens`)
    that leaves no room for a prompt in the `context` tokens `limit` names."""
    for key, tokens in completion_tokens.items():
        if tokens >= context:
            raise ConfigError(f"{key}={tokens} leaves no room for a prompt in {limit}: lower it")


def prompt_tokens(prompts: list, tokenizer, budget: int) -> list[int]:
    """Tokens of each prompt as TRL counts them (the chat template rendered for message lists); a
    prompt with more characters than `budget` tokens could cover counts as `budget + 1`, untokenized."""
    longest_token = max(len(token) for token in tokenizer.get_vocab())  # >= the characters one token covers
    counts = [budget + 1] * len(prompts)
    plain, chat = {}, {}
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if len(prompt) <= budget * longest_token:
                plain[index] = prompt
        elif sum(len(str(m["content"])) for m in prompt) <= budget * longest_token:
            chat[index] = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    for texts, special in ((plain, True), (chat, False)):  # a rendered chat template holds its special tokens
        if texts:
            ids = tokenizer(list(texts.values()), add_special_tokens=special)["input_ids"]
            for index, tokens in zip(texts, ids):
                counts[index] = len(tokens)
    return counts


def drop_long_prompts(ds, tokenizer, context: int, limit: str, completion_key: str, completion_tokens: int, label: str):
    """`ds` without the prompts that leave fewer than `completion_tokens` of the `context` tokens
    `limit` names, and how many were dropped (a warning says so)."""
    budget = context - completion_tokens
    counts = prompt_tokens(ds["prompt"], tokenizer, budget)
    keep = [index for index, count in enumerate(counts) if count <= budget]
    dropped = len(ds) - len(keep)
    why = f"{limit} minus {completion_key}={completion_tokens}"
    if not keep:
        raise DataError(f"every {label} prompt is longer than {budget} tokens ({why}): shorten the prompts or lower {completion_key}")
    if dropped:
        log.warning("dropped %d of %d %s prompts longer than %d tokens (%s)", dropped, len(ds), label, budget, why)
    return ds.select(keep) if dropped else ds, dropped


def fit_to_context(train, evaluation, model, tokenizer, cfg):
    """(train, eval, metrics): the prompts that leave no room for their completion dropped and counted
    per split; one line for a completion length that does not fit the context at all."""
    context, limit = context_limit(model, cfg)
    if context is None:
        log.info("the model's config has no max_position_embeddings: prompt lengths not checked")
        return train, evaluation, {}
    train_budget = ("algorithm.max_completion_length", cfg.algorithm.max_completion_length)
    eval_budget = ("eval.max_new_tokens", cfg.eval.max_new_tokens) if cfg.eval.max_new_tokens else train_budget
    check_completion_fits(context, limit, dict([train_budget, eval_budget]))
    train, dropped = drop_long_prompts(train, tokenizer, context, limit, *train_budget, "train")
    metrics = {"train_prompts_dropped_too_long": dropped}
    if evaluation is not None:
        evaluation, dropped = drop_long_prompts(evaluation, tokenizer, context, limit, *eval_budget, "eval")
        metrics["eval_prompts_dropped_too_long"] = dropped
    return train, evaluation, metrics
