"""math_verify on MATH-500 gold solutions, and hostile completions under the hard time limit."""

import json
import time

import pytest

from rlvr.data import builtin_data_path
from rlvr.rewards.math import MathVerifyReward
from rlvr.rewards.sandbox import TimeLimitedPool

ROWS = [json.loads(line) for line in open(builtin_data_path("math500/test.jsonl"), encoding="utf-8")]
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def verifier():
    """The time limit under test: adversarial inputs must end within it. Its workers are started
    first, so that the timed calls measure the limit, not the pool's start-up."""
    reward = MathVerifyReward(name="math_verify", timeout_s=TIMEOUT_S, workers=2)
    reward.score(["\\boxed{1}", "\\boxed{2}"], ["1", "2"])
    yield reward
    reward.pool.close()


@pytest.fixture(scope="module")
def judge():
    """For what math-verify decides: a limit no honest check nears even on a loaded machine, so a
    verdict is never a timeout (a 1 s limit flipped answers when test processes ran side by side)."""
    reward = MathVerifyReward(name="math_verify", timeout_s=30.0, workers=2)
    yield reward
    reward.pool.close()


def test_gold_solutions_verify_against_their_answers(judge):
    outcomes = judge.score([r["solution"] for r in ROWS], [r["answer"] for r in ROWS])
    rate = sum(o.reward == 1.0 for o in outcomes) / len(ROWS)
    print(f"MATH-500 gold solution vs own answer: {rate:.4f} scored 1.0")
    assert rate >= 0.99


def test_solutions_paired_with_another_answer_score_zero(judge):
    # Pair each solution with the next problem whose answer differs as text.
    others = []
    for i, row in enumerate(ROWS):
        j = (i + 1) % len(ROWS)
        while ROWS[j]["answer"].strip() == row["answer"].strip():
            j = (j + 1) % len(ROWS)
        others.append(ROWS[j]["answer"])
    outcomes = judge.score([r["solution"] for r in ROWS], others)
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
    assert elapsed <= TIMEOUT_S + 5  # the limit, plus room for a loaded machine
    assert outcome.reward == 0.0
    assert outcome.reason in {"timeout", "unparsable", "error", "wrong"}


def test_timeouts_are_counted_in_logged_metrics(verifier):
    logged = {}
    rewards = verifier(
        completions=[ADVERSARIAL["power tower"], "\\boxed{2}"], answer=["1", "2"], log_metric=lambda k, v: logged.__setitem__(k, v)
    )
    assert rewards == [0.0, 1.0]
    assert logged["rewards/math_verify/timeout_frac"] == 0.5
    assert {"rewards/math_verify/unparsable_frac", "rewards/math_verify/error_frac"} <= set(logged)


def test_pool_survives_a_killed_worker(verifier):
    verifier.score([ADVERSARIAL["power tower"]] * 3, ["1"] * 3)
    [outcome] = verifier.score(["so \\boxed{\\frac{1}{2}}"], ["0.5"])
    assert outcome.correct is True


WARMED_UP = []  # in a worker process: set by its warm-up


def slow_warm_up():
    time.sleep(4)
    WARMED_UP.append(True)


def warmed_up(text: str) -> tuple[int, bool]:
    return len(text), bool(WARMED_UP)


def test_a_workers_warm_up_runs_before_its_tasks_and_outside_their_time_limit():
    # A replacement worker's one-time set-up once spent its first honest task's limit (a correct
    # answer scored "timeout" on a loaded machine).
    pool = TimeLimitedPool(1, timeout_s=2.0, warm_up=slow_warm_up)
    try:
        assert pool.map(warmed_up, [("abc",)]) == [("ok", (3, True))]
    finally:
        pool.close()


# A completion that boxes exactly the gold answer, as a model trained on MATH would write it.
def boxed(answer: str) -> str:
    return f"So the final answer is $\\boxed{{{answer}}}$."


def test_every_math500_answer_boxed_scores_one(judge):
    rewards = judge(completions=[boxed(r["answer"]) for r in ROWS], answer=[r["answer"] for r in ROWS])
    missed = [ROWS[i]["answer"] for i, reward in enumerate(rewards) if reward != 1.0]
    assert missed == []  # 500/500; the comma-stripping gold scored 476 (every tuple, interval and set lost)


def test_boxed_answers_paired_with_another_problems_answer_score_zero_unless_math_verify_equates_them(judge):
    """The reference is math-verify called as its README shows, in this process: verify(parse(gold), parse(answer))."""
    from math_verify import parse, verify

    others = [ROWS[(i + 1) % len(ROWS)]["answer"] for i in range(len(ROWS))]
    completions = [boxed(r["answer"]) for r in ROWS]
    rewards = judge(completions=completions, answer=others)
    reference = [bool(verify(parse(f"${gold}$"), parse(c))) for gold, c in zip(others, completions)]
    assert [reward == 1.0 for reward in rewards] == reference
    assert sum(reference) <= 3  # same-valued answers of different problems, e.g. two problems answering 2


@pytest.mark.parametrize(
    ("gold", "completion", "correct"),
    [
        ("(-2,1)", "\\boxed{(-2,1)}", True),  # tuple / open interval
        ("(1,2)", "\\boxed{12}", False),  # was read as 12 once its comma was stripped
        ("(3,4]", "\\boxed{(3,4]}", True),  # half-open interval
        ("(-\\infty, 0]", "\\boxed{(-\\infty,0]}", True),
        ("(-\\infty, 2) \\cup (3, \\infty)", "\\boxed{(-\\infty,2)\\cup(3,\\infty)}", True),
        ("3, 5, 7", "\\boxed{7, 5, 3}", True),  # a list of solutions, any order
        ("3, 5, 7", "\\boxed{357}", False),
        ("\\{1\\pm\\sqrt{5},-2\\}", "\\boxed{\\{-2, 1+\\sqrt5, 1-\\sqrt5\\}}", True),  # a set
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\frac{\\pi}{2})}", True),
        ("25\\%", "\\boxed{25}", True),  # percent: math-verify accepts the bare number
        ("25\\%", "\\boxed{26}", False),
        ("5.4 \\text{ cents}", "\\boxed{5.4}", True),  # units
        ("\\frac{270}7\\text{ degrees}", "\\boxed{\\frac{270}{7}}", True),
        ("90^\\circ", "\\boxed{90}", True),
        ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", True),  # \text{} answers
        ("\\text{(C)}", "\\boxed{C}", True),
        ("\\text{(C)}", "\\boxed{B}", False),
        ("10,\\!080", "\\boxed{10080}", True),  # thousands separators
        ("10,\\!080", "\\boxed{10,080}", True),
        ("11,\\! 111,\\! 111,\\! 100", "\\boxed{11111111100}", True),
        ("\\$32,\\!348", "\\boxed{32348}", True),
        ("1,234", "\\boxed{1234}", True),  # a GSM8K gold after '####'
        ("#### 1,234", "The answer is 1234", True),
        ("1e3", "\\boxed{1000}", True),  # a float gold as JSON writes it: math-verify read 1e3 as 1·e³
        ("1e-05", "\\boxed{0.00001}", True),
        ("2.5e-1", "\\boxed{0.25}", True),
        ("1e+16", "\\boxed{10000000000000000}", True),
        ("1e3", "\\boxed{999}", False),
    ],
)
def test_named_answer_forms(judge, gold, completion, correct):
    judge(completions=[completion], answer=[gold])
    [outcome] = judge.last_outcomes
    assert outcome.correct is correct, (gold, completion, outcome)


def test_a_worked_solution_as_gold_is_parsed_as_it_is(judge):
    """TRL's `solution` column style: the whole solution text, its last \\boxed{} the answer."""
    rows = ROWS[:40]
    assert judge(completions=[boxed(r["answer"]) for r in rows], answer=[r["solution"] for r in rows]) == [1.0] * 40


def test_agreement_with_trls_accuracy_reward(judge):
    """The comparison in docs/performance.md: TRL's accuracy_reward given the gold as $gold$, on boxed own and other answers."""
    from trl.rewards import accuracy_reward

    golds = [r["answer"] for r in ROWS]
    others = [golds[(i + 1) % len(golds)] for i in range(len(golds))]
    completions = [boxed(g) for g in golds] * 2
    answers = golds + others
    ours = judge(completions=completions, answer=answers)
    theirs = accuracy_reward([[{"role": "assistant", "content": c}] for c in completions], [f"${a}$" for a in answers])
    differ = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    print(
        f"rlvr math_verify vs TRL accuracy_reward: agree on {len(ours) - len(differ)}/{len(ours)}; differ on "
        f"{[(answers[i], ours[i], theirs[i]) for i in differ]}"
    )
    # Only exact golds that TRL's extraction cannot read (shorthand such as \frac43), at most 2%.
    assert all(i < len(golds) and (ours[i], theirs[i]) == (1.0, 0.0) for i in differ)
    assert len(differ) <= 10
