"""math_verify on MATH-500 gold solutions, and hostile completions under the hard time limit."""

import json
import time

import pytest

from rlvr.data import builtin_data_path
from rlvr.rewards.math import MathVerifyReward

ROWS = [json.loads(line) for line in open(builtin_data_path("math500/test.jsonl"), encoding="utf-8")]
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def verifier():
    reward = MathVerifyReward(name="math_verify", timeout_s=TIMEOUT_S, workers=2)
    yield reward
    reward.pool.close()


def test_gold_solutions_verify_against_their_answers(verifier):
    outcomes = verifier.score([r["solution"] for r in ROWS], [r["answer"] for r in ROWS])
    rate = sum(o.reward == 1.0 for o in outcomes) / len(ROWS)
    print(f"MATH-500 gold solution vs own answer: {rate:.4f} scored 1.0")
    assert rate >= 0.99


def test_solutions_paired_with_another_answer_score_zero(verifier):
    # Pair each solution with the next problem whose answer differs as text.
    others = []
    for i, row in enumerate(ROWS):
        j = (i + 1) % len(ROWS)
        while ROWS[j]["answer"].strip() == row["answer"].strip():
            j = (j + 1) % len(ROWS)
        others.append(ROWS[j]["answer"])
    outcomes = verifier.score([r["solution"] for r in ROWS], others)
    false_positives = [(ROWS[i]["answer"], others[i]) for i, o in enumerate(outcomes) if o.reward != 0.0]
    print(f"MATH-500 solution vs another answer: {len(false_positives)}/{len(ROWS)} scored 1.0: {false_positives}")
    assert len(false_positives) / len(ROWS) <= 0.01


ADVERSARIAL = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "10k nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "1 MB string": "\\boxed{" + "1+" * 500_000 + "1}",
    "invalid surrogates": "\\boxed{\ud800\udfff\ud800}",
    "huge factorial": "\\boxed{100000000!}",
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_completion_returns_zero_within_the_limit(verifier, name):
    started = time.perf_counter()
    [outcome] = verifier.score([ADVERSARIAL[name]], ["1"])
    elapsed = time.perf_counter() - started
    print(f"{name}: {elapsed:.2f}s reason={outcome.reason}")
    assert elapsed <= TIMEOUT_S + 0.5
    assert outcome.reward == 0.0
    assert outcome.reason in {"timeout", "unparsable", "error", "wrong"}


def test_timeouts_are_counted_in_logged_metrics(verifier):
    logged = {}
    rewards = verifier(completions=[ADVERSARIAL["power tower"], "\\boxed{2}"], answer=["1", "2"],
                       log_metric=lambda k, v: logged.__setitem__(k, v))
    assert rewards == [0.0, 1.0]
    assert logged["rewards/math_verify/timeout_frac"] == 0.5
    assert {"rewards/math_verify/unparsable_frac", "rewards/math_verify/error_frac"} <= set(logged)


def test_pool_survives_a_killed_worker(verifier):
    verifier.score([ADVERSARIAL["power tower"]] * 3, ["1"] * 3)
    [outcome] = verifier.score(["so \\boxed{\\frac{1}{2}}"], ["0.5"])
    assert outcome.correct is True
