"""Local dataset files as the user wrote them: gold answers keep their text, and a path that is not
one readable file is one line."""

import json

import pytest
from omegaconf import OmegaConf

from rlvr.config import DatasetConfig, check_ranges
from rlvr.data import load_prompt_datasets
from rlvr.errors import ConfigError, DataError


def dataset_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"eval_holdout": 0} | overrides)


def answers(path) -> list[str]:
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path)))
    return list(train["answer"])


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_numeric_gold_answers_keep_the_files_text(tmp_path, layout):
    """pyarrow reads a column of ints with one 2.5 as floats ("12.0"), and an int past 64 bits as a
    float (1.2345678901234567e+19): no reward would match either."""
    golds = [12, 7, 2.50, 12345678901234567890, 0]
    rows = [{"question": f"q{i}", "answer": gold} for i, gold in enumerate(golds)]
    path = tmp_path / f"rows.{'jsonl' if layout == 'lines' else 'json'}"
    if layout == "lines":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows).replace("2.5}", "2.50}"))
    else:
        path.write_text(json.dumps(rows, indent=1).replace("2.5\n", "2.50\n"))
    assert answers(path) == ["12", "7", "2.50", "12345678901234567890", "0"]


def test_integer_and_text_answers_are_unchanged(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": gold}) + "\n" for i, gold in enumerate([3, 40, 5])))
    assert answers(path) == ["3", "40", "5"]
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": gold}) + "\n" for i, gold in enumerate(["x", 2.5])))
    assert answers(path) == ["x", "2.5"]


def test_the_prompt_column_is_the_prompt_without_a_template(tmp_path):
    """Not the `question` column the file also has (the default template named it)."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"q": f"{i}+1=", "question": "IGNORE", "gold": i + 1}) + "\n" for i in range(4)))
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), prompt_column="q", answer_column="gold"))
    assert list(train["prompt"]) == ["0+1=", "1+1=", "2+1=", "3+1="]


@pytest.mark.parametrize(
    "name, message",
    [
        ("data", "is a directory: name one file (a mixture of files: dataset.mixer)"),
        ("data/*.jsonl", "dataset file not found: {tmp}/data/*.jsonl (a glob is not expanded: name one file)"),
        ("rows.csv", "rlvr reads JSON lines, JSON or parquet files, not .csv: convert it"),
    ],
)
def test_a_path_that_is_not_one_readable_file_is_one_line(tmp_path, name, message):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"question": "q", "answer": "1"}\n')
    (tmp_path / "rows.csv").write_text("question,answer\nq,1\n")
    with pytest.raises(DataError) as info:
        load_prompt_datasets(dataset_cfg(source=str(tmp_path / name)))
    assert message.format(tmp=tmp_path) in str(info.value)


def test_eval_prompts_that_are_also_training_prompts_are_counted_in_a_warning(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i % 6}+1=", "answer": i % 6 + 1}) + "\n" for i in range(12)))
    load_prompt_datasets(dataset_cfg(source=str(path), eval_source=str(path), max_eval_samples=4))
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("4 of the 4 eval prompts of eval data of 'arithmetic'") and "are also training prompts" in warning
    caplog.clear()
    disjoint = tmp_path / "eval.jsonl"
    disjoint.write_text(json.dumps({"question": "9+9=", "answer": 18}) + "\n")
    load_prompt_datasets(dataset_cfg(source=str(path), eval_source=str(disjoint)))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_numeric_gold_answers_keep_the_files_text_beside_text_answers(tmp_path, layout):
    """datasets decodes a column of numbers and text as JSON (2.50 -> 2.5, 1e3 -> 1000.0, -0.0 -> 0.0);
    true and false read as in a column of only them."""
    golds = ['"x"', "2.50", "1e3", "-0.0", "12", "true", "null"]
    rows = ['{"question": "q%d", "answer": %s}' % (i, gold) for i, gold in enumerate(golds)]
    path = tmp_path / f"rows.{'jsonl' if layout == 'lines' else 'json'}"
    path.write_text("\n".join(rows) + "\n" if layout == "lines" else "[\n" + ",\n".join(rows) + "\n]\n")
    with pytest.raises(DataError, match="row 6 has no value in column 'answer'" if layout == "array" else "line 7 has no value"):
        answers(path)
    path.write_text(path.read_text().replace("null", "1.0"))
    assert answers(path) == ["x", "2.50", "1e3", "-0.0", "12", "True", "1.0"]


def test_numeric_golds_are_read_back_past_a_byte_order_mark_and_line_separators_in_strings(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"question": "first\u2028line", "answer": 12}, {"question": "q\x85", "answer": 2.5}]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    assert answers(path) == ["12", "2.5"]


def test_a_prompt_column_is_taken_as_it_is_whatever_its_name(tmp_path):
    """Not through str.format, which reads "input.text" as an attribute and "q[0]" as an index."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"input.text": f"{i}+1=", "answer": i + 1}) + "\n" for i in range(3)))
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), prompt_column="input.text"))
    assert list(train["prompt"]) == ["0+1=", "1+1=", "2+1="]


@pytest.mark.parametrize(
    "amount, source, message",
    [
        (1.5, "file", "dataset.mixer['{path}']=1.5: must be a fraction in (0, 1] or a whole count > 1"),
        (0, "file", "dataset.mixer['{path}']=0: must be a fraction in (0, 1] or a whole count > 1"),
        ("abc", "file", "dataset.mixer['{path}']='abc': must be a fraction in (0, 1] or a whole count > 1"),
        (True, "file", "dataset.mixer['{path}']=True: must be a fraction in (0, 1] or a whole count > 1"),
        (2, "builtin:arithmetic", "dataset.mixer['builtin:arithmetic']: a built-in generator is not mixed; name files or Hub datasets"),
    ],
)
def test_a_mixer_entry_that_cannot_be_mixed_is_refused_at_start_up(tmp_path, amount, source, message):
    """Refused with the other values, before anything loads (a non-number was a ValueError traceback from
    the data loading, after the run dir was written)."""
    path = tmp_path / "rows.jsonl"
    name = str(path) if source == "file" else source
    with pytest.raises(ConfigError) as info:
        check_ranges(OmegaConf.create({"dataset": dataset_cfg(source=str(path), mixer={name: amount})}))
    assert str(info.value) == message.format(path=path)


@pytest.mark.parametrize("chat", [True, False])
def test_an_empty_system_prompt_is_an_empty_system_message_or_nothing(tmp_path, chat):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "1+1=", "answer": 2}) + "\n")
    train, _ = load_prompt_datasets(dataset_cfg(source=str(path), system_prompt="", chat=chat))
    expected = [{"role": "system", "content": ""}, {"role": "user", "content": "1+1="}] if chat else "1+1="
    assert train[0]["prompt"] == expected


def test_a_mixture_of_parquet_and_json_lines_with_numbers_for_text_trains_on_all_rows(tmp_path):
    """parquet's large_string beside JSON's string, a column of numbers beside one of text: datasets'
    concatenate_datasets refused each with a traceback."""
    import pandas

    rows = [{"question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(4)]
    pandas.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"question": i, "answer": i, "extra": 1}) + "\n" for i in range(3)))
    mixer = {str(tmp_path / name): 1.0 for name in ("a.parquet", "b.jsonl", "c.jsonl")}
    train, _ = load_prompt_datasets(dataset_cfg(source="", mixer=mixer))
    assert sorted(train["answer"]) == sorted(["1", "2", "3", "4"] * 2 + ["0", "1", "2"])
    assert "extra" not in train.column_names  # a column not every source has


def test_a_mixer_fraction_that_rounds_to_no_rows_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"question": f"q{i}", "answer": "1"}) + "\n" for i in range(20)))
    with pytest.raises(DataError, match=r"dataset.mixer\['.*a.jsonl'\]=0.01 of its 20 rows rounds to none"):
        load_prompt_datasets(dataset_cfg(source="", mixer={str(tmp_path / "a.jsonl"): 0.01}))


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.parquet", "the file has no rows"),
        ("torn.parquet", "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file."),
        ("twice.jsonl", "line 2: the key 'answer' appears twice in one object: keep one"),
    ],
)
def test_a_malformed_parquet_or_json_file_is_one_line_naming_what_is_wrong(tmp_path, name, message):
    """An empty or torn parquet file was a UnicodeDecodeError traceback (read again as JSON lines); a
    repeated key, datasets' "An error occurred while generating the dataset"."""
    import pandas

    pandas.DataFrame({"question": pandas.Series([], dtype=str), "answer": pandas.Series([], dtype=str)}).to_parquet(
        tmp_path / "empty.parquet"
    )
    pandas.DataFrame({"question": ["q"] * 50, "answer": ["1"] * 50}).to_parquet(tmp_path / "whole.parquet")
    (tmp_path / "torn.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:300])
    (tmp_path / "twice.jsonl").write_text('{"question": "q", "answer": "1"}\n{"question": "q", "answer": "1", "answer": "0"}\n')
    with pytest.raises(DataError) as info:
        load_prompt_datasets(dataset_cfg(source=str(tmp_path / name)))
    assert str(info.value) == f"cannot read dataset file {tmp_path / name}: {message}"
