"""A minimal multinomial sampler for GRPO rollouts: HF `generate`'s sampling, without its per-call
and per-token machinery, and with each distinct prompt prefilled once.

GRPO samples `num_generations` completions of every prompt. `generate` prefills each of those
rows separately and, on a small model, spends more time building processors, stopping criteria
and model kwargs than in the model. `sample` prefills each distinct prompt once, repeats its KV
cache (and first-token logits) to the prompt's `num_generations` rows, then runs a plain decode
loop that passes the model exactly what `generate` passes it (the last token, the 2D attention
mask, the cache) and samples exactly as `generate._sample` does: float32 logits, HF's own
processors in HF's order (repetition penalty, then `logits_processor`, then temperature, top-k,
top-p, min-p), `softmax`, one `torch.multinomial` per step over the whole batch, finished rows
padded, stop when every row has hit an EOS or `max_new_tokens`. Same RNG draws in the same
order, so with the same seed the completions are those of `generate` (tests/test_sampling.py);
the only numerical difference is the prefill batch (distinct prompts instead of all rows).
"""

from __future__ import annotations

from typing import Callable, Sequence

LogitsProcessor = Callable  # HF-style (input_ids (B, L), scores (B, V)) -> scores


def warpers(temperature: float = 1.0, top_k: int | None = 0, top_p: float = 1.0, min_p: float | None = None,
            repetition_penalty: float = 1.0, logits_processor: LogitsProcessor | None = None):
    """The processors `generate(do_sample=True)` builds for these settings, in its order, with
    `logits_processor` where `generate` puts a user's processors (before the sampling warpers)."""
    from transformers import (
        LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
        TopKLogitsWarper, TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=repetition_penalty))
    if logits_processor is not None:
        processors.append(logits_processor)
    if temperature is not None and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        processors.append(TopKLogitsWarper(top_k=top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=top_p))
    if min_p is not None:
        processors.append(MinPLogitsWarper(min_p=min_p))
    return processors


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int | None = None):
    """(input_ids, attention_mask), left-padded as TRL pads prompts for `generate`."""
    import torch

    width = max(len(r) for r in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def sample(model, prompt_ids: Sequence[Sequence[int]], num_generations: int, max_new_tokens: int, *,
           eos_token_ids: Sequence[int], pad_token_id: int, temperature: float = 1.0, top_k: int | None = 0,
           top_p: float = 1.0, min_p: float | None = None, repetition_penalty: float = 1.0,
           logits_processor: LogitsProcessor | None = None, pad_to_multiple_of: int | None = None) -> list[list[int]]:
    """`num_generations` sampled completions of each of `prompt_ids` (distinct prompts), in the
    order p0 x num_generations, p1 x num_generations, ...; each ends at its first EOS (kept)."""
    import torch
    from transformers import DynamicCache

    processors = warpers(temperature, top_k, top_p, min_p, repetition_penalty, logits_processor)
    device = model.device
    ids, mask = (t.to(device) for t in left_pad(prompt_ids, pad_token_id, pad_to_multiple_of))
    prompt_width = ids.shape[1]
    eos = torch.tensor(list(eos_token_ids), device=device)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                       return_dict=True).logits[:, -1]
        if num_generations > 1:  # one prefill per distinct prompt, shared by its rows
            cache.batch_repeat_interleave(num_generations)
            logits, ids, mask = (t.repeat_interleave(num_generations, dim=0) for t in (logits, ids, mask))
        unfinished = torch.ones(ids.shape[0], dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            if step:
                logits = model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=cache, use_cache=True,
                               return_dict=True).logits[:, -1]
            scores = processors(ids, logits.to(copy=True, dtype=torch.float32))
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            tokens = tokens * unfinished + pad_token_id * (1 - unfinished)
            ids = torch.cat([ids, tokens[:, None]], dim=-1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            unfinished = unfinished & ~torch.isin(tokens, eos)
            if unfinished.max() == 0:
                break
    return [_until_eos(row, eos_token_ids) for row in ids[:, prompt_width:].tolist()]


def _until_eos(row: list[int], eos_token_ids: Sequence[int]) -> list[int]:
    """The tokens up to and including the first EOS (TRL's completion mask keeps the EOS)."""
    for i, token in enumerate(row):
        if token in eos_token_ids:
            return row[: i + 1]
    return row
