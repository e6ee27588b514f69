"""Dataset sources (built-in, local files), prompt formatting, and one-line errors on bad input."""

import json
import re

import pytest

from rlvr.config import DatasetConfig
from rlvr.data import load_prompt_datasets
from rlvr.data.arithmetic import generate
from rlvr.errors import ConfigError, DataError
from omegaconf import OmegaConf


def dataset_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), overrides)


def test_builtin_arithmetic_is_deterministic_and_correct():
    first, second = generate(num_train=50, num_eval=10, seed=3), generate(num_train=50, num_eval=10, seed=3)
    assert first == second
    for row in first["train"]:
        a, b = row["question"].rstrip("=").split("+")
        assert int(a) + int(b) == int(row["answer"])


def test_builtin_dataset_has_prompt_and_answer():
    train, evaluation = load_prompt_datasets(dataset_cfg(generator={"num_train": 20, "num_eval": 5}))
    assert len(train) == 20 and len(evaluation) == 5
    assert train[0]["prompt"] == train[0]["question"] and train[0]["answer"].isdigit()


def test_local_jsonl_with_chat_prompts_and_holdout(rows_file):
    path = rows_file([{"q": f"What is {i}+1?", "sol": f"It is {i + 1}. #### {i + 1}"} for i in range(30)])
    cfg = dataset_cfg(
        source=str(path),
        prompt_column="q",
        answer_column="sol",
        prompt_template="{q}",
        chat=True,
        system_prompt="Be brief.",
        eval_holdout=10,
        max_eval_samples=None,
    )
    train, evaluation = load_prompt_datasets(cfg)
    assert (len(train), len(evaluation)) == (20, 10)
    assert train[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert train[0]["prompt"][1]["role"] == "user" and train[0]["answer"].startswith("It is")


def test_local_gsm8k_copy_with_separate_eval_file(tmp_path):
    from pathlib import Path

    data = Path(__file__).parent.parent / "data" / "gsm8k_test_300.jsonl"
    cfg = dataset_cfg(
        source=str(data), eval_source=str(data), max_train_samples=40, max_eval_samples=8, prompt_column="question", chat=True
    )
    train, evaluation = load_prompt_datasets(cfg)
    assert (len(train), len(evaluation)) == (40, 8)


def test_missing_file_is_named():
    with pytest.raises(DataError, match="dataset file not found: /no/such/file.jsonl"):
        load_prompt_datasets(dataset_cfg(source="/no/such/file.jsonl"))


def test_row_missing_gold_names_the_row(rows_file):
    rows = [{"question": "1+1=", "answer": "2"}] * 5 + [{"question": "2+2="}] + [{"question": "3+3=", "answer": "6"}]
    with pytest.raises(DataError, match="line 6 has no value in column 'answer'"):
        load_prompt_datasets(dataset_cfg(source=str(rows_file(rows)), eval_holdout=0))


def test_missing_column_lists_the_columns(rows_file):
    path = rows_file([{"problem": "1+1=", "answer": "2"}] * 3)
    with pytest.raises(DataError, match=r"has no column 'question' \(columns: problem, answer\)"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


def test_malformed_json_line_is_named(tmp_path, caplog):
    """In rlvr's one line only: datasets' JSON reader logs nothing of its own."""
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "1", "answer": "1"}) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2"), caplog.at_level("DEBUG"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("datasets") and r.levelname == "ERROR"] == []


@pytest.mark.parametrize(
    "name, bad, problem",
    [
        ("rows.jsonl", "[1, 2]", "line 6 is an array, not an object of columns ({...}): a JSON-lines file has one object per line"),
        ("rows.jsonl", '"3+3="', "line 6 is a string, not an object of columns ({...})"),
        ("rows.json", "[1, 2]", "row 5 is an array, not an object of columns ({...})"),  # a JSON array of rows
        ("rows.json", "{]", "line 7: Expecting property name enclosed in double quotes at column 2"),
        ("rows.jsonl", '{"question": "a, "answer": "1"}', "line 6: Expecting ',' delimiter at column 19"),
        ("rows.jsonl", '{"question": "a', "line 6: Unterminated string starting at column 14"),  # json's message ends at "at"
    ],
)
def test_a_json_row_that_is_not_an_object_is_named(tmp_path, name, bad, problem):
    rows = [json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) for i in range(5)] + [bad]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n" if name.endswith(".jsonl") else "[\n" + ",\n".join(rows) + "\n]\n")
    with pytest.raises(DataError) as info:
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))
    assert str(info.value).startswith(f"cannot read dataset file {path}: {problem}")


def test_a_corrupt_parquet_file_is_rlvrs_one_line_only(tmp_path, caplog):
    """datasets' parquet reader logs its own "Failed to read schema" error, printed twice, before rlvr's line."""
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(DataError, match=f"^cannot read dataset file {path}: Parquet magic bytes not found"), caplog.at_level("DEBUG"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("datasets") and r.levelname == "ERROR"] == []


@pytest.mark.parametrize(
    "value, problem",
    [
        (
            [{"role": "user", "content": "1+1="}],
            "the prompt [{'role': 'user', 'content': '1+1='}] in column 'messages' is a list, not text: rlvr takes a text "
            "prompt column, not chat messages (TRL's conversational format); dataset.chat=true builds the messages from the text",
        ),
        (
            {"text": "1+1="},
            "the prompt {'text': '1+1='} in column 'messages' is a dict, not text: name a text column (dataset.prompt_column) "
            "or build the prompt with dataset.prompt_template",
        ),
    ],
)
def test_a_prompt_column_of_lists_or_dicts_is_refused_naming_the_row(rows_file, value, problem):
    """Not their Python repr as the prompt; a prompt_template may still read them."""
    path = rows_file([{"messages": value, "answer": "2"}] * 3)
    with pytest.raises(DataError) as info:
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0, prompt_column="messages", chat=True))
    assert str(info.value) == f"dataset file {path} line 1: {problem}"
    template = "{messages[0][content]}" if isinstance(value, list) else "{messages[text]}"
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0, prompt_column="messages", prompt_template=template))
    assert train[0]["prompt"] == "1+1="


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_named(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=f"cannot read dataset file {path}: the file has no rows"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


@pytest.mark.parametrize("limit", ["max_train_samples", "max_eval_samples"])
def test_a_limit_of_zero_rows_is_refused_at_start_up_not_after_the_run_dir_is_written(limit):
    from rlvr.config import check_ranges

    with pytest.raises(ConfigError, match=rf"^dataset.{limit}=0 must be > 0 \("):
        check_ranges(OmegaConf.create({"dataset": dataset_cfg(**{limit: 0})}))


def test_prompt_template_naming_a_missing_column(rows_file):
    path = rows_file([{"question": "1+1=", "answer": "2"}] * 3)
    with pytest.raises(DataError, match="has no column 'problem' \\(dataset.prompt_template names it\\)"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0, prompt_template="{problem}"))


def test_a_templates_fields_keep_their_numbers_as_written_and_a_null_one_is_refused(rows_file):
    """pyarrow read a column of 3 and 2.5 as floats: the prompt said 'What is 3.0+0?' for 3+0 (and 20.50 became
    20.5); a row without one of the template's fields had the prompt 'What is 2+None?'. The prompt column the
    template does not read is not required."""
    rows = [{"a": 3, "b": 0, "answer": "3"}, {"a": 2.5, "b": 1.10, "answer": "3.6"}, {"a": 20.50, "b": 1e3, "answer": "x"}]
    path = rows_file(rows)
    path.write_text(path.read_text().replace("20.5,", "20.50,").replace("1000.0", "1e3"))
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0, prompt_template="What is {a}+{b}?"))
    assert train["prompt"] == ["What is 3+0?", "What is 2.5+1.1?", "What is 20.50+1e3?"]
    assert train["a"] == [3.0, 2.5, 20.5] and not any(c.startswith("__") for c in train.column_names)  # the column keeps its type
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0, prompt_template="{a:.2f} {b:>6}"))
    assert train["prompt"] == ["3.00      0", "2.50    1.1", "20.50 1000.0"]  # a format spec formats the number
    missing = rows_file([{"a": 2, "b": 3, "answer": "5"}, {"a": 2, "answer": "5"}], name="missing.jsonl")
    with pytest.raises(DataError, match="line 2 has no value in column 'b' \\(dataset.prompt_template names it"):
        load_prompt_datasets(dataset_cfg(source=str(missing), eval_holdout=0, prompt_template="What is {a}+{b}?"))
    empty = rows_file([{"context": "", "q": "1+1=", "answer": "2"}], name="empty.jsonl")
    train, _ = load_prompt_datasets(dataset_cfg(source=str(empty), eval_holdout=0, prompt_template="{context}{q}"))
    assert train["prompt"] == ["1+1="]  # an empty field is text
    blank_gold = rows_file([{"q": "1+1=", "answer": " "}], name="blank_gold.jsonl")
    with pytest.raises(DataError, match="line 1 has no value in column 'answer'$"):  # but not the gold's
        load_prompt_datasets(dataset_cfg(source=str(blank_gold), eval_holdout=0, prompt_template="Is {answer} right for {q}?"))
    with pytest.raises(DataError, match="fails: KeyError.*a brace that is text is written twice"):  # a JSON example is no column
        load_prompt_datasets(dataset_cfg(source=str(empty), eval_holdout=0, prompt_template='{q} Reply as {"answer": 1}'))


def test_unknown_builtin_generator():
    with pytest.raises(DataError, match="unknown built-in dataset 'builtin:nope'"):
        load_prompt_datasets(dataset_cfg(source="builtin:nope"))


def test_a_gold_answer_that_is_a_list_is_refused_naming_the_row(rows_file):
    path = rows_file([{"question": "1+1=", "answer": "2"}, {"question": "x?", "answer": ["11", "x"]}])
    with pytest.raises(DataError, match=r"line 2: the gold answer \['11', 'x'\] in column 'answer' is a list, not one value"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


def test_a_row_without_a_column_the_rewards_need_is_named_by_its_line_as_the_data_loads(rows_file):
    """The code reward's entry_point: a row without one failed at the first reward call that met it,
    mid-training or never, as "row 0" of its batch."""
    rows = [{"question": "1+1=", "answer": "assert f() == 2", "entry_point": "f"}] * 5
    path = rows_file([*rows, {"question": "2+2=", "answer": "assert f() == 4"}, *rows])
    with pytest.raises(DataError, match=f"^dataset file {path} line 6 has no value in column 'entry_point'$"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=2), required=["entry_point"])
    assert len(load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=2))[0]) == 9  # no reward needs it


@pytest.mark.parametrize("column", ["completions", "log_metric", "trainer_state"])
def test_columns_named_like_trl_reward_keywords_are_refused(rows_file, column):
    path = rows_file([{"question": "1+1=", "answer": "2", column: "x"}])
    with pytest.raises(DataError, match=f"columns named like the keywords TRL passes to reward functions \\({column}\\)"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


def test_a_bad_row_is_named_by_its_line_in_the_file_not_after_the_holdout_shuffle(tmp_path):
    """Blank lines count (an editor shows them); the holdout split shuffles rows, the error does not."""
    lines = [json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) for i in range(40)]
    lines[30] = json.dumps({"question": "30+1="})
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n")  # a blank line 11: row 30 is line 32
    with pytest.raises(DataError, match=f"^dataset file {path} line 32 has no value in column 'answer'$"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=10))


def test_a_failing_template_names_the_line_also_in_a_separate_eval_file(rows_file):
    train = rows_file([{"question": "11+1=", "answer": "12"}] * 5, name="train.jsonl")
    evaluation = rows_file([{"question": "11+1=", "answer": "12"}] * 3 + [{"question": "2+2", "answer": "4"}], name="eval.jsonl")
    with pytest.raises(DataError, match=f"^dataset file {evaluation} line 4: dataset.prompt_template '{{question\\[4\\]}}' fails"):
        load_prompt_datasets(dataset_cfg(source=str(train), eval_source=str(evaluation), prompt_template="{question[4]}"))


@pytest.mark.parametrize("name", ["rows.parquet", "rows.Parquet"])
def test_a_bad_row_of_a_parquet_file_is_named_by_its_index(tmp_path, name):
    import datasets

    path = tmp_path / name
    datasets.Dataset.from_list([{"question": "1+1=", "answer": "2"}] * 3 + [{"question": "2+2=", "answer": None}]).to_parquet(path)
    with pytest.raises(DataError, match="row 3 has no value in column 'answer'"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bytes_that_are_not_utf8_are_one_line_naming_file_and_line(tmp_path, suffix):
    import gzip

    content = b'{"question": "1+1=", "answer": "2"}\n{"question": "caf\xe9", "answer": "3"}\n'
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(gzip.compress(content) if suffix.endswith(".gz") else content)
    problem = "line 2: byte 18 \\(0xe9\\) is not UTF-8: save the file as UTF-8"
    with pytest.raises(DataError, match=f"^cannot read dataset file {path}: {problem}$"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


@pytest.mark.parametrize(
    ("name", "compress", "problem"),
    [
        ("rows.jsonl.gz", lambda b: __import__("gzip").compress(b)[:-20], "EOFError: Compressed file ended before"),
        ("rows.jsonl.gzip", lambda b: __import__("gzip").compress(b), "the file is gzip-compressed: name it rows.jsonl.gz"),
        ("rows.jsonl.bz2", lambda b: __import__("bz2").compress(b), "the file is bzip2-compressed: decompress it"),
        ("rows.jsonl.xz", lambda b: __import__("lzma").compress(b), "the file is xz-compressed: decompress it"),
    ],
)
def test_a_compressed_file_rlvr_cannot_read_is_one_line_saying_so(tmp_path, name, compress, problem):
    """A .gz cut short was EOFError's traceback; bz2, xz or gzip under another name were 'byte 13 is not UTF-8'."""
    content = b"".join(b'{"question": "%d+1=", "answer": "%d"}\n' % (i, i + 1) for i in range(50))
    (path := tmp_path / name).write_bytes(compress(content))
    with pytest.raises(DataError, match=f"^cannot read dataset file {path}: {problem}"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


def test_a_row_of_a_json_array_is_named_by_its_index_whatever_its_layout(tmp_path):
    """An array of as many lines as rows was named by line: the row on line 2 was called line 3."""
    rows = ['{"question": "1+1=", "answer": "2"}', '{"question": "2+2=", "answer": "4"}', '{"question": "3+3=", "answer": null}']
    (path := tmp_path / "rows.json").write_text(f"[{rows[0]},\n{rows[1]}, {rows[2]}\n]")
    with pytest.raises(DataError, match="rows.json row 2 has no value in column 'answer'"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


@pytest.mark.parametrize(("layout", "where"), [("lines", "line 3"), ("array", "row 2")])
@pytest.mark.parametrize("huge", [123456789012345678901234, -(2**63) - 5])
def test_an_integer_wider_than_64_bits_in_a_mixed_column_is_named_by_its_line_or_row(tmp_path, layout, where, huge):
    """It was pandas' "Value is too big! at position 29" (or "too small"), with no line."""
    rows = [{"question": "1+1=", "answer": 2}, {"question": "2+2=", "answer": "4"}, {"question": "big", "answer": huge}]
    text = "\n".join(map(json.dumps, rows)) + "\n" if layout == "lines" else json.dumps(rows, indent=1)
    (path := tmp_path / "rows.json").write_text(text)
    digits = str(huge) if len(str(huge)) <= 21 else f"{str(huge)[:21]}…"
    expected = f"cannot read dataset file {path}: {where}: the integer {digits} is wider than 64 bits: write it as a string"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


@pytest.mark.parametrize("layout", ["one line", "over lines"])
def test_a_file_of_one_object_holding_the_rows_says_how_to_write_them(tmp_path, layout):
    """{"data": [...]} was "has no column 'question' (columns: data)", or over lines "Expecting value"."""
    rows = [{"question": "1+1=", "answer": "2"}, {"question": "2+2=", "answer": "4"}]
    (path := tmp_path / "rows.json").write_text(json.dumps({"data": rows}, indent=None if layout == "one line" else 1))
    expected = (
        f"dataset file {path} has no column 'question' (columns: data): the file is one object whose 'data' holds 2 rows; "
        "write the rows as JSON lines (one object per line) or as a JSON array of objects"
    )
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))


def test_a_hub_source_takes_its_eval_rows_from_eval_source_when_one_is_set(tmp_path, monkeypatch):
    """`dataset=gsm8k dataset.eval_source=FILE`: the file's rows, not the Hub dataset's eval split."""
    from datasets import Dataset

    import rlvr.data.loading as loading

    read = []

    def hub(name, subset, split):
        read.append(split)
        return Dataset.from_list([{"question": f"hub {split} {i}", "answer": "1"} for i in range(4)])

    monkeypatch.setattr(loading, "read_hub", hub)
    local = tmp_path / "test.jsonl"
    local.write_text("".join(json.dumps({"question": f"local {i}", "answer": "2"}) + "\n" for i in range(3)))
    cfg = dataset_cfg(source="openai/gsm8k", eval_split="test", eval_source=str(local), prompt_column="question")
    train, evaluation = load_prompt_datasets(cfg)
    assert read == ["train"] and len(train) == 4
    assert [row["question"] for row in evaluation] == ["local 0", "local 1", "local 2"]


def test_a_builtin_eval_source_is_its_generators_eval_rows(tmp_path):
    """It was read as a Hub dataset's name: "cannot load Hub dataset 'builtin:arithmetic'"."""
    local = tmp_path / "train.jsonl"
    local.write_text("".join(json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(5)))
    cfg = dataset_cfg(source=str(local), eval_source="builtin:arithmetic", prompt_column="question", generator={"num_eval": 7})
    train, evaluation = load_prompt_datasets(cfg)
    assert len(train) == 5 and evaluation["question"] == [row["question"] for row in generate(num_eval=7, seed=0)["test"]]


def test_a_builtin_source_takes_its_eval_rows_from_eval_source_when_one_is_set(tmp_path):
    """`dataset.eval_source=FILE` beside the arithmetic generator: the file's rows (it was ignored, even a missing file)."""
    local = tmp_path / "test.jsonl"
    local.write_text("".join(json.dumps({"question": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(3)))
    train, evaluation = load_prompt_datasets(dataset_cfg(eval_source=str(local)))
    assert [row["question"] for row in evaluation] == ["0+0=", "1+1=", "2+2="] and len(train) > 3
    with pytest.raises(DataError, match="typo.jsonl"):
        load_prompt_datasets(dataset_cfg(eval_source=str(tmp_path / "typo.jsonl")))


def test_a_column_named_answer_beside_another_gold_column_is_refused(rows_file):
    """Rewards get the gold column as `answer`: a row's own `answer` column was replaced by it silently."""
    path = rows_file([{"q": f"{i}+1=", "sol": str(i + 1), "answer": f"mine-{i}"} for i in range(4)])
    with pytest.raises(DataError, match=f"^dataset file {path} has a column 'answer' besides the gold answer's column 'sol'"):
        load_prompt_datasets(dataset_cfg(source=str(path), prompt_column="q", answer_column="sol", eval_holdout=0))


def test_a_json_lines_file_with_blank_lines_and_a_column_of_numbers_and_text_is_read(rows_file, tmp_path):
    """datasets reads such a column through pandas, which refused the blank line: "Expected object or value"."""
    path = tmp_path / "mixed_blank.jsonl"
    path.write_text('{"question": "1+1=", "answer": "1,000"}\n\n{"question": "2+2=", "answer": 4}\n{"question": "2+3=", "answer": 5.50}\n')
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), eval_holdout=0))
    assert train["answer"] == ["1,000", "4", "5.50"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1=", "answer": "2"}\n\n{"question": "2+2=", "answer": 4\n')
    with pytest.raises(DataError, match=f"^cannot read dataset file {bad}: line 3: "):
        load_prompt_datasets(dataset_cfg(source=str(bad), eval_holdout=0))


def composed_data(*overrides):
    """(train, eval) rows as the recipe of the composed config loads them: prompts, or preference pairs."""
    from hydra import compose, initialize_config_dir

    from rlvr.config import conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if cfg.algorithm.name == "reward_model":
        from rlvr.models.loading import build_tiny_tokenizer
        from rlvr.recipes.reward_model import load_pairs

        train, evaluation, _ = load_pairs(cfg, build_tiny_tokenizer())
    else:
        from rlvr.recipes.common import load_rewarded_prompts
        from rlvr.rewards import build_rewards

        train, evaluation = load_rewarded_prompts(cfg, build_rewards(cfg.reward.functions))
    return train.to_list(), evaluation.to_list()


@pytest.mark.parametrize("experiment", [[], ["algorithm=reward_model"]])
def test_the_built_in_data_is_drawn_with_the_data_seed_not_the_runs(experiment):
    """A sweep over `seed` trained and evaluated each seed on other prompts (1 of 100 eval rows alike):
    its eval_after_accuracy differences were partly the data's."""
    assert composed_data(*experiment, "seed=0") == composed_data(*experiment, "seed=1")
    assert composed_data(*experiment, "dataset.shuffle_seed=1")[1] != composed_data(*experiment)[1]
    with pytest.raises(DataError, match=r"^dataset.generator.seed: builtin:\w+ draws its rows with dataset.shuffle_seed \(set that\)$"):
        composed_data(*experiment, "+dataset.generator.seed=1")
