"""Fine-grained GRPO: span rewards become per-token advantages; the loss is TRL's, unchanged.

TRL's `_compute_loss` accepts advantages of shape (B, T) as well as (B,), so the only override
is `_generate_and_score_completions`: after TRL has generated and scored (the scalar rewards are
the sums of span scores, for logging), the advantages are replaced by token-level ones:

1. each span's score is normalised within its reward group, over the group's spans in the completions
   of the same prompt (`scope: prompt`) or of the whole batch (`scope: batch`): standard
   (s-mean)/(std+eps), centered s-mean, or none, then multiplied by its reward function's weight.
   std is TRL's (Bessel-corrected) so one whole-completion span in one group reproduces GRPO's
   advantages exactly;
2. character spans map to tokens through the completion's offset mapping (exact when the fast
   tokenizer re-encodes the decoded text to the same ids; else an incremental-decode fallback);
3. a token's advantage is the mean advantage of the spans covering it; uncovered tokens get 0 and,
   with `uncovered: drop`, leave the loss, its denominator and the KL term (TRL's `tool_mask`), while
   the tokens after them still attend to them, as when they were sampled;
4. the stop token (one of TRL's `eos_token_ids` that ended the completion) is covered by every span of
   its completion, so it gets the mean of all of them, as in open-instruct: whether to stop here is
   learned from the whole completion's reward, not only from the spans that reach its last character.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import logging

import numpy as np
import torch
from accelerate.utils import gather_object

from rlvr.config import FineGrainedConfig
from rlvr.errors import ConfigError
from rlvr.rewards.spans import within
from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

log = logging.getLogger(__name__)
SUPPORTED_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")


def check_loss_type(loss_type: str) -> None:
    """The span advantages are defined for these TRL losses only."""
    if loss_type not in SUPPORTED_LOSSES:
        raise ConfigError(f"algorithm=fgrpo supports loss_type in {', '.join(SUPPORTED_LOSSES)}, not {loss_type!r}")


@dataclass
class SpanStats:
    exact: int = 0
    approximate: int = 0
    malformed: int = 0


@dataclass
class CleanSpans:
    """Spans of one completion after validation: arrays of scores, starts, ends, group names (str), and the
    weight that scales each span's normalised advantage."""

    scores: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    groups: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None  # None: 1 for every span


def clean_spans(spans: Sequence, text_length: int, stats: SpanStats) -> CleanSpans:
    """Spans `(score, (start, end), group[, weight])` as `rlvr.rewards.spans.within` keeps them: clipped
    to the text, or dropped (reversed, empty, a non-finite score); each such span counted (with
    `strict`, the reward has refused it already: rlvr.rewards.spans.SpanReward). A span of weight 0 is
    left out before anything (its reward function switched off, as a weight of 0 leaves a reward out of
    TRL's sum): in its group's statistics and in a token's mean it
    would move the other functions' advantages. A group is named by its text (`str`): `1` and `"1"` are
    one group, as they are one metric key (`group_metric`)."""
    kept = []
    for score, (start, end), group, *weight in spans:
        if weight and weight[0] == 0:
            continue
        if (chars := within(score, start, end, text_length)) != (start, end):  # clipped, or dropped (None)
            stats.malformed += 1
        if chars is not None:
            kept.append((float(score), *chars, str(group), float(weight[0]) if weight else 1.0))
    if not kept:
        return CleanSpans(np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int), [])
    scores, starts, ends, groups, weights = zip(*kept)
    return CleanSpans(np.array(scores), np.array(starts), np.array(ends), list(groups), np.array(weights))


def normalize_span_scores(
    spans: list[CleanSpans], num_generations: int, normalization: str, scope: str, eps: float = 1e-4
) -> list[np.ndarray]:
    """Per-span advantages: scores normalised within (reward group x prompt) or (reward group x batch),
    then times each span's weight."""
    advantages = [np.zeros_like(s.scores) for s in spans]
    population: dict[tuple, list[tuple[int, int]]] = {}
    for i, s in enumerate(spans):
        unit = i // num_generations if scope == "prompt" else 0
        for j, group in enumerate(s.groups):
            population.setdefault((unit, group), []).append((i, j))
    for members in population.values():
        scores = np.array([spans[i].scores[j] for i, j in members])
        centred = scores - scores.mean()
        if normalization == "standard":
            std = scores.std(ddof=1) if len(scores) > 1 else 0.0  # TRL's nanstd is Bessel-corrected
            centred = centred / (std + eps)
        values = scores if normalization == "none" else centred
        for (i, j), value in zip(members, values):
            advantages[i][j] = value if spans[i].weights is None else value * spans[i].weights[j]
    return advantages


def token_char_offsets(tokenizer, ids: Sequence[int], text: str, special: set[int] | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(starts, ends, exact) character offsets in `text` of each id; see `batch_token_char_offsets`."""
    return batch_token_char_offsets(tokenizer, [ids], [text], special)[0]


def batch_token_char_offsets(
    tokenizer, rows: Sequence[Sequence[int]], texts: Sequence[str], special: set[int] | None = None
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Per row, (starts, ends, exact): the character offsets in `texts[i]` of each id of `rows[i]`;
    special tokens are zero-width.

    `texts[i]` is the completion as TRL decoded it (special tokens skipped). Exact: a fast
    tokenizer re-encodes the text to the same ids, and its offsets are used. Otherwise each token
    ends where the decoded prefix ending with it ends (approximate inside multi-byte characters).
    Each source is one batched call for all rows: the fast tokenizer's Rust encoder, then one
    `batch_decode` of every prefix of every row that did not re-encode.
    `special`: the tokenizer's special ids, when the caller already has them.
    """
    special = set(tokenizer.all_special_ids) if special is None else special
    contents = [[t for t in ids if t not in special] for ids in rows]
    offsets: list = [None] * len(rows)
    if getattr(tokenizer, "is_fast", False):
        backend = tokenizer.backend_tokenizer
        # The Rust tokenizer keeps the padding and truncation of the last transformers call (which sets them
        # before each of its own): unpadded, untruncated here, or rows would not re-encode to their ids.
        backend.no_padding(), backend.no_truncation()
        for i, encoding in enumerate(backend.encode_batch(list(texts), add_special_tokens=False)):
            if encoding.ids == contents[i]:
                offsets[i] = encoding.offsets
    exact = [o is not None for o in offsets]
    inexact = [i for i, o in enumerate(offsets) if o is None]
    prefixes = [contents[i][: k + 1] for i in inexact for k in range(len(contents[i]))]
    lengths = iter(len(t) for t in tokenizer.batch_decode(prefixes, skip_special_tokens=True)) if prefixes else iter(())
    for i in inexact:
        ends = [next(lengths) for _ in contents[i]]
        offsets[i] = [(min(a, b), b) for a, b in zip([0] + ends[:-1], ends)]
    results = []
    for ids, row_offsets, row_exact in zip(rows, offsets, exact):
        starts, ends, k, position = [], [], 0, 0
        for token in ids:
            if token in special:
                starts.append(position), ends.append(position)
            else:
                start, end = row_offsets[k]
                k, position = k + 1, end
                starts.append(start), ends.append(end)
        results.append((np.array(starts, dtype=int), np.array(ends, dtype=int), row_exact))
    return results


def coverage(tok_starts: np.ndarray, tok_ends: np.ndarray, span_starts: np.ndarray, span_ends: np.ndarray) -> np.ndarray:
    """(S, T) bool: span s covers token t (overlap; a zero-width token is covered by spans touching it).

    Token offsets are (T,) for one completion, or (S, T): each span's own completion's tokens.
    """
    s0, s1 = span_starts[:, None], span_ends[:, None]
    t0, t1 = (tok_starts, tok_ends) if tok_starts.ndim == 2 else (tok_starts[None, :], tok_ends[None, :])
    overlap = (t0 < s1) & (t1 > s0)
    zero_width = (t0 == t1) & (t0 >= s0) & (t0 <= s1)
    return overlap | zero_width


def token_advantages(
    cover: np.ndarray, span_advantages: np.ndarray, rows: np.ndarray | None = None, num_rows: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(advantage per token, covered mask): the mean of the covering spans' advantages, 0 if none.

    One completion: `cover` is (S, T) and the results are (T,). A batch: `rows` gives each span's
    completion and the results are (num_rows, T).
    """
    single = rows is None
    rows = np.zeros(len(span_advantages), dtype=np.int64) if single else rows
    total, count = np.zeros((num_rows, cover.shape[1])), np.zeros((num_rows, cover.shape[1]))
    np.add.at(total, rows, cover * span_advantages[:, None])
    np.add.at(count, rows, cover)
    advantages, covered = np.where(count > 0, total / np.maximum(count, 1), 0.0), count > 0
    return (advantages[0], covered[0]) if single else (advantages, covered)


COVERED_TOKEN_FRAC = "fgrpo/covered_token_frac"  # logged at every step, train and eval


def group_metric(group, statistic: str) -> str:
    """The logged name of reward group `group`'s `statistic` (score_mean, adv_abs_mean, ...)."""
    return f"fgrpo/{group}/{statistic}"


def groups_in(row: dict, statistic: str) -> dict[str, float]:
    """{group: value} of every `group_metric(group, statistic)` key of a logged row."""
    prefix, suffix = group_metric("\0", statistic).split("\0")
    return {
        key[len(prefix) : -len(suffix)]: value
        for key, value in row.items()
        if key.startswith(prefix) and key.endswith(suffix) and len(key) > len(prefix) + len(suffix)
    }


def silence_in(log_history: list[dict]) -> tuple[dict[str, int], int]:
    """The training steps in a row without signal at the end of `log_history` (a resumed run's logged
    rows, TrainerState's): per reward group, and of every span. A training row stands for the steps
    since the row before; its group's adv_abs_mean is 0 only when it was 0 at each of them."""
    silent: dict[str, int] = {}
    signalless = previous = 0
    for row in log_history:
        if COVERED_TOKEN_FRAC not in row:  # an eval row (eval_-prefixed) or the run's summary
            continue
        steps, previous = row["step"] - previous, row["step"]
        groups = groups_in(row, "adv_abs_mean")
        for group, adv_abs_mean in groups.items():
            silent[group] = 0 if adv_abs_mean else silent.get(group, 0) + steps
        signalless = 0 if any(groups.values()) else signalless + steps
    return silent, signalless


class FineGrainedGRPOTrainer(RolloutLoggingGRPOTrainer):
    """GRPO with span-level rewards and per-reward-group advantages (see the module docstring)."""

    silent_group_steps = 10  # warn once when a reward group's advantages were all 0 for this many steps in a row
    zero_spread_generations = None  # the scalar rewards' spread is not what trains: the spans' advantages are watched

    def __init__(self, *args, fine_grained: FineGrainedConfig, **kwargs):
        super().__init__(*args, **kwargs)
        check_loss_type(self.loss_type)
        self.fine_grained = fine_grained
        self.special_ids = set(self.processing_class.all_special_ids)
        # Training steps in a row without signal: per reward group, and of every span. None until the first
        # step, which reads them from the logged rows a resumed run starts with (silence_in).
        self.silent_steps: dict[str, int] | None = None
        self.signalless_steps = 0
        self.warned: set[str | None] = set()  # the groups warned about in this process; None: every span

    def _local_spans(self) -> list[list]:
        per_function = [getattr(r.fn, "last_spans", None) for r in self.rewards]
        if any(spans is None for spans in per_function):
            raise ConfigError("algorithm=fgrpo needs span rewards (e.g. reward=fgrpo_spans)")
        return [sum(rows, []) for rows in zip(*per_function)]

    def _generate_and_score_completions(self, inputs):
        return self.span_advantages(super()._generate_and_score_completions(inputs))

    def span_advantages(self, output: dict) -> dict:
        """TRL's generated and scored batch `output`, changed in place and returned: its advantages replaced
        by token-level ones from the spans the span rewards kept (`last_spans`) when they scored this batch,
        and with `uncovered: drop` uncovered tokens out of the mask. Every process calls it (spans and
        lengths are gathered across processes)."""
        mode = "train" if self.model.training else "eval"
        settings, stats = self.fine_grained, SpanStats()
        ids = output["completion_ids"].tolist()
        if self.reasoning_vocab is not None:  # spans index the text rewards read: standard ids
            ids = [self.reasoning_vocab.to_standard(row) for row in ids]
        mask = output["completion_mask"]
        texts = self.processing_class.batch_decode(ids, skip_special_tokens=True)
        local = self._local_spans()
        text_lengths = gather_object([len(t) for t in texts])
        cleaned = [clean_spans(s, n, stats) for s, n in zip(gather_object(local), text_lengths)]
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        span_adv = normalize_span_scores(cleaned, num_generations, settings.normalization, settings.scope, settings.eps)
        offset = self.accelerator.process_index * len(texts)
        # Token offsets of every row, then one vectorised span x token coverage for the whole batch.
        shape = tuple(mask.shape)
        tok_starts, tok_ends = np.zeros(shape, dtype=np.int64), np.full(shape, -1, dtype=np.int64)  # padding: never covered
        exact_rows = np.zeros(shape[0], dtype=bool)
        token_lengths = mask.sum(dim=1).tolist()
        row_offsets = batch_token_char_offsets(
            self.processing_class, [row[:n] for row, n in zip(ids, token_lengths)], texts, self.special_ids
        )
        for i, (length, (starts, ends, exact)) in enumerate(zip(token_lengths, row_offsets)):
            tok_starts[i, :length], tok_ends[i, :length], exact_rows[i] = starts, ends, exact
        local_spans = cleaned[offset : offset + len(texts)]
        rows = np.concatenate([np.full(len(sp.scores), i) for i, sp in enumerate(local_spans)]).astype(np.int64)
        span_starts = np.concatenate([sp.starts for sp in local_spans]).astype(np.int64)
        span_ends = np.concatenate([sp.ends for sp in local_spans]).astype(np.int64)
        span_values = np.concatenate(span_adv[offset : offset + len(texts)])
        cover = coverage(tok_starts[rows], tok_ends[rows], span_starts, span_ends)  # (S, T)
        if len(rows):  # a span maps exactly when it starts and ends on token boundaries (and offsets were exact)
            first, last = cover.argmax(axis=1), shape[1] - 1 - cover[:, ::-1].argmax(axis=1)
            on_boundary = (
                (tok_starts[rows, first] == span_starts) & (tok_ends[rows, last] == span_ends) & exact_rows[rows] & cover.any(axis=1)
            )
            mapped = np.array(token_lengths)[rows] > 0  # a completion masked whole (mask_truncated_completions) maps nothing
            stats.exact += int((on_boundary & mapped).sum())
            stats.approximate += int((~on_boundary & mapped).sum())
        stops = np.isin(output["completion_ids"].cpu().numpy(), self.eos_token_ids) & mask.bool().cpu().numpy()
        cover |= stops[rows]  # the stop token: every span of its completion
        advantages, covered = token_advantages(cover, span_values, rows, shape[0])
        advantages, covered = torch.from_numpy(advantages.astype(np.float32)), torch.from_numpy(covered)
        device = output["completion_mask"].device
        output["advantages"] = advantages.to(device)
        if settings.uncovered == "drop":
            # Out of the loss and the KL term through TRL's tool_mask, which masks only those: the completion
            # mask is also the training forward's attention mask, and the kept tokens were sampled attending to
            # the dropped ones.
            kept = covered.to(device, mask.dtype)
            output["tool_mask"] = kept if output.get("tool_mask") is None else output["tool_mask"] * kept
            output["num_items_in_batch"] = self.accelerator.gather((mask * output["tool_mask"]).sum()).sum()
        self._log_span_metrics(mode, cleaned, span_adv, covered, mask, stats)
        return output

    def _log_span_metrics(self, mode, cleaned, span_adv, covered, mask, stats: SpanStats) -> None:
        metrics = self._metrics[mode]
        if mode == "train" and self.silent_steps is None:
            self.silent_steps, self.signalless_steps = silence_in(self.state.log_history)
        groups = sorted({g for s in cleaned for g in s.groups})
        for group in groups:
            scores = np.array([sc for s in cleaned for sc, g in zip(s.scores, s.groups) if g == group])
            advs = np.array([a for s, adv in zip(cleaned, span_adv) for a, g in zip(adv, s.groups) if g == group])
            metrics[group_metric(group, "score_mean")].append(float(scores.mean()))
            metrics[group_metric(group, "score_std")].append(float(scores.std()))
            metrics[group_metric(group, "advantage_mean")].append(float(advs.mean()))
            metrics[group_metric(group, "advantage_std")].append(float(advs.std()))
            metrics[group_metric(group, "adv_abs_mean")].append(float(np.abs(advs).mean()))
            if mode == "train":
                self._watch_signal(group, bool(np.any(advs != 0)))
        if mode == "train":
            self._watch_spans(any(np.any(adv != 0) for adv in span_adv), stats.malformed, kept=sum(len(s.scores) for s in cleaned))
        total = stats.exact + stats.approximate
        metrics[COVERED_TOKEN_FRAC].append(float((covered & mask.bool().cpu()).sum() / max(mask.sum().item(), 1)))
        metrics["fgrpo/spans_exact_frac"].append(stats.exact / total if total else 1.0)
        metrics["fgrpo/spans_malformed"].append(float(stats.malformed))

    def _watch_spans(self, has_signal: bool, malformed: int, kept: int) -> None:
        """Count the steps in a row in which no span of any group had a non-zero advantage; warn once when
        they reach `silent_group_steps` (once per process). The per-group warning misses a run whose spans are all malformed
        or that returns none: no group is left to watch, or only the odd one (an empty completion's) with
        nothing to compare against."""
        self.signalless_steps = 0 if has_signal else self.signalless_steps + 1
        if self.signalless_steps >= self.silent_group_steps and None not in self.warned and self.accelerator.is_main_process:
            self.warned.add(None)
            if malformed:
                why = (
                    f"{malformed} spans of this step were malformed (reversed, empty, outside their completion or not finite) and "
                    "dropped (see fgrpo/spans_malformed; algorithm.fine_grained.strict=true stops at the first one)"
                )
            elif not kept:
                why = "the span rewards returned no spans this step (an empty list for every completion)"
            else:
                why = "every span scores the same in every completion of a prompt"
            log.warning(
                "fgrpo: every advantage has been 0 for %d steps in a row, so the run learns nothing: %s", self.signalless_steps, why
            )

    def _watch_signal(self, group: str, has_signal: bool) -> None:
        """Count the steps in a row in which `group` trained nothing; warn once when they reach
        `silent_group_steps`, once per process (a group whose every member scores the same never trains)."""
        steps = 0 if has_signal else self.silent_steps.get(group, 0) + 1
        self.silent_steps[group] = steps
        if steps >= self.silent_group_steps and group not in self.warned and self.accelerator.is_main_process:
            self.warned.add(group)
            log.warning(
                "fgrpo: reward group %r has had all-zero advantages for %d steps in a row: its spans "
                "score the same in every completion of a prompt, so it carries no learning signal "
                "(see %s)",
                group,
                steps,
                group_metric(group, "adv_abs_mean"),
            )
