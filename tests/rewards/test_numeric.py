"""GSM8K strict/flexible rewards on real GSM8K solutions (tests/data/gsm8k_test_300.jsonl)."""

import json
import re
from pathlib import Path

import pytest

from rlvr.rewards.answers import gold_answer, last_number, normalize_number
from rlvr.rewards.numeric import FinalLineReward, LastNumberReward

ROWS = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "gsm8k_test_300.jsonl").open()]


def test_gold_answer_extracts_every_gsm8k_number():
    for row in ROWS:
        written = row["answer"].split("####")[-1].strip()
        assert gold_answer(row["answer"]) == written  # as written: commas are the verifier's to read
        assert normalize_number(written) == normalize_number(written.replace(",", "")) is not None, written


def test_flexible_scores_every_gold_solution_correct():
    reward = LastNumberReward(name="flex")
    values = reward(completions=[r["answer"] for r in ROWS], answer=[r["answer"] for r in ROWS])
    assert values == [1.0] * len(ROWS)


def test_strict_scores_every_final_line_correct_and_wrong_numbers_0_1():
    completions = [re.sub(r"####\s*(.+)$", r"Final: \1", r["answer"]) for r in ROWS]
    reward = FinalLineReward(name="strict")
    assert reward(completions=completions, answer=[r["answer"] for r in ROWS]) == [1.0] * len(ROWS)
    shifted = [ROWS[(i + 1) % len(ROWS)]["answer"] for i in range(len(ROWS))]
    expected = [1.0 if gold_answer(a) == gold_answer(b["answer"]) else 0.1 for a, b in zip(shifted, ROWS)]
    assert reward(completions=completions, answer=shifted) == expected


@pytest.mark.parametrize(
    ("completion", "reward", "reason"),
    [
        ("steps\nFinal: 42", 1.0, "correct"),
        ("steps\nFinal: 42.0\n\n", 1.0, "correct"),
        ("Final: 1,042", 0.1, "wrong"),
        ("Final: 42\nmore text after", 0.0, "missing"),
        ("the answer is 42", 0.0, "missing"),
        ("Final: forty-two", 0.0, "unparsable"),
        ("", 0.0, "missing"),
        ("Final: 4,2", 0.0, "unparsable"),  # a comma that groups no thousands: it was read as 42
    ],
)
def test_strict_cases(completion, reward, reason):
    scorer = FinalLineReward()
    [outcome] = scorer.score([completion], ["42"])
    assert (outcome.reward, outcome.reason) == (reward, reason)


def test_a_chat_completion_is_read_from_its_text_whether_a_string_or_parts():
    """Content as parts (the multimodal message form) was read as the list's repr: 'missing', reward 0."""
    parts = [{"type": "text", "text": "steps\n"}, {"type": "image"}, {"type": "text", "text": "Final: 42"}]
    chats = [[{"role": "assistant", "content": content}] for content in ("steps\nFinal: 42", parts)]
    assert FinalLineReward()(completions=chats, answer=["42", "42"]) == [1.0, 1.0]


@pytest.mark.parametrize("written", ["Final: \uff14\uff12", "The answer is \u0664\u0662", "Final: \u096a\u0968.0"])
def test_digits_of_other_scripts_are_read_as_the_digits_they_are(written):
    """Full-width, Arabic-Indic and Devanagari 42 were extracted as numbers (`\\d` finds them) but judged wrong against 42."""
    assert FinalLineReward()(completions=[written], answer=["42"]) == ([1.0] if written.startswith("Final") else [0.0])
    assert LastNumberReward()(completions=[written], answer=["42"]) == [1.0]


def test_flexible_cases_and_numbers():
    scorer = LastNumberReward()
    outcomes = scorer.score(["so 3 + 4 = 7", "no digits", "x = -2.50", "1,000 apples"], ["7", "7", "-2.5", "1000"])
    assert [o.reward for o in outcomes] == [1.0, 0.0, 1.0, 1.0]
    assert outcomes[1].reason == "missing"
    assert last_number("a 12 b 0.5.") == "0.5"
    assert normalize_number("$1,000.50") == "1000.5" and normalize_number("007") == "7"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("answer 12345" + "x" * 4094, "12345"),  # a window of the last 4096 characters read "45"
        ("answer 12,345" + "x" * 4090, "12,345"),
        ("The answer is 42." + "y" * 5000, "42"),  # beyond that window: none
        ("1 " * 3000 + "7", "7"),
        ("no number" + " " * 20000, None),
    ],
    ids=["cut", "cut-thousands", "beyond", "many", "none"],
)
def test_the_last_number_of_a_long_completion_is_read_whole_wherever_it_stands(text, number):
    assert last_number(text) == number


def test_the_strict_final_line_is_the_whole_last_line_however_long():
    """A window of the last 512 characters cut "…Not Final: 7" to "Final: 7": correct, 1.0."""
    [outcome] = FinalLineReward().score(["q" * 1000 + "Not Final: 7" + " " * 504], ["7"])
    assert outcome.reason == "missing"
    [outcome] = FinalLineReward().score(["q" * 1000 + "\nFinal: 7" + " " * 504], ["7"])
    assert outcome.reason == "correct"


def test_a_comma_groups_thousands_only():
    """Every comma was dropped: "the list is 1,2,3" read as 123, "Final: 1,8" as 18."""
    [listed] = LastNumberReward().score(["the list is 1,2,3"], ["123"])
    assert (listed.reward, listed.prediction) == (0.0, "3")
    assert [normalize_number(t) for t in ("1,000", "-12,345,678.5", "1,8", "1,0000", "12,34")] == ["1000", "-12345678.5", None, None, None]
    assert [last_number(t) for t in ("pay 1,000 now", "a -1,234.5 b", "1,2,3")] == ["1,000", "-1,234.5", "3"]


def test_a_run_of_more_digits_than_a_number_holds_is_no_number():
    """Its last digits were read as a number: '10000000000000000000000000000004' scored correct for gold 4."""
    long_run = "1" + "0" * 30 + "4"
    [outcome] = LastNumberReward().score([f"the result is {long_run}"], ["4"])
    assert (outcome.reward, outcome.reason) == (0.0, "missing")
    assert [last_number(t) for t in (long_run, f"{long_run} so 7", "9" * 31)] == [None, "7", "9" * 31]
    # nor is its fractional part, nor a decimal cut at 20 places (read as 4, it scored correct for gold 4)
    twenty_places = "4." + "0" * 19 + "1"
    assert [last_number(t) for t in (f"{long_run}.5", "4." + "0" * 20 + "1", f"{twenty_places} m")] == [None, None, twenty_places]


def test_a_reward_without_gold_column_says_so():
    from rlvr.errors import ConfigError

    with pytest.raises(ConfigError, match="needs an 'answer' column"):
        LastNumberReward(name="flex")(completions=["1"])


@pytest.mark.parametrize(
    ("completion", "gold", "prediction", "correct"),
    [
        ("1/3 = 0.3333333333333333", "0.3333333333333333", "0.3333333333333333", True),  # was read as 3333
        ("0.1+0.2 = 0.30000000000000004", "0.30000000000000004", "0.30000000000000004", True),
        ("The temperature drops to \u22125 degrees.", "5", "\u22125", False),  # U+2212: was read as 5
        ("The temperature drops to \u22125 degrees.", "-5", "\u22125", True),
        ("It takes 3-5 days", "5", "5", True),  # was read as -5
        ("The answer is 1000.", "1e3", "1000", True),  # a JSON gold written 1e3 (kept as written)
    ],
)
def test_flexible_reads_numbers_as_written(completion, gold, prediction, correct):
    [outcome] = LastNumberReward().score([completion], [gold])
    assert (outcome.prediction, outcome.correct) == (prediction, correct)


def test_golds_a_numeric_reward_cannot_read_are_counted_in_a_warning(caplog):
    """MATH-500's golds under the default numeric reward: every completion of '\\frac{1}{2}' scored wrong, silently."""
    from rlvr.rewards.base import WeightedReward
    from rlvr.rewards.checks import warn_unreadable_golds

    golds = ["#### 1,200", "\\frac{1}{2}", "12", "five", "1e3"]
    rewards = [WeightedReward("flex", LastNumberReward(name="flex"), 1.0)]
    warn_unreadable_golds(rewards, golds, "the train data")
    assert caplog.messages == [
        "2 of the 5 gold answers of the train data (e.g. '\\\\frac{1}{2}') are not numbers, which reward 'flex' reads: "
        "it scores every completion of their prompts wrong (a math reward reads them: reward=math_verify)"
    ]
