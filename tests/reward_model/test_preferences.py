"""Preference data: the HH parser on real rows, formats, the mixer, the length filters."""

import gzip
import json

import pytest
from omegaconf import OmegaConf

from rlvr.config import DatasetConfig
from rlvr.data import builtin_data_path
from rlvr.data.loading import read_splits
from rlvr.data.preferences import as_whole_conversations, length_filter, parse_hh, to_pair
from rlvr.errors import DataError
from rlvr.models.loading import build_tiny_tokenizer

HH_PATH = builtin_data_path("hh-rlhf/harmless-base-1200.jsonl.gz")
HH_ROWS = [json.loads(line) for line in gzip.open(HH_PATH, "rt", encoding="utf-8")]


def test_hh_parser_on_every_shipped_row():
    for row in HH_ROWS:
        for side in ("chosen", "rejected"):
            messages = parse_hh(row[side])
            assert messages[0]["role"] == "user"
            assert "\n\nHuman:" not in "".join(m["content"] for m in messages)
            rebuilt = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)
            assert rebuilt.split() == row[side].split()  # same words, only outer whitespace trimmed


def test_hh_pairs_share_the_prompt_and_differ_in_the_answer():
    pairs = [to_pair(row, "chosen", "rejected", None) for row in HH_ROWS]
    for pair in pairs:
        assert pair["prompt"] and pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"][0]["role"] == "assistant" and pair["rejected"][0]["role"] == "assistant"
    assert sum(p["chosen"] != p["rejected"] for p in pairs) == len(pairs)


def test_trl_format_and_plain_strings():
    trl_row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go"}],
    }
    assert to_pair(trl_row, "chosen", "rejected", "prompt") == trl_row
    strings = to_pair({"q": "2+2=", "good": "4", "bad": "5"}, "good", "bad", "q")
    assert strings == {
        "prompt": [{"role": "user", "content": "2+2="}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }


def test_pairs_reach_trls_reward_trainer_as_whole_conversations_with_no_empty_value():
    """TRL's format check reads the first message of one key picked from a set: an empty prompt (plain
    strings whose two sides share no turn) failed in about one run of two, by Python's hash seed."""
    import datasets
    from trl.data_utils import is_conversational

    no_shared_turn = to_pair({"chosen": "6+6=12", "rejected": "6+6=13"}, "chosen", "rejected", None)
    with_prompt = to_pair(
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}, "chosen", "rejected", None
    )
    assert no_shared_turn["prompt"] == [] and with_prompt["prompt"]
    pairs = datasets.Dataset.from_list([no_shared_turn, with_prompt])
    whole = as_whole_conversations(pairs)
    assert whole.column_names == ["chosen", "rejected"]
    assert whole[1]["chosen"] == with_prompt["prompt"] + with_prompt["chosen"]  # what TRL makes of an explicit prompt
    for row in whole:
        for key in ("chosen", "rejected"):  # whichever key the set gives first
            assert is_conversational({key: row[key]})


def test_an_hh_transcript_without_its_leading_blank_lines_is_still_one():
    """Read as one assistant message with no prompt: the two sides shared no turn, silently."""
    pair = to_pair({"chosen": "Human: hi\n\nAssistant: hello", "rejected": "Human: hi\n\nAssistant: go away"}, "chosen", "rejected", None)
    assert pair == {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }
    assert to_pair({"chosen": "Human: hi", "rejected": "no"}, "chosen", "rejected", None)["chosen"] == [
        {"role": "assistant", "content": "Human: hi"}
    ]


@pytest.mark.parametrize("chosen", ["\n\nHuman: hi\n\nAssistant:", "Human: hi\n\nAssistant:", "\n\nHuman: hi\n\nAssistant:\n"])
def test_an_hh_transcript_whose_empty_answer_lost_its_space_is_an_empty_answer(chosen):
    """Its last 'Assistant:' was no turn: 'does not end with an Assistant turn' stopped the run, where
    the same pair with the space kept is dropped and counted as empty."""
    pair = to_pair({"chosen": chosen, "rejected": "\n\nHuman: hi\n\nAssistant: go away"}, "chosen", "rejected", None)
    assert pair["prompt"] == [{"role": "user", "content": "hi"}] and pair["chosen"] == [{"role": "assistant", "content": ""}]


def test_identical_pairs_are_dropped_and_counted():
    import datasets

    from rlvr.config import PreferenceConfig
    from rlvr.data.preferences import convert, drop_degenerate

    same = "\n\nHuman: a\n\nAssistant: b"
    rows = [{"chosen": same, "rejected": same}, {"chosen": same, "rejected": same + " c"}]
    pairs = convert(datasets.Dataset.from_list(rows), OmegaConf.structured(PreferenceConfig), "test", lambda i: f"row {i}")
    pairs, dropped = drop_degenerate(pairs)
    assert (len(pairs), dropped) == (1, {"identical": 1, "empty": 0, "different_prompts": 0})


def test_pairs_whose_sides_part_before_the_answer_are_dropped_and_counted():
    import datasets

    from rlvr.config import PreferenceConfig
    from rlvr.data.preferences import convert, drop_degenerate

    rows = [
        {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: 3+3?\n\nAssistant: 5"},  # two questions
        {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "5"},  # a transcript against a bare answer
        {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5"},  # one question
        {"chosen": "4", "rejected": "5"},  # bare answers: no prompt, nothing to part
    ]
    pairs = convert(datasets.Dataset.from_list(rows), OmegaConf.structured(PreferenceConfig), "test", lambda i: f"row {i}")
    kept, dropped = drop_degenerate(pairs)
    assert dropped == {"identical": 0, "empty": 0, "different_prompts": 2}
    assert [(pair["prompt"], pair["chosen"][0]["content"]) for pair in kept] == [([{"role": "user", "content": "2+2?"}], "4"), ([], "4")]


def test_a_malformed_row_is_named():
    import datasets

    from rlvr.config import PreferenceConfig
    from rlvr.data.preferences import convert

    rows = [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "x"}, {"chosen": "\n\nHuman: a", "rejected": "y"}]
    with pytest.raises(DataError, match="test row 1: column 'chosen': HH transcript does not end with an Assistant turn"):
        convert(datasets.Dataset.from_list(rows), OmegaConf.structured(PreferenceConfig), "test", lambda i: f"row {i}")


def mixer_cfg(tmp_path, mixer):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"chosen": f"a{i}", "rejected": "x", "src": "a"}) + "\n" for i in range(40)))
    b.write_text("".join(json.dumps({"chosen": f"b{i}", "rejected": "x", "src": "b"}) + "\n" for i in range(10)))
    sources = {str(a): mixer[0], str(b): mixer[1]}
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"mixer": sources, "eval_holdout": 0})


def test_mixer_fractions_and_counts(tmp_path):
    train, _ = read_splits(mixer_cfg(tmp_path, (0.5, 7)))
    sources = [row["src"] for row in train]
    assert (sources.count("a"), sources.count("b")) == (20, 7)
    train, _ = read_splits(mixer_cfg(tmp_path, (1.0, 1.0)))
    assert len(train) == 50


def test_mixer_rejects_impossible_amounts(tmp_path):
    with pytest.raises(DataError, match=r"asks for 11 rows; it has 10"):
        read_splits(mixer_cfg(tmp_path, (0.5, 11)))


def test_a_source_without_prompts_mixes_with_one_of_transcripts(tmp_path):
    """Plain strings (no prompt: every `prompt` an empty list, typed null) beside HH transcripts were
    refused as a 'prompt' column of two kinds, a column neither file has."""
    plain, hh = tmp_path / "plain.jsonl", tmp_path / "hh.jsonl"
    plain.write_text("".join(json.dumps({"chosen": f"{i}+1={i + 1}", "rejected": f"{i}+1={i}"}) + "\n" for i in range(6)))
    turn = "\n\nHuman: {i}+1=\n\nAssistant: {a}"
    hh.write_text("".join(json.dumps({"chosen": turn.format(i=i, a=i + 1), "rejected": turn.format(i=i, a=i)}) + "\n" for i in range(4)))
    from rlvr.data.preferences import convert

    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"mixer": {str(plain): 1.0, str(hh): 1.0}, "eval_holdout": 0})
    cfg.preference.prompt_column = None
    train, _ = read_splits(cfg, lambda ds, where, label: convert(ds, cfg.preference, where, label))
    assert sorted(len(row["prompt"]) for row in train) == [0] * 6 + [1] * 4
    assert {"role": "user", "content": "3+1="} in [m for row in train for m in row["prompt"]]


def test_strings_beside_message_lists_in_one_column_stay_strings(tmp_path):
    """datasets reads such a column as JSON and gave back a chosen "2" as the int 2: the error named
    line 1, whose row is right, and strings like "[1]" or "null" were other values."""
    path = tmp_path / "pairs.jsonl"
    rows = [{"chosen": text, "rejected": "no"} for text in ("2", "[1]", "null")]
    rows.append({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": "no"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"source": str(path), "eval_holdout": 0})
    train, _ = read_splits(cfg)
    chosen = [row["chosen"] for row in train]
    assert sorted(c for c in chosen if isinstance(c, str)) == ["2", "[1]", "null"]
    assert [c for c in chosen if not isinstance(c, str)] == [rows[-1]["chosen"]]


def test_length_filters_count_what_they_drop():
    import datasets

    tokenizer = build_tiny_tokenizer()

    def user(n):
        return [{"role": "user", "content": "x" * n}]

    def answer(n):
        return [{"role": "assistant", "content": "y" * n}]

    rows = [
        {"prompt": user(5), "chosen": answer(5), "rejected": answer(5)},  # kept
        {"prompt": user(200), "chosen": answer(1), "rejected": answer(1)},  # prompt too long
        {"prompt": user(5), "chosen": answer(5), "rejected": answer(300)},  # pair too long
        {"prompt": user(5), "chosen": answer(2), "rejected": answer(3)},
    ]  # kept
    kept, counts = length_filter(datasets.Dataset.from_list(rows), tokenizer, max_token_length=100, max_prompt_token_length=100)
    assert (counts.kept, counts.dropped_prompt_too_long, counts.dropped_too_long) == (2, 1, 1)
    assert [len(r["chosen"][0]["content"]) for r in kept] == [5, 2]
