"""Span rewards for fine-grained GRPO: a function scores parts of a completion, not the whole.

Contract (TRL's signature, another return type): `fn(prompts, completions, **columns)` returns, per
completion, a list of spans `(score, (start_char, end_char), group)`; `group` names a reward group
(format, accuracy, reasoning, ...). `SpanReward` adapts such a function for TRL (the scalar it
logs is the sum of a completion's span scores) and keeps the spans for the trainer. A span function
may also say which completions hold no answer at all (`fn.finds_no_answer(text) -> bool`): their
outcome is `missing`, as a scalar reward's is, rather than `wrong`.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Callable, Sequence

from rlvr.errors import ConfigError, RewardError
from rlvr.rewards.answers import FINAL_LINE, NUMBER, completion_text, gold_answer, last_line, normalize_number, short
from rlvr.rewards.base import Outcome
from rlvr.tracking.outputs import is_whole_number

Span = tuple[float, tuple[int, int], Any]
CONTRACT = ": a span reward returns, per completion, a list of spans (score, (start_char, end_char), group)"
STRICT = (
    ": algorithm.fine_grained.strict=true refuses a span outside the completion, reversed, empty or with a non-finite score "
    "(false: clipped or dropped, and counted in fgrpo/spans_malformed)"
)
BOXED = re.compile(r"\\boxed\{(?P<value>[^{}]{0,80})\}")


class SpanReward:
    """TRL-facing wrapper of a span function. `last_spans` holds the spans of the latest call, each with
    the function's `weight` as a fourth item: it scales the span's advantage after the normalisation
    within its reward group (which would cancel a scale applied to the scores), as TRL's
    `normalize_then_sum` weighs rewards normalised one by one. The scalar TRL logs is the weighted sum.
    With `strict` (algorithm.fine_grained.strict), a malformed span of a reward that is switched on
    (weight not 0) is a RewardError naming it, in training and in every eval alike; without, training
    clips or drops it and counts it, and an eval judges what training keeps (`within`)."""

    def __init__(self, name: str, fn: Callable[..., list[list[Span]]], weight: float = 1.0, strict: bool = False):
        self.__name__ = name
        self.fn, self.weight, self.strict = fn, weight, strict
        self.last_spans: list[list[Span]] = []
        self.last_outcomes: list[Outcome] = []

    def __call__(self, prompts=None, completions=(), **columns) -> list[float]:
        texts = [completion_text(c) for c in completions]
        spans = self.fn(prompts=prompts, completions=texts, **columns)
        if not isinstance(spans, (list, tuple)):
            raise RewardError(f"span reward '{self.__name__}' returned {short(spans)}, not a list of {len(texts)} span lists{CONTRACT}")
        if spans and isinstance(spans[0], numbers.Real):
            raise ConfigError(
                f"reward '{self.__name__}' returned {type(spans[0]).__name__}s, not span lists: "
                "algorithm=fgrpo needs span rewards (e.g. reward=fgrpo_spans)"
            )
        if len(spans) != len(texts):
            raise RewardError(f"span reward '{self.__name__}' returned {len(spans)} span lists for {len(texts)} completions{CONTRACT}")
        self.last_spans = [[(*span, self.weight) for span in self.checked_row(i, row, prompts)] for i, row in enumerate(spans)]
        if self.strict and self.weight != 0:
            for i, (row, text) in enumerate(zip(self.last_spans, texts)):
                for score, (start, end), group, _ in row:
                    if within(score, start, end, len(text)) != (start, end):
                        what = f"a malformed span for a completion of {len(text)} characters"
                        self.refuse(i, (score, (start, end), group), prompts, what, STRICT)
        # what training keeps of the spans (`within`): a dropped span, such as a NaN score, counts in no total
        totals = [  # + 0.0: a negative sum times weight 0 is -0.0, which rollouts.jsonl would show
            sum(s for s, (start, end), _, _ in row if within(s, start, end, len(text)) is not None) * self.weight + 0.0
            for row, text in zip(self.last_spans, texts)
        ]
        no_answer = getattr(self.fn, "finds_no_answer", lambda text: False)
        self.last_outcomes = [_outcome(total, row, text, no_answer(text)) for total, row, text in zip(totals, self.last_spans, texts)]
        return totals

    def checked_row(self, row: int, spans: Any, prompts) -> list[Span]:
        """Row `row`'s spans as (float score, (int start, int end), group), or a RewardError naming the
        reward, the row and what it returned. Offsets outside the completion and non-finite scores pass:
        the trainer drops and counts them (`fgrpo/spans_malformed`), or refuses them with `strict`."""
        if not isinstance(spans, (list, tuple)) or (spans and isinstance(spans[0], numbers.Real)):
            self.refuse(row, spans, prompts, "not a list of spans")
        checked = []
        for span in spans:
            if not (isinstance(span, (list, tuple)) and len(span) == 3):
                self.refuse(row, span, prompts, "a span that is not 3 items")
            score, chars, group = span
            if isinstance(score, bool) or not isinstance(score, numbers.Real):
                self.refuse(row, span, prompts, "a span whose score is not a number")
            if not (isinstance(chars, (list, tuple)) and len(chars) == 2 and all(is_whole_number(c) for c in chars)):
                self.refuse(row, span, prompts, "a span whose characters are not (start_char, end_char) integers")
            try:
                hash(group)
            except TypeError:
                self.refuse(row, span, prompts, "a span whose group is not a name (hashable)")
            checked.append((float(score), (int(chars[0]), int(chars[1])), group))
        return checked

    def refuse(self, row: int, value: Any, prompts, what: str, why: str = CONTRACT) -> None:
        prompt = f" (prompt {short(completion_text(prompts[row]), 60)})" if prompts is not None and row < len(prompts) else ""
        raise RewardError(f"span reward '{self.__name__}' returned {what}, {short(value)}, for row {row}{prompt}{why}")


def within(score: float, start: int, end: int, length: int) -> tuple[int, int] | None:
    """The characters (start, end) a span keeps of a completion of `length` characters: its own, or
    clipped to the completion; None when nothing is left (a non-finite score, a reversed or empty span).
    (0, 0) of an empty completion is its whole. A span it changes is malformed (`fgrpo/spans_malformed`)."""
    if not math.isfinite(score):
        return None
    if length == 0:
        return (0, 0) if (start, end) == (0, 0) else None
    start, end = max(0, min(start, length)), max(0, min(end, length))
    return (start, end) if start < end else None


def _outcome(total: float, spans: list[Span], text: str, no_answer: bool) -> Outcome:
    """A completion's outcome, from the accuracy-group spans that training keeps (`within`): correct
    when all of them score above 0 (the span contract's sign rule: `check_answer_spans` holds the
    built-in spans' scores to it), else wrong, or missing where the function found `no_answer`; its
    prediction, the text of the first of them (what maj@k votes on). A completion without accuracy
    spans is judged on form only ("ok", correct None); one whose accuracy spans training drops
    (malformed) has no verdict ("error")."""
    accuracy = [(score, within(score, start, end, len(text))) for score, (start, end), group, _ in spans if group == "accuracy"]
    if not accuracy:
        return Outcome(total, "ok")
    if no_answer:
        return Outcome(total, "missing", None, False)
    kept = [(score, characters) for score, characters in accuracy if characters is not None]
    if not kept:
        return Outcome(total, "error", None, False)
    correct = all(score > 0 for score, _ in kept)
    return Outcome(total, "correct" if correct else "wrong", text[slice(*kept[0][1])], correct)


def _answer_match(text: str):
    """The final answer's location: a 'Final: n' last line, else the last \\boxed{}, else the last number."""
    if last := last_line(text):
        match = FINAL_LINE.match(last.group())
        if match:
            return last.start(), last.end(), last.start() + match.start("value"), last.start() + match.end("value")
    boxed = list(BOXED.finditer(text))
    if boxed:
        m = boxed[-1]
        return m.start(), m.end(), m.start("value"), m.end("value")
    numbers = list(NUMBER.finditer(text))
    if numbers:
        m = numbers[-1]
        return None, None, m.start(), m.end()
    return None


def answer_spans(
    completions: Sequence[str],
    answer: Sequence[Any],
    format_score: float = 0.5,
    correct: float = 1.0,
    wrong: float = -1.0,
    reasoning_score: float = 0.0,
    missing: float = -1.0,
    **_: Any,
) -> list[list[Span]]:
    """Built-in spans for arithmetic and GSM8K-style answers, one span per reward group per completion.

    - accuracy: the number itself, `correct` or `wrong` against the gold answer; a completion with no
      number at all (an empty one included) gets `missing` over all of it;
    - format: the final answer line / \\boxed{}, `format_score` when present, else 0 over the whole
      completion (as open-instruct's format reward): every completion is in the group, so it has
      variance whenever some completions keep the format and some do not;
    - reasoning: the text before the answer, `reasoning_score` when present, else 0 over the whole
      completion; `reasoning_score=0` (the default) leaves the group out (it could carry no signal).
    """
    out = []
    for completion, raw in zip(completions, answer, strict=True):
        text = completion_text(completion)  # text already in training (SpanReward); chat messages where rlvr.score hands them on
        whole = (0, len(text))
        located = _answer_match(text)
        if located is None:
            spans = [(missing, whole, "accuracy"), (0.0, whole, "format")]
            out.append(spans + ([(0.0, whole, "reasoning")] if reasoning_score else []))
            continue
        fmt_start, fmt_end, value_start, value_end = located
        gold = normalize_number(gold_answer(raw) or "")
        right = gold is not None and normalize_number(text[value_start:value_end]) == gold
        spans = [(correct if right else wrong, (value_start, value_end), "accuracy")]
        spans.append((format_score, (fmt_start, fmt_end), "format") if fmt_start is not None else (0.0, whole, "format"))
        if reasoning_score:
            reasoning_end = fmt_start if fmt_start is not None else value_start
            present = reasoning_end > 0 and text[:reasoning_end].strip()
            spans.append((reasoning_score, (0, reasoning_end), "reasoning") if present else (0.0, whole, "reasoning"))
        out.append(spans)
    return out


def check_answer_spans(name: str, format_score=0.5, correct=1.0, wrong=-1.0, reasoning_score=0.0, missing=-1.0) -> None:
    """`answer_spans`' settings, before anything loads (this signature declares them: its `**_` takes
    what TRL passes at each call): each score a finite number, and `correct` above 0 with `wrong` and
    `missing` at most 0, as the sign rule that says which completions are correct (eval accuracy, each
    row's `correct`) reads them. `correct=0` made every answer wrong; `wrong=0.25`, every one right."""
    from rlvr.config import Range, check_number

    sign_rule = "an answer counts as correct when its accuracy span scores above 0"
    for key, value in {"format_score": format_score, "reasoning_score": reasoning_score}.items():
        check_number(f"reward.functions.{name}.{key}", value)
    check_number(f"reward.functions.{name}.correct", correct, Range(0, open_low=True, why=sign_rule))
    for key, value in {"wrong": wrong, "missing": missing}.items():
        check_number(f"reward.functions.{name}.{key}", value, Range(high=0, why=sign_rule))


answer_spans.preflight = check_answer_spans  # run at start-up and when the rewards are built (`rewards.base`)
answer_spans.finds_no_answer = lambda text: _answer_match(text) is None  # its `missing` spans (SpanReward)
SPAN_FUNCTIONS = (answer_spans,)  # the built-in span rewards, which train with algorithm=fgrpo only
