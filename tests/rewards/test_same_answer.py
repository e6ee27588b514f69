"""`same_answer` of each reward: which predictions maj@k counts as one answer."""

import json
import time

import pytest

from rlvr.data import builtin_data_path
from rlvr.rewards.format import ThinkFormatReward
from rlvr.rewards.math import MathVerifyReward
from rlvr.rewards.numeric import FinalLineReward, LastNumberReward

MATH500 = [json.loads(line) for line in open(builtin_data_path("math500/test.jsonl"), encoding="utf-8")][:100]


def test_default_is_the_stripped_string():
    reward = ThinkFormatReward(name="fmt")
    assert reward.same_answer(" yes\n", "yes")
    assert not reward.same_answer("yes", "Yes")


@pytest.mark.parametrize("cls", [LastNumberReward, FinalLineReward])
def test_numeric_rewards_compare_normalised_numbers(cls):
    reward = cls(name="num")
    assert reward.same_answer("1,000", "1000.0") and reward.same_answer("$1000", "1000")
    assert reward.same_answer("-0.50", "-0.5") and reward.same_answer("0012", "12")
    assert not reward.same_answer("12", "13")
    assert reward.same_answer("12 apples", "12 apples") and not reward.same_answer("12 apples", "12")


@pytest.fixture(scope="module")
def math_verify():
    reward = MathVerifyReward(name="math_verify", timeout_s=30.0, workers=1)  # a verdict, never a timeout, on a loaded machine
    yield reward
    reward.pool.close()


def test_math_verify_predictions_compare_by_value(math_verify):
    for a, b in [("1/2", "0.5"), ("0.5", "\\frac{1}{2}"), ("\\frac{1}{2}", "1/2"), ("(1,2)", "(1, 2)"), ("x=5", "5")]:
        assert math_verify.same_answer(a, b), (a, b)
    for a, b in [("1/2", "1/3"), ("(1,2)", "(2,1)"), ("\\{1,2\\}", "\\{1,3\\}")]:
        assert not math_verify.same_answer(a, b), (a, b)


def test_math_verify_predictions_parse_back_to_their_gold(math_verify):
    # What `score` stores as prediction is math-verify's extracted answer text, and reads back as that answer.
    outcomes = math_verify.score([r["solution"] for r in MATH500], [r["answer"] for r in MATH500])
    assert all(o.correct for o in outcomes)
    assert all(math_verify.same_answer(o.prediction, r["answer"]) for o, r in zip(outcomes, MATH500))
    others = [math_verify.same_answer(o.prediction, MATH500[(i + 1) % len(MATH500)]["answer"]) for i, o in enumerate(outcomes)]
    assert sum(others) <= 1


def test_math_verify_timeout_is_not_the_same():
    reward = MathVerifyReward(name="math_verify", timeout_s=1.0, workers=1)
    try:
        started = time.perf_counter()
        assert not reward.same_answer("9^{9^{9^{9}}}", "1")
        assert time.perf_counter() - started <= 15  # the limit, the worker's first start, a loaded machine: not the hours 9^9^9^9 takes
    finally:
        reward.pool.close()


def test_math_verify_in_process_error_is_not_the_same(monkeypatch):
    reward = MathVerifyReward(name="math_verify", workers=0)
    assert reward.same_answer("1/2", "0.5")

    def broken(a, b):
        raise RuntimeError("sympy fell over")

    monkeypatch.setattr("rlvr.rewards.math.same_one", broken)
    assert not reward.same_answer("1/2", "0.5")
