"""The next token drawn by inverse CDF, as the last logits processor of a greedy `generate`.

transformers samples with `torch.multinomial`, which on CPU draws one exponential variate per
vocabulary entry per sequence per step. At Qwen's 151,936 ids that is 4.9M variates for 32
sequences: 75 ms a token, 82% of a GRPO rollout's time on `model=qwen2.5_shape` (torch profiler,
2 cores). Inverse CDF needs one uniform per sequence: the filtered distribution's cumulative sum
(in float64, so no tail token loses its share to rounding) and a binary search, done in two levels
(`draw`). The processor keeps only the drawn token and the greedy `generate` takes it: the same
distribution, drawn differently. Two sources of uniforms use it: the global generator (training
rollouts on CPU) and one seeded stream per sequence (evaluation, reproducible whatever the batch).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from rlvr.errors import DIVERGED_TRAINING, DivergedError

Uniforms = Callable[[int, int, torch.device], torch.Tensor]  # (step, batch, device) -> (batch,) float64 in [0, 1)


def sampling_warpers(temperature: float, top_p: float = 1.0, top_k: int = 0, min_p: float | None = None):
    """transformers' own filters, in the order `generate` applies them when it samples."""
    return LogitsProcessorList(
        ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else [])
        + ([TopKLogitsWarper(top_k)] if top_k else [])
        + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
        + ([MinPLogitsWarper(min_p)] if min_p is not None else [])
    )


class InverseCdfSampler(LogitsProcessor):
    """Filter the scores with `warpers`, draw one token per sequence from their softmax with
    `uniforms`, and leave only that token (every other score -inf)."""

    def __init__(self, warpers: LogitsProcessorList, uniforms: Uniforms):
        self.warpers = warpers
        self.uniforms = uniforms
        self.step = 0

    def __call__(self, input_ids, scores):
        warped = self.warpers(input_ids, scores)
        # softmax's numerators, unnormalised (draw scales its point by their sum), in the one (B, V) tensor
        # this call allocates, then returned as the scores: at Qwen's vocabulary each new (B, V) tensor
        # costs its page faults (64 rows: softmax 35 ms and full_like 23 ms inside a run)
        weights = (warped - warped.amax(dim=-1, keepdim=True)).exp_()
        drawn = draw(weights, self.uniforms(self.step, scores.shape[0], scores.device))
        self.step += 1
        return weights.fill_(-math.inf).scatter_(1, drawn.unsqueeze(1), 0.0)


BLOCK = 1024  # ids per block of `draw`'s first level


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Row i's id: the first whose cumulative probability (float64) exceeds uniforms[i] times the row's
    total (`probs` need not sum to 1: they are weights).

    A row wider than BLOCK is searched in two levels, so that a step reads the (B, V) probabilities
    once: the block of BLOCK ids whose end first passes the point, then the float64 cumulative sum
    inside that block only. The block sums are float32's (summing with dtype=float64 converts first:
    40 ms where this takes 2): a block's edge moves by its sum's rounding, about 1e-7 of the block's
    mass, which the few ids at its end (of shares far below that) gain or lose; every other id keeps
    its float64 share, however small. At Qwen's 151,936 ids, 32 rows on one core: 62 ms for the whole-row float64
    cumsum, 1.5 ms for this. A 0-probability id is never drawn: it adds nothing to the sum before it.
    """
    rows, width = probs.shape
    uniforms = uniforms.to(torch.float64).unsqueeze(1)
    if width <= BLOCK:  # one block: its cumulative sum, in fewer operations than the two levels
        cdf = probs.cumsum(dim=-1, dtype=torch.float64)
        return first_past(cdf, uniforms * checked_total(cdf[:, -1:])).squeeze(1)
    whole = width - width % BLOCK
    block_sums = probs[:, :whole].reshape(rows, -1, BLOCK).sum(dim=-1, dtype=torch.float32)  # float32 also for half weights
    if whole < width:
        block_sums = torch.cat([block_sums, probs[:, whole:].sum(dim=-1, keepdim=True, dtype=torch.float32)], dim=1)
    block_cdf = block_sums.to(torch.float64).cumsum(dim=-1)
    point = uniforms * checked_total(block_cdf[:, -1:])
    block = first_past(block_cdf, point)  # a block that holds probability, so some id in it is drawn
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)), 0.0)
    ids = block * BLOCK + torch.arange(BLOCK, device=probs.device)
    inside = torch.where(ids < width, probs.gather(1, ids.clamp(max=width - 1)), 0.0)
    cdf = before + inside.cumsum(dim=-1, dtype=torch.float64)
    return (block * BLOCK + first_past(cdf, point)).squeeze(1)


def checked_total(total: torch.Tensor) -> torch.Tensor:
    """`total`, (B, 1) rows' sums of weights, or a DivergedError where one is not a positive number: the
    scores held NaN or infinity (exp of a NaN, or inf - inf once the row's maximum is taken off), or
    every one was -inf; nothing can be drawn from such a row (transformers' sampling raises too)."""
    refuse_non_finite(~(torch.isfinite(total) & (total > 0)).squeeze(1))
    return total


def refuse_non_finite(bad: torch.Tensor) -> None:
    """A DivergedError if any of the (B,) flags `bad` (a sequence whose scores hold NaN or infinity) is set."""
    if bad.any():
        raise DivergedError(
            f"the model's next-token scores hold NaN or infinity ({int(bad.sum())} of {len(bad)} sequences): the weights loaded are "
            f"broken, or training diverged: {DIVERGED_TRAINING}"
        )


class FirstScoresChecked(LogitsProcessor):
    """Leaves the scores as they are, after refusing (`refuse_non_finite`) the first step's where a row's
    maximum is not finite (a NaN in it, +inf, or every score -inf). For greedy decoding, which would take
    id 0 from NaN scores and score its text as any other: a model whose weights are NaN. The first step
    only (a broken model shows there): every step's would be a pass over (B, V) scores per token."""

    def __init__(self):
        self.checked = False

    def __call__(self, input_ids, scores):
        if not self.checked:
            refuse_non_finite(~torch.isfinite(scores.amax(dim=-1)))
            self.checked = True
        return scores


def first_past(cdf: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """(B, 1) the first index whose cumulative sum `cdf` exceeds `point`: an index that adds to the sum.
    A point that rounding put at or past the end is taken just below it: the last such index."""
    below_end = torch.nextafter(cdf[:, -1:], torch.zeros_like(point))
    return torch.searchsorted(cdf, torch.minimum(point, below_end), right=True)


def global_stream_sampler(temperature: float, top_p: float, top_k: int, min_p: float | None) -> InverseCdfSampler:
    """Uniforms from torch's global generator (seeded by the run's seed, as transformers' sampling is)."""
    return InverseCdfSampler(
        sampling_warpers(temperature, top_p, top_k, min_p),
        lambda step, batch, device: torch.rand(batch, dtype=torch.float64, device=device),
    )


def row_seeded_sampler(seeds: Sequence[int], steps: int, temperature: float, top_p: float, top_k: int, device) -> InverseCdfSampler:
    """Sequence i's token at step t from the t-th uniform of its own stream `seeds[i]`.

    transformers' sampling draws the whole batch from one global generator, so a sequence's tokens
    would depend on its batch mates; no generation option seeds per sequence. Each stream's `steps`
    uniforms are drawn up front on the CPU (the same on any device).
    """
    table = torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]).to(
        device
    )  # (B, steps)
    return InverseCdfSampler(sampling_warpers(temperature, top_p, top_k), lambda step, batch, _: table[:, step])


class SampledTokenLogProbs(LogitsProcessor):
    """Records the log-prob of every drawn token under the scores this processor sees, divided by
    `temperature`: the distribution TRL's training log-probs are computed from (temperature, no top-k or
    top-p), with whatever the processors before this one masked. Leaves the scores untouched.

    The token drawn at step t is known at step t + 1 (the last input id), so each call settles the
    previous step; `per_completion` settles the last one from the completions.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.steps: list[torch.Tensor] = []  # (B,) log-prob of the token drawn at each settled step
        self.pending: torch.Tensor | None = None  # (B, V) log-softmax of the step not yet settled

    def __call__(self, input_ids, scores):
        if self.pending is not None:
            self.steps.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self.pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def per_completion(self, completion_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """One log-prob per token of each completion (token lists as TRL returns them: up to the stop token)."""
        if self.pending is not None:
            step = len(self.steps)
            last = torch.tensor([ids[step] if len(ids) > step else 0 for ids in completion_ids], device=self.pending.device)
            self.steps.append(self.pending.gather(1, last[:, None]).squeeze(1))
            self.pending = None
        table = torch.stack(self.steps, dim=1).tolist() if self.steps else [[] for _ in completion_ids]
        return [row[: len(ids)] for row, ids in zip(table, completion_ids, strict=True)]
