"""pass@k, maj@k and mean@n (rlvr/evaluation/metrics.py) against brute force, crafted votes and degenerate models."""

import itertools
import math
import random

import pytest

from rlvr.evaluation.metrics import answer_classes, majority_index, pass_at_k, sample_metrics
from rlvr.rewards.math import MathVerifyReward


def string_same(a, b):
    return a.strip() == b.strip()


def brute_force_pass_at_k(row, k):
    """Share of all k-subsets of the samples that hold at least one correct one."""
    subsets = list(itertools.combinations(row, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("seed", range(5))
def test_pass_at_k_equals_enumeration_of_all_k_subsets(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    matrix = [[rng.random() < rng.random() for _ in range(n)] for _ in range(rng.randint(1, 8))]
    ks = range(1, n + 1)
    metrics = sample_metrics(matrix, [[None] * n for _ in matrix], ks, string_same)
    for k in ks:
        per_prompt = [brute_force_pass_at_k(row, k) for row in matrix]
        for row, expected in zip(matrix, per_prompt):
            assert abs(pass_at_k(n, sum(row), k) - expected) <= 1e-12
        assert abs(metrics[f"pass@{k}"] - sum(per_prompt) / len(per_prompt)) <= 1e-12
    assert abs(metrics[f"mean@{n}"] - metrics["pass@1"]) <= 1e-12


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float: the product form never builds it.
    assert pass_at_k(1000, 0, 500) == 0.0
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1000, 501, 500) == 1.0


@pytest.mark.parametrize("k, n", [(5, 4), (0, 4)])
def test_k_outside_1_to_n_is_refused_in_one_line(k, n):
    with pytest.raises(ValueError, match=f"k={k}") as info:
        sample_metrics([[True] * n, [False] * n], [["1"] * n, ["2"] * n], [k], string_same)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=f"k={k}, n={n}"):
        pass_at_k(n, 1, k)


@pytest.fixture(scope="module")
def math_verify():
    reward = MathVerifyReward(name="math_verify", timeout_s=30.0, workers=1)  # a verdict, never a timeout
    yield reward
    reward.pool.close()


def majority(predictions, same):
    """The majority answer (its class's first member), as maj@k votes; None only if none has an answer."""
    position = majority_index(answer_classes(predictions, same))
    return None if position is None else predictions[position]


def test_majority_counts_equivalent_answers_as_one(math_verify):
    # Three spellings of one half outvote two identical "1/3"; by strings "1/3" would win.
    predictions = ["1/3", "1/2", "1/3", "0.5", "\\frac{1}{2}"]
    assert majority(predictions, string_same) == "1/3"
    assert majority(predictions, math_verify.same_answer) == "1/2"
    assert answer_classes(predictions, math_verify.same_answer) == [0, 1, 0, 1, 1]
    correct = [[False, True, False, True, True]]
    metrics = sample_metrics(correct, [predictions], [5], math_verify.same_answer)
    assert metrics["maj@5"] == 1.0
    assert sample_metrics(correct, [predictions], [5], string_same)["maj@5"] == 0.0


def test_majority_ties_go_to_the_class_seen_first():
    assert majority(["7", "3", "3", "7"], string_same) == "7"
    assert majority(["3", "7", "7", "3"], string_same) == "3"
    assert majority([None, None, "4", "5"], string_same) == "4"  # no answer never wins
    assert majority([None, None], string_same) is None
    # Tie in a vote of all n: the first class's correctness decides, whatever the seed.
    for seed in range(3):
        assert sample_metrics([[True, False, False, True]], [["7", "3", "3", "7"]], [4], string_same, seed=seed)["maj@4"] == 1.0
        assert sample_metrics([[False, True, True, False]], [["7", "3", "3", "7"]], [4], string_same, seed=seed)["maj@4"] == 0.0


def test_maj_at_k_below_n_is_the_mean_vote_over_all_k_subsets():
    # n=4, k=3, samples a b a b ("a" correct): the 4 subsets vote
    # a,b,a -> a; a,b,b -> b; a,a,b -> a; b,a,b -> b: maj@3 = 2/4. maj@4 is a 2-2 tie, "a" came first.
    metrics = sample_metrics([[True, False, True, False]], [["a", "b", "a", "b"]], [3, 4], string_same)
    assert metrics["maj@3"] == 0.5
    assert metrics["maj@4"] == 1.0


def test_maj_at_k_with_many_subsets_is_seeded():
    rng = random.Random(0)
    predictions = [[rng.choice("abc") for _ in range(16)] for _ in range(6)]
    correct = [[p == "a" for p in row] for row in predictions]
    first = sample_metrics(correct, predictions, [8], string_same, seed=1, resamples=50)
    assert first == sample_metrics(correct, predictions, [8], string_same, seed=1, resamples=50)
    assert first["maj@8_ci_low"] <= first["maj@8"] <= first["maj@8_ci_high"]


def metrics_of(all_correct: bool):
    n, ks = 4, [1, 2, 4]
    correct = [[all_correct] * n for _ in range(5)]
    predictions = [[str(i)] * n for i in range(5)]
    return sample_metrics(correct, predictions, ks, string_same, seed=3)


@pytest.mark.parametrize("all_correct", [True, False])
def test_every_metric_of_an_all_correct_and_an_all_wrong_model(all_correct):
    metrics = metrics_of(all_correct)
    value = 1.0 if all_correct else 0.0
    assert set(metrics) == {"mean@4", "mean@4_se"} | {f"pass@{k}{s}" for k in (1, 2, 4) for s in ("", "_se")} | {
        f"maj@{k}{s}" for k in (1, 2, 4) for s in ("", "_ci_low", "_ci_high")
    }
    for name, number in metrics.items():
        assert number == (0.0 if name.endswith("_se") else value), name


def test_maj_at_k_is_left_out_when_correct_samples_carry_no_answer_to_vote_on():
    """Span rewards judge correctness but extract no answer: maj@k would read 0 beside pass@1 = 0.5."""
    correct = [[True, False], [False, True]]
    metrics = sample_metrics(correct, [[None, None], [None, None]], [1, 2], string_same)
    assert metrics["pass@1"] == 0.5 and not any(name.startswith("maj@") for name in metrics)
    no_answer_is_wrong = sample_metrics([[False, False]], [[None, None]], [2], string_same)  # a model that never answers
    assert no_answer_is_wrong["maj@2"] == 0.0


def test_standard_error_is_over_prompts():
    correct = [[True, True], [False, False], [True, False]]
    metrics = sample_metrics(correct, [["x", "x"]] * 3, [1], string_same)
    per_prompt = [1.0, 0.0, 0.5]
    mean = sum(per_prompt) / 3
    se = math.sqrt(sum((v - mean) ** 2 for v in per_prompt) / 2 / 3)
    assert metrics["mean@2"] == pytest.approx(mean) and metrics["mean@2_se"] == pytest.approx(se)
    assert math.isnan(sample_metrics([[True, False]], [["x", "y"]], [1], string_same)["mean@2_se"])
