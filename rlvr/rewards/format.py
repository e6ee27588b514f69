"""Format rewards: judge the shape of a completion, not its correctness."""

from __future__ import annotations

import re
from typing import Sequence

from rlvr.rewards.base import Outcome, Reward

THINK_THEN_ANSWER = re.compile(r"^\s*<think>(?:(?!</?think>).)*</think>\s*(?P<answer>\S.*)$", re.DOTALL)


class ThinkFormatReward(Reward):
    """1.0 for '<think>...</think>' (one segment) followed by a non-empty answer, else 0.0."""

    needs_gold = False

    def __init__(self, name: str | None = None, reward: float = 1.0):
        super().__init__(name)
        self.reward = reward

    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts=None) -> list[Outcome]:
        outcomes = []
        for text in completions:
            if "<think>" not in text:
                outcomes.append(Outcome(0.0, "missing"))
            elif (match := THINK_THEN_ANSWER.match(text)) and "think>" not in match.group("answer"):
                outcomes.append(Outcome(self.reward, "ok"))
            else:
                outcomes.append(Outcome(0.0, "unparsable"))
        return outcomes
