"""Training log-probs of a reasoning-vocabulary policy from the distribution its tokens were drawn from.

The think-segment processor (rlvr/models/vocab.py) lets a token be drawn from the standard ids outside a think
segment and from all ids (or only the reasoning ids and the closing tag) inside one. TRL scores every
token against the whole vocabulary, so outside think the loss and the KL term would see a distribution
with mass on ids that can never be drawn there, and the gradient would push on their logits.

TRL computes the log-probs with its fused, tiled LM head (`trl.trainer.utils._ChunkedLogProbFunction`,
called by the forward that `add_fused_lm_head` installs): the [tokens, vocabulary] logits never exist.
Each allowed set is a contiguous block of the head's rows (plus the closing tag's row for REASONING),
so the same function, given only those rows, computes the log-softmax over that set exactly and with
the same memory savings. For the length of one call, `restricted_vocabulary` swaps TRL's function for
one that splits the labelled positions by allowed set and runs TRL's own on each with its rows.

The swap is rlvr._compat.swapped_chunked_log_prob_function (a private name of trl 1.16.x); the stand-in
relies on the positional arguments TRL's fused forward passes, and every call checks that the labels
it receives are the ones expected, so a change upstream fails loudly.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from rlvr.models.vocab import ALL, REASONING, STANDARD, ReasoningVocab


def shifted_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
    """(B, L - 1) next-token labels as TRL's GRPOTrainer and fused forward build them (-100: not scored)."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-logits_to_keep] = -100
    return labels[:, 1:]


class _RestrictedLogProbs:
    """Stands in for TRL's `_ChunkedLogProbFunction` (same `apply` signature)."""

    def __init__(self, original, vocab: ReasoningVocab, labels: torch.Tensor, allowed: torch.Tensor):
        self.original, self.vocab, self.labels, self.allowed = original, vocab, labels, allowed

    def _codes(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The allowed set of each row of `hidden`, in the order TRL's fused forward passed them."""
        expected, allowed = self.labels.to(labels.device), self.allowed.to(labels.device)
        valid = expected != -100
        if hidden.shape[0] == int(valid.sum()):  # only the labelled positions (CUDA; CPU under rlvr)
            expected, codes = expected[valid], allowed[valid]
        elif hidden.shape[0] == valid.numel():  # every position, labels clamped to 0
            expected, codes = expected.clamp(min=0).reshape(-1), allowed.reshape(-1)
        else:
            expected = None
        if expected is None or not torch.equal(expected, labels):
            raise RuntimeError(
                "TRL's fused LM head passed other positions than rlvr's reasoning-vocabulary "
                "log-probs expect: this TRL version is not supported (trl 1.16.x is)"
            )
        v = self.vocab
        standard_label = labels < v.standard_size
        # A label its set cannot hold (not drawn by the processor, e.g. a rollout_func's tokens): full vocabulary.
        codes = torch.where((codes == STANDARD) & ~standard_label, ALL, codes)
        return torch.where((codes == REASONING) & standard_label & (labels != v.think_close_id), ALL, codes)

    def _rows(self, code: int, weight, bias, labels):
        """The head's rows of one allowed set, and the labels renumbered into them."""
        v = self.vocab
        if code == STANDARD:
            return weight[: v.standard_size], None if bias is None else bias[: v.standard_size], labels
        if code == ALL:
            return weight, bias, labels
        close = slice(v.think_close_id, v.think_close_id + 1)
        rows = torch.cat([weight[v.standard_size :], weight[close]])
        rows_bias = None if bias is None else torch.cat([bias[v.standard_size :], bias[close]])
        return rows, rows_bias, torch.where(labels >= v.standard_size, labels - v.standard_size, v.size)

    def apply(self, hidden, weight, bias, labels, *rest):
        codes = self._codes(hidden, labels)
        present = codes.unique().tolist()
        if len(present) == 1:
            return self.original.apply(hidden, *self._rows(present[0], weight, bias, labels), *rest)
        parts = []
        for code in present:
            index = (codes == code).nonzero().squeeze(1)
            parts.append((index, self.original.apply(hidden[index], *self._rows(code, weight, bias, labels[index]), *rest)))
        merged = []
        for k, first in enumerate(parts[0][1]):
            if first is None:
                merged.append(None)
                continue
            out = first.new_zeros(hidden.shape[0])
            for index, values in parts:
                out = out.index_put((index,), values[k])
            merged.append(out)
        return tuple(merged)


@contextmanager
def restricted_vocabulary(vocab: ReasoningVocab, labels: torch.Tensor, allowed: torch.Tensor):
    """Inside the block, TRL's fused head scores position j of `labels` (B, L - 1) against the ids of
    `allowed[j]` (B, L - 1): STANDARD, ALL or REASONING. Not reentrant; one model call at a time."""
    from rlvr._compat import swapped_chunked_log_prob_function

    with swapped_chunked_log_prob_function(lambda original: _RestrictedLogProbs(original, vocab, labels, allowed)):
        yield
