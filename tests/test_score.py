"""rlvr.score's rows and summary, as training reads the same file."""

import json
import os
import re
import stat

import pytest

from rlvr.errors import DataError
from rlvr.score import read_rows, score_rows, summary, write_rows


def write(tmp_path, lines: list[str]):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_numeric_gold_answers_are_the_files_text_as_in_training(tmp_path):
    path = write(
        tmp_path,
        [
            json.dumps({"completion": "c", "answer": 12}),
            '{"completion": "c", "answer": 2.50}',
            '{"completion": "c", "answer": 12345678901234567890}',
        ],
    )
    assert [row["answer"] for row in read_rows(path, "completion")] == ["12", "2.50", "12345678901234567890"]


def test_a_gold_that_is_nan_or_infinity_is_scored_as_a_gold_no_reward_reads(tmp_path):
    """JSON's NaN and Infinity literals: scoring stopped with a JSONDecodeError traceback."""
    from rlvr.rewards import build_rewards

    path = write(tmp_path, ['{"completion": "Final: 1", "answer": NaN}', '{"completion": "Final: 1", "answer": -Infinity}'])
    rows = read_rows(path, "completion")
    strict = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}})
    assert [row["reasons"]["strict"] for row in score_rows(rows, strict, "completion", "answer")] == ["wrong", "wrong"]


def test_a_file_starting_with_a_byte_order_mark_is_read_as_training_reads_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"completion": "c", "answer": "1"}\n{"completion": "d", "answer": "2"}\n', encoding="utf-8-sig")
    assert [row["completion"] for row in read_rows(path, "completion")] == ["c", "d"]


def test_a_gold_that_is_a_list_is_refused_naming_its_line(tmp_path):
    """It was named by its 0-based row ("row 1" for the file's line 2) as the reward reported it."""
    path = write(tmp_path, ['{"completion": "c", "answer": "1"}', '{"completion": "c", "answer": [1, 2]}'])
    with pytest.raises(DataError, match=r"rows.jsonl line 2: the gold answer \[1, 2\] in column 'answer' is a list, not one value"):
        read_rows(path, "completion")
    assert len(read_rows(path, "completion", needs_gold=False)) == 2  # rewards that read no gold


def test_a_row_without_the_gold_other_rows_have_is_refused_naming_its_line(tmp_path):
    path = write(tmp_path, ['{"completion": "c", "gold": "1"}', '{"completion": "c", "gold": null}', '{"completion": "c"}'])
    with pytest.raises(DataError, match=r"rows.jsonl line 2 has no value in column 'gold'$"):
        read_rows(path, "completion", "gold")
    assert len(read_rows(path, "completion", "gold", needs_gold=False)) == 3  # rewards that read no gold (think_format)
    assert len(read_rows(write(tmp_path, ['{"completion": "c"}'] * 2), "completion")) == 2  # no gold at all: the rewards decide
    # a gold column with no value in any row: each row was scored "missing", the code reward's word for no code
    with pytest.raises(DataError, match=r"rows.jsonl: column 'tests' has no value in any row$"):
        read_rows(write(tmp_path, ['{"completion": "c", "tests": null}'] * 2), "completion", "tests")


@pytest.mark.parametrize("completion, shown", [("4", "4"), ("null", "null"), ('{"text": "4"}', '{"text": "4"}'), ('["4"]', '["4"]')])
def test_a_completion_that_is_neither_text_nor_messages_is_refused_naming_its_line(tmp_path, completion, shown):
    """A number 4 against the gold "4" scored correct; a list or null scored 0 as "missing"."""
    path = write(tmp_path, ['{"completion": "4", "answer": "4"}', f'{{"completion": {completion}, "answer": "4"}}'])
    with pytest.raises(DataError, match=f"rows.jsonl line 2: 'completion' is {re.escape(shown)}, not a completion "):
        read_rows(path, "completion")
    messages = '{"completion": [{"role": "assistant", "content": "4"}], "answer": "4"}'
    assert len(read_rows(write(tmp_path, [messages]), "completion")) == 1


def test_a_reward_without_a_verdict_is_counted_not_summed():
    scored = [{"reward": 1.0, "rewards": {"mine": value}, "reasons": {}} for value in (1.0, None, 0.0)]
    assert summary(scored).splitlines()[1] == "  mine: mean 0.5000; - 2, no verdict (None) 1"
    nothing = [{"reward": 0.0, "rewards": {"mine": None}, "reasons": {}}]
    assert summary(nothing).splitlines()[1] == "  mine: no verdict on any row; no verdict (None) 1"


def test_a_rows_verdict_is_its_first_judges_whatever_rows_share_its_batch():
    """The judge of a whole batch was the first reward that judged its first completion: the same rows
    in another order were judged by another reward (a span function that judges only some completions)."""
    from rlvr.rewards.base import Outcome, Reward, WeightedReward
    from rlvr.rewards.checks import checked_rewards
    from rlvr.rewards.numeric import LastNumberReward

    class FirstDigit(Reward):
        """Judges a completion holding a digit: correct when its first digit is the gold; no verdict without one."""

        def score(self, completions, golds, prompts=None):
            found = [re.search(r"\d", text) for text in completions]
            return [Outcome(0.0, "ok") if m is None else Outcome(1.0, "judged", m.group(), m.group() == g) for m, g in zip(found, golds)]

    rewards = checked_rewards(
        [WeightedReward("first", FirstDigit(name="first"), 1.0), WeightedReward("last", LastNumberReward(name="last"), 1.0)]
    )
    rows = [
        {"completion": "no digits here", "answer": "7"},
        {"completion": "7 then 8", "answer": "7"},
        {"completion": "8 then 7", "answer": "7"},
    ]
    expected = {"no digits here": False, "7 then 8": True, "8 then 7": False}  # the first by its last number (none: missing)
    for order in (rows, rows[1:] + rows[:1]):
        assert {row["completion"]: row["correct"] for row in score_rows(order, rewards, "completion", "answer")} == expected


def test_scored_rows_say_what_the_new_rewards_judged_not_what_the_old_ones_did(capsys):
    """A run's rows carry the training reward's `correct` and an eval's unscored `samples`: the output
    holds the new judge's `correct` (None where no reward judges), and no stale samples."""
    from rlvr.rewards import build_rewards

    rows = [
        {"completion": "The answer is 7", "answer": "4", "correct": True, "judge": "old", "samples": [{"completion": "4"}]},
        {"completion": "Final: 4", "answer": "4", "correct": False},
    ]
    strict = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}})
    assert [(row["correct"], "samples" in row, "judge" in row) for row in score_rows(rows, strict, "completion", "answer")] == [
        (False, False, False),
        (True, False, False),
    ]
    assert "`samples` (an eval's sampled completions) are not scored" in capsys.readouterr().err
    form = build_rewards({"think": {"_target_": "rlvr.rewards.format.ThinkFormatReward"}})
    assert [row["correct"] for row in score_rows(rows, form, "completion", "answer")] == [None, None]


def test_a_column_named_answer_beside_another_gold_column_is_refused():
    """With answer_column=sol the rewards get `sol` as `answer`: the row's own `answer` was replaced silently."""
    from rlvr.rewards import build_rewards

    rows = [{"completion": "4", "sol": "4", "answer": "mine"}]
    rewards = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}})
    with pytest.raises(DataError, match="^the input has a column 'answer' besides the gold answer's column 'sol' \\(answer_column\\)"):
        score_rows(rows, rewards, "completion", "sol")
    assert score_rows([{"completion": "Final: 4", "sol": "4"}], rewards, "completion", "sol")[0]["correct"] is True


def test_one_column_named_as_both_completion_and_gold_is_refused():
    """answer_column=completion said the input had no column 'completion' while listing it."""
    from rlvr.rewards import build_rewards

    rewards = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}})
    for completion_column, answer_column in [("completion", "completion"), ("answer", "answer")]:
        with pytest.raises(
            DataError, match=f"^completion_column={completion_column} and answer_column={answer_column} name the same column"
        ):
            score_rows([{"completion": "4", "answer": "4"}], rewards, completion_column, answer_column)


def test_a_directory_given_as_the_input_is_named_as_one(tmp_path):
    with pytest.raises(DataError, match="a directory, not a JSONL file$"):
        read_rows(tmp_path, "completion")


def test_a_gzipped_file_is_read_as_training_reads_it_and_a_corrupt_one_is_one_line(tmp_path):
    """It was "line 1: not UTF-8 (byte 0x8b ...)", blaming the encoding of a file training reads."""
    import gzip

    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"completion": "c", "answer": "1"}\n{"completion": "d", "answer": "2"}\n'))
    assert [row["completion"] for row in read_rows(path, "completion")] == ["c", "d"]
    path.write_bytes(gzip.compress(b'{"completion": "c", "answer": "1"}\n' * 1000)[:-10])  # cut short
    with pytest.raises(DataError, match=r"^input .*rows.jsonl.gz cannot be read: Compressed file ended before"):
        read_rows(path, "completion")


def test_golds_the_reward_cannot_read_are_warned_of_as_training_warns(caplog):
    """A gold 'X ####' with nothing after the marker: every completion of its row scores wrong, as in
    training, where the same warning names the data."""
    from rlvr.rewards import build_rewards

    rows = [{"completion": "Final: 4", "answer": "4"}, {"completion": "Final: 4", "answer": "She has 4. ####"}]
    strict = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}})
    assert [row["correct"] for row in score_rows(rows, strict, "completion", "answer")] == [True, False]
    assert [m.split(" (e.g.")[0] for m in caplog.messages] == ["1 of the 2 gold answers of the input"]


def test_a_gold_the_reward_refuses_is_named_with_its_row_not_by_the_golds_warning():
    """The unreadable-golds warning read a list gold first and raised without the row or the reward."""
    from rlvr.rewards import build_rewards

    rows = [{"completion": "Final: 4", "answer": "4"}, {"completion": "Final: 4", "answer": [1, 2]}]
    strict = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}})
    with pytest.raises(DataError, match=r"^reward 'strict', row 1: the gold answer \[1, 2\] is a list"):
        score_rows(rows, strict, "completion", "answer")


def test_an_output_that_is_a_fifo_is_written_into_not_replaced_by_a_file(tmp_path):
    """/dev/stdout, /dev/null and FIFOs are written through: a rename over one put a regular file in
    its place (as root, /dev/null itself)."""
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there before the writer, which then does not block
    try:
        write_rows([{"reward": 1.0}], fifo)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert os.read(reader, 1000) == b'{"reward": 1.0}\n'
    finally:
        os.close(reader)


def test_an_output_that_is_a_symlink_rewrites_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.jsonl").write_text("old\n")
    (tmp_path / "link.jsonl").symlink_to("real.jsonl")
    write_rows([{"reward": 1.0}], tmp_path / "link.jsonl")
    assert (tmp_path / "link.jsonl").is_symlink()
    assert (tmp_path / "real.jsonl").read_text() == '{"reward": 1.0}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "real.jsonl"]  # no temp file left
