"""Correct programs as models write them score 1: values of built-in subclasses, a main block, big
ints, tests that print; as HumanEval's own harness scores them."""

import pytest

from rlvr.rewards.code import CodeTestsReward


@pytest.fixture(scope="module")
def reward():
    return CodeTestsReward(name="code", workers=2, timeout_s=10, cpu_s=5)


def score(reward, program, tests, entry_point):
    [value] = reward(completions=[program], answer=[tests], entry_point=[entry_point], code_prelude=[""])
    return value, reward.last_outcomes[0]


CASES = {
    "a Counter": ("from collections import Counter\ndef f(s):\n    return Counter(s)\n", "assert f('aab') == {'a': 2, 'b': 1}\n"),
    "a defaultdict": (
        "from collections import defaultdict\ndef f(s):\n    d = defaultdict(int)\n    for c in s:\n        d[c] += 1\n    return d\n",
        "assert f('aab') == {'a': 2, 'b': 1}\n",
    ),
    "a namedtuple": (
        "from collections import namedtuple\nP = namedtuple('P', 'x y')\ndef f(s):\n    return P(1, 2)\n",
        "assert f('') == (1, 2)\n",
    ),
    "a str subclass": ("class S(str):\n    pass\ndef f(s):\n    return S(s.upper())\n", "assert f('ab') == 'AB'\n"),
    "an IntEnum": ("import enum\nclass E(enum.IntEnum):\n    A = 3\ndef f(s):\n    return E.A\n", "assert f('') == 3\n"),
    "a main block reading input": (
        "def f(s):\n    return s * 2\n\nif __name__ == '__main__':\n    print(f(input()))\n",
        "assert f('a') == 'aa'\n",
    ),
    "an int of 5,000 digits": ("def f(s):\n    return 10 ** 5000\n", "assert f('') == 10 ** 5000\n"),
    "tests that print without a newline": ("def f(s):\n    return s\n", "import sys\nsys.stdout.write('.')\nassert f('a') == 'a'\n"),
    "tests that print 100 KB": ("def f(s):\n    return s\n", "print('x' * 100_000)\nassert f('a') == 'a'\n"),
    "an exception the tests expect": (
        "def f(s):\n    if not s:\n        raise ValueError('empty')\n    return s\n",
        "try:\n    f('')\n    raised = False\nexcept ValueError:\n    raised = True\nassert raised\nassert f('a') == 'a'\n",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_correct_program_scores_one(reward, case):
    program, tests = CASES[case]
    value, outcome = score(reward, program, tests, "f")
    assert value == 1.0 and outcome.correct, outcome


def test_a_subclass_that_overrides_equality_is_compared_by_its_built_in_value(reward):
    """An int subclass equal to everything crosses as the int it holds: no reward hack."""
    program = "class Anything(int):\n    def __eq__(self, other):\n        return True\ndef f(s):\n    return Anything(0)\n"
    value, outcome = score(reward, program, "assert f('') == 3\n", "f")
    assert value == 0.0 and not outcome.correct


def test_tests_that_judge_nothing_are_an_error_not_a_wrong_program(reward):
    value, outcome = score(reward, "def f(s):\n    return s\n", "x = 1\n", "f")
    assert (value, outcome.reason, outcome.prediction) == (0.0, "error", "the tests ran no assert (no assert, no check function)")


@pytest.mark.parametrize(
    "tests, entry_point, message",
    [
        (["assert f(1) == 1"], "f", "row 0's tests are a list, not Python source (join a list of asserts into one string)"),
        ("assert f(1) == 1\n", None, "row 0's entry_point None is not a function name"),
    ],
)
def test_rows_the_reward_cannot_run_are_one_line(reward, tests, entry_point, message):
    from rlvr.errors import DataError

    with pytest.raises(DataError) as info:
        reward(completions=["def f(x):\n    return x\n"], answer=[tests], entry_point=[entry_point], code_prelude=[""])
    assert str(info.value) == f"reward 'code': {message}"
