"""The built-in offline task: "a+b=" with the sum as the answer.

Small enough that a ~100k-parameter model learns it in minutes on a CPU, structured enough that
a reward curve means something: an answer is right or wrong, and the policy starts from ~25%.
"""

from __future__ import annotations

import random


def generate(num_train: int = 2000, num_eval: int = 100, max_operand: int = 9, seed: int = 0) -> dict[str, list[dict]]:
    """Train and eval rows with `question` ("3+5=") and `answer` ("8"), drawn uniformly with replacement."""
    if max_operand < 1 or num_train < 1:
        raise ValueError("arithmetic generator needs max_operand >= 1 and num_train >= 1")
    rng = random.Random(seed)

    def rows(n: int) -> list[dict]:
        pairs = [(rng.randint(0, max_operand), rng.randint(0, max_operand)) for _ in range(n)]
        return [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs]

    return {"train": rows(num_train), "test": rows(num_eval)}


def generate_preferences(num_train: int = 2000, num_eval: int = 200, max_operand: int = 9, seed: int = 0) -> dict[str, list[dict]]:
    """Preference pairs for the built-in reward-model task: the right sum is preferred to a wrong one."""
    rng = random.Random(seed)

    def rows(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
            wrong = rng.choice([s for s in range(2 * max_operand + 1) if s != a + b])
            out.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(wrong)})
        return out

    return {"train": rows(num_train), "test": rows(num_eval)}
