"""math-verify on the completion's final answer (preferring the last \\boxed{}) against the gold answer."""

from __future__ import annotations

import re
from typing import Sequence

from rlvr.rewards.answers import normalize_number
from rlvr.rewards.base import Outcome, Reward
from rlvr.rewards.sandbox import TimeLimitedPool


# LaTeX that math-verify's parser anchors on: an unescaped $, \( \[ or \boxed.
LATEX_ANCHOR = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")


def gold_latex(gold: str) -> str:
    """The gold answer as math-verify's README and TRL's `accuracy_reward` hand it to `parse`: LaTeX.

    A bare answer ("(-2,1)", "10,\\!080", "25\\%") goes between $...$, as in math-verify's
    examples; text that already carries math delimiters (a whole worked solution, as TRL's
    `solution` column) is passed as it is. A number in exponent form is written out (1e3: 1000).
    No other rewriting: commas are part of tuples and sets.
    """
    if re.search(r"\d[eE]", gold) and (written_out := normalize_number(gold)) is not None:  # math-verify reads 1e3 as 1·e³
        gold = written_out
    return gold if LATEX_ANCHOR.search(gold) else f"${gold}$"


def verify_one(completion: str, gold: str) -> tuple[bool, str | None]:
    """(is_correct, extracted prediction). Runs inside a worker; no internal alarms: the pool kills."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold_parsed = parse(gold_latex(gold), parsing_timeout=None)
    predicted = parse(completion, parsing_timeout=None)
    if not predicted:
        return False, None
    prediction = str(predicted[-1])[:200]
    return bool(verify(gold_parsed, predicted, timeout_seconds=None)), prediction


def same_one(a: str, b: str) -> bool:
    """Whether math-verify finds two extracted answers equal (a read as the gold). Runs inside a worker."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    parsed_a = parse(gold_latex(a), parsing_timeout=None)
    parsed_b = parse(gold_latex(b), parsing_timeout=None)
    return bool(parsed_a and parsed_b and verify(parsed_a, parsed_b, timeout_seconds=None))


def warm_up() -> None:
    """A worker's one-time set-up: math-verify builds its parsers on first use (0.1 s here, seconds
    on a loaded machine), which must not count against a completion's time limit."""
    verify_one("\\boxed{\\frac{1}{2}}", "0.5")


class MathVerifyReward(Reward):
    """1.0 when math-verify finds the completion's answer equal to the gold answer, else 0.0.

    `workers: 0` verifies in-process with math-verify's own SIGALRM limits (main thread only;
    no protection from inputs that ignore the alarm). Use it for debugging, not training.
    """

    def __init__(self, name: str | None = None, timeout_s: float = 2.0, workers: int = 2, correct: float = 1.0, wrong: float = 0.0):
        super().__init__(name)
        self.correct, self.wrong, self.workers = correct, wrong, workers
        self.timeout_s = timeout_s
        self.pool = TimeLimitedPool(workers, timeout_s, preload=["math_verify", "rlvr.rewards.math"], warm_up=warm_up) if workers else None

    def _run(self, fn, items: list[tuple[str, str]]) -> list[tuple[str, object]]:
        if self.pool is not None:
            return self.pool.map(fn, items)
        results = []
        for item in items:
            try:
                results.append(("ok", fn(*item)))
            except Exception as exc:  # a bad input is a zero reward with its reason, never a crash
                results.append(("error", f"{type(exc).__name__}: {exc}"[:200]))
        return results

    def same_answer(self, a: str, b: str) -> bool:
        """math-verify's verdict on two predictions (as `score` stores them), under the same time limit;
        a timeout or an error is "not the same"."""
        if a.strip() == b.strip():
            return True
        [(status, value)] = self._run(same_one, [(a, b)])
        return status == "ok" and bool(value)

    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts=None) -> list[Outcome]:
        todo = [i for i, g in enumerate(golds) if g is not None]
        outcomes = [Outcome(self.wrong, "missing", None, False)] * len(completions)
        results = self._run(verify_one, [(completions[i], golds[i]) for i in todo])
        for i, (status, value) in zip(todo, results, strict=True):
            if status != "ok":  # a dead worker is an error of this completion's check, like a raise
                outcomes[i] = Outcome(self.wrong, "error" if status == "died" else status, None, False)
                continue
            is_correct, prediction = value
            if prediction is None:
                outcomes[i] = Outcome(self.wrong, "unparsable", None, False)
            else:
                outcomes[i] = Outcome(
                    self.correct if is_correct else self.wrong, "correct" if is_correct else "wrong", prediction, is_correct
                )
        return outcomes
