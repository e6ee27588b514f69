"""GSM8K-style numeric answers: linear-time regexes on bounded windows, so no time limit is needed."""

from __future__ import annotations

from typing import Sequence

from rlvr.rewards.answers import FINAL_LINE, gold_answer, last_line, last_number, normalize_number
from rlvr.rewards.base import Outcome, Reward


def _matches(prediction: str, gold: str | None) -> bool:
    expected = normalize_number(gold) if gold is not None else None
    return expected is not None and normalize_number(prediction) == expected


class NumberReward(Reward):
    """A reward whose predictions are numbers as written: "1,000", "1000.0" and "$1000" are one answer."""

    def reads_gold(self, raw: str) -> bool:
        """Whether a gold answer cell is one this reward can match (a number): else every completion scores wrong."""
        return normalize_number(gold_answer(raw) or "") is not None

    def same_answer(self, a: str, b: str) -> bool:
        number_a = normalize_number(a)
        return number_a == normalize_number(b) if number_a is not None else a.strip() == b.strip()


class LastNumberReward(NumberReward):
    """Flexible: the last number anywhere in the completion must equal the gold answer."""

    def __init__(self, name: str | None = None, correct: float = 1.0, wrong: float = 0.0):
        super().__init__(name)
        self.correct, self.wrong = correct, wrong

    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts=None) -> list[Outcome]:
        outcomes = []
        for text, gold in zip(completions, golds, strict=True):
            prediction = last_number(text)
            if prediction is None:
                outcomes.append(Outcome(self.wrong, "missing", None, False))
            elif _matches(prediction, gold):
                outcomes.append(Outcome(self.correct, "correct", prediction, True))
            else:
                outcomes.append(Outcome(self.wrong, "wrong", prediction, False))
        return outcomes


class FinalLineReward(NumberReward):
    """Strict: the last non-empty line must read 'Final: <number>'."""

    def __init__(self, name: str | None = None, correct: float = 1.0, wrong: float = 0.1, missing: float = 0.0):
        super().__init__(name)
        self.correct, self.wrong, self.missing = correct, wrong, missing

    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts=None) -> list[Outcome]:
        outcomes = []
        for text, gold in zip(completions, golds, strict=True):
            line = last_line(text)  # the whole text: a last line may be longer than any window of the end
            match = FINAL_LINE.match(line.group()) if line else None
            if match is None:
                outcomes.append(Outcome(self.missing, "missing", None, False))
                continue
            value = match.group("value")
            if normalize_number(value) is None:
                outcomes.append(Outcome(self.missing, "unparsable", value, False))
            elif _matches(value, gold):
                outcomes.append(Outcome(self.correct, "correct", value, True))
            else:
                outcomes.append(Outcome(self.wrong, "wrong", value, False))
        return outcomes
