"""Bad preference data is one line naming the file, line and column, or what left a split without pairs."""

import json
import re

import pytest
from omegaconf import OmegaConf

from rlvr.config import DatasetConfig
from rlvr.errors import ConfigError, DataError
from rlvr.models.loading import build_tiny_tokenizer
from rlvr.recipes.reward_model import load_pairs


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def run_cfg(**dataset):
    defaults = {"name": "prefs", "eval_holdout": 0, "max_eval_samples": None}
    return OmegaConf.create({"seed": 0, "dataset": OmegaConf.merge(OmegaConf.structured(DatasetConfig), defaults, dataset)})


def pairs(n, **row):
    return [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i + 2)} | row for i in range(n)]


def test_a_prompt_column_the_file_lacks_is_named_with_its_columns(rows_file, tokenizer):
    path = rows_file([{"question": "1+1=", "chosen": "2", "rejected": "3"}] * 3)
    with pytest.raises(DataError, match=rf"^dataset file {path} has no column 'prompt' \(columns: question, chosen, rejected\)$"):
        load_pairs(run_cfg(source=str(path), preference={"prompt_column": "prompt"}), tokenizer)


def test_the_prompt_column_becomes_the_prompt(rows_file, tokenizer):
    train, _, _ = load_pairs(run_cfg(source=str(rows_file(pairs(3))), preference={"prompt_column": "prompt"}), tokenizer)
    assert train[0] == {
        "prompt": [{"role": "user", "content": "0+1="}],
        "chosen": [{"role": "assistant", "content": "1"}],
        "rejected": [{"role": "assistant", "content": "2"}],
    }


@pytest.mark.parametrize(
    "message, shown",
    [
        ({"speaker": "assistant", "text": "2"}, "{'speaker': 'assistant', 'text': '2'}"),
        ({"role": "assistant", "content": None}, "{'role': 'assistant', 'content': None}"),
        ("two", "'two'"),
    ],
)
def test_a_message_without_string_role_and_content_is_named_by_line_and_column(rows_file, tokenizer, message, shown):
    rows = [{"chosen": [{"role": "assistant", "content": "2"}], "rejected": [{"role": "assistant", "content": "3"}]}] * 3
    rows = rows + [{"chosen": [{"role": "assistant", "content": "2"}], "rejected": [message]}]
    path = rows_file(rows)
    expected = f"dataset file {path} line 4: column 'rejected': message 0 is not a dict with string 'role' and 'content': {shown}"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        load_pairs(run_cfg(source=str(path)), tokenizer)


def test_pairs_with_an_empty_answer_are_dropped_and_counted(rows_file, tokenizer):
    strings = pairs(4) + [
        {"prompt": "5+1=", "chosen": "", "rejected": "7"},
        {"prompt": "6+1=", "chosen": "7", "rejected": " "},
        {"prompt": "8+1=", "chosen": "9", "rejected": "9"},
    ]
    train, _, counts = load_pairs(run_cfg(source=str(rows_file(strings)), preference={"prompt_column": "prompt"}), tokenizer)
    assert (counts["train_kept"], counts["train_dropped_empty"], counts["train_dropped_identical"]) == (4, 2, 1)
    assert all(pair["chosen"][0]["content"].strip() and pair["rejected"][0]["content"].strip() for pair in train)

    def turns(answer):
        return [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]

    messages = [{"chosen": turns("a"), "rejected": turns("b")}, {"chosen": turns("a"), "rejected": turns("")}]
    train, _, counts = load_pairs(run_cfg(source=str(rows_file(messages, name="messages.jsonl"))), tokenizer)
    assert (counts["train_kept"], counts["train_dropped_empty"]) == (1, 1)
    assert train[0]["prompt"] == [{"role": "user", "content": "q"}] and train[0]["rejected"] == [{"role": "assistant", "content": "b"}]


def test_a_sample_limit_draws_pairs_first_and_the_counts_add_up_to_it(rows_file, tokenizer):
    """The degenerate pairs were dropped from the whole file, then the first max_train_samples taken, then
    the length filter: kept + dropped added up to neither the file nor the limit."""
    rows = pairs(30) + [{"prompt": f"{i}+1=", "chosen": "x", "rejected": "x"} for i in range(30)]
    rows += [{"prompt": f"{i}+1=", "chosen": "1" * 400, "rejected": "2"} for i in range(30)]  # over max_token_length
    cfg = run_cfg(source=str(rows_file(rows)), max_train_samples=40, preference={"prompt_column": "prompt", "max_token_length": 64})
    train, _, counts = load_pairs(cfg, tokenizer)
    dropped = sum(v for k, v in counts.items() if k.startswith("train_dropped"))
    assert counts["train_kept"] + dropped == 40 and len(train) == counts["train_kept"]
    assert 0 < counts["train_dropped_identical"] < 40 and 0 < counts["train_dropped_too_long"] < 40
    again, _, _ = load_pairs(cfg, tokenizer)  # drawn with the data's seed, as prompts are
    assert again[:] == train[:]


def test_an_eval_split_left_without_pairs_is_refused(rows_file, tokenizer):
    train = rows_file(pairs(5), name="train.jsonl")
    same = rows_file([{"chosen": "2", "rejected": "2"}] * 3, name="same.jsonl")
    with pytest.raises(DataError, match=rf"^eval data of 'prefs' \({same}\) has no pairs left: all 3 have chosen == rejected \(3\)"):
        load_pairs(run_cfg(source=str(train), eval_source=str(same)), tokenizer)


def test_a_train_split_left_without_pairs_names_what_emptied_it(rows_file, tokenizer):
    train = rows_file(pairs(5), name="train.jsonl")
    empty = rows_file([{"chosen": "", "rejected": "2"}, {"chosen": "2", "rejected": "2"}], name="empty.jsonl")
    with pytest.raises(DataError, match=r"all 2 have chosen == rejected \(1\), an empty chosen or rejected answer \(1\), or sides"):
        load_pairs(run_cfg(source=str(empty)), tokenizer)
    with pytest.raises(ConfigError, match=r"has no pairs left after dataset.preference length filters: 5 longer than max_token_length=2,"):
        load_pairs(run_cfg(source=str(train), preference={"prompt_column": "prompt", "max_token_length": 2}), tokenizer)


def test_a_pair_longer_than_the_models_context_is_dropped_and_counted(rows_file, tokenizer):
    """It was kept (no max_token_length, or a longer one): trained past the model's positions."""
    long_answer = {"prompt": "1+1=", "chosen": "2" * 300, "rejected": "3"}
    path = rows_file([*pairs(3), long_answer])
    cfg = run_cfg(source=str(path), preference={"prompt_column": "prompt"})
    assert load_pairs(cfg, tokenizer)[2]["train_kept"] == 4  # no context known: only max_token_length (unset) filters
    _, _, counts = load_pairs(cfg, tokenizer, context=256)
    assert (counts["train_kept"], counts["train_dropped_too_long"]) == (3, 1)
    with pytest.raises(
        ConfigError, match=r"no pairs left after dataset.preference length filters: 4 longer than the model's 4-token context"
    ):
        load_pairs(cfg, tokenizer, context=4)


def test_a_bad_row_is_named_by_file_and_line_not_after_the_holdout_shuffle(tmp_path, tokenizer):
    lines = [json.dumps(row) for row in pairs(60)]
    lines[5] = json.dumps({"prompt": "5+1=", "chosen": None, "rejected": "7"})
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = run_cfg(source=str(path), eval_holdout=50, preference={"prompt_column": "prompt"})
    with pytest.raises(
        DataError, match=f"^dataset file {path} line 6: column 'chosen': expected a string or a list of messages, got NoneType$"
    ):
        load_pairs(cfg, tokenizer)
