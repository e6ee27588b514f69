"""Read a dataset from wherever `dataset.source` points, check it, and format the prompts."""

from __future__ import annotations

import json
import logging
import os
import re
import string
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

from rlvr.errors import DataError
from rlvr.models.hub import is_offline, looks_like_path

BUILTIN_DIR = Path(__file__).parent / "builtin"
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".json.gz", ".jsonl.gz")
GOLD_TEXT = "_rlvr_gold_text"  # the gold answer as text, until it becomes the `answer` column


def builtin_data_path(relative: str) -> str:
    """Absolute path of a data file shipped with rlvr (the `${rlvr_data:...}` config resolver)."""
    return str(BUILTIN_DIR / relative)


def is_local(source: str) -> bool:
    return looks_like_path(source) or source.endswith(LOCAL_SUFFIXES) or os.path.exists(source)


def local_files(dataset, with_eval: bool = False) -> list[Path]:
    """The local files `dataset` (the config group) takes its training rows from: dataset.source and the
    mixer's sources; with `with_eval`, dataset.eval_source too. Builtins and Hub names are none."""
    names = (dataset.source, *(dataset.mixer or {}), *((dataset.eval_source,) if with_eval else ()))
    return [path for name in names if name and (path := Path(str(name)).expanduser()).is_file()]


def template_error(exc: Exception) -> str:
    """Why str.format_map refused a row: the error, and for a brace that names no column (LaTeX's
    \\boxed{}, a JSON example) how to write one as text."""
    about_braces = ("positional fields", "Single '", "unmatched '{'", "expected '}'")
    braces = any(m in str(exc) for m in about_braces) or (isinstance(exc, KeyError) and not str(exc.args[0]).isidentifier())
    return f"{exc!r}" + (" (a brace that is text is written twice: \\boxed{{}})" if braces else "")


def open_maybe_gzipped(path: Path):
    """`path` opened for reading bytes, through gzip where its name ends in .gz."""
    import gzip

    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _json_kind(value) -> str:
    """What a JSON value that is not an object is, in JSON's words: "an array", "a string", "a number", "true"."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {list: "an array", str: "a string"}.get(type(value), "a number")


def json_error(exc) -> str:
    """A JSONDecodeError's message with its column: json's own message may end at "starting at"."""
    return f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} column {exc.colno}"


def _first_bad_json_row(path: Path) -> str | None:
    """What is wrong with a JSON(-lines) file that `datasets` refused: no rows, the first line that is not
    JSON or not an object ({...}), or in a JSON array of rows its first element that is not an object."""
    with open_maybe_gzipped(path) as handle:
        text = handle.read().decode("utf-8-sig")
    if not text.strip():
        return "the file has no rows"
    if text.lstrip().startswith("["):  # a JSON array of rows, or a JSON-lines file whose first line is not a row
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # "Extra data": more lines after the first, as in JSON lines
                return f"line {exc.lineno}: {json_error(exc)}"
        else:
            if isinstance(rows, list):
                bad = next((index for index, row in enumerate(rows) if not isinstance(row, dict)), None)
                return None if bad is None else f"row {bad} is {_json_kind(rows[bad])}, not an object of columns ({{...}})"
    # lines end at "\n" only, as datasets reads them (str.splitlines would also split at U+2028 inside strings)
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                row = json.loads(line, object_pairs_hook=_without_repeated_keys)
            except json.JSONDecodeError as exc:
                return f"line {number}: {json_error(exc)}"
            except ValueError as exc:  # a repeated key, which pyarrow's JSON-lines reader refuses
                return f"line {number}: {exc}"
            if not isinstance(row, dict):
                return f"line {number} is {_json_kind(row)}, not an object of columns ({{...}}): a JSON-lines file has one object per line"
    return None


def _first_huge_integer(path: Path) -> str | None:
    """Where a JSON(-lines) file first holds an integer outside 64 bits ("line N", or in a JSON array
    "row N"), which `datasets` reads through pandas where a column mixes numbers and text ("Value is
    too big!" / "too small"), or None."""

    def integer(text: str) -> int:
        if not -(2**63) <= int(text) < 2**64:
            raise OverflowError(text)
        return int(text)

    def huge(text: str) -> str | None:
        try:
            json.loads(text, parse_int=integer)
        except OverflowError as exc:
            digits = str(exc) if len(str(exc)) <= 21 else f"{str(exc)[:21]}…"
            return f"the integer {digits} is wider than 64 bits: write it as a string (in quotes)"
        except ValueError:  # not JSON: datasets' reader or the row checks name it
            pass
        return None

    with open_maybe_gzipped(path) as handle:
        text = handle.read().decode("utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError:
            rows = None
        if isinstance(rows, list):
            return next((f"row {index}: {why}" for index, row in enumerate(rows) if (why := huge(json.dumps(row)))), None)
    return next((f"line {number}: {why}" for number, line in enumerate(text.split("\n"), start=1) if (why := huge(line))), None)


def _no_parquet_rows(path: Path) -> str | None:
    import pyarrow.parquet

    try:
        return "the file has no rows" if pyarrow.parquet.read_metadata(path).num_rows == 0 else None
    except Exception:  # noqa: BLE001  not readable as parquet: datasets' own error says why
        return None


def _without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict:
    row = dict(pairs)
    if len(row) < len(pairs):
        repeated = next(key for index, (key, _) in enumerate(pairs) if key in dict(pairs[:index]))
        raise ValueError(f"the key {repeated!r} appears twice in one object: keep one")
    return row


def _first_bad_utf8(path: Path) -> str | None:
    """The first line of a JSON file that is not UTF-8 (`datasets` reads it, and fails when a row is used)."""
    with open_maybe_gzipped(path) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: byte {exc.start + 1} (0x{line[exc.start]:02x}) is not UTF-8: save the file as UTF-8"
    return None


# The prefix of a column's copy with its numbers as the file writes them (`read_local`'s written_columns).
WRITTEN = "__as_written__"

# The first bytes of compressed files: only gzip, named *.gz, is read (as `datasets` reads it, by its name).
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}


def _compression_unread(path: Path) -> str | None:
    """Why a compressed JSON file is not read (it would be reported as text that is not UTF-8), if it is one."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    found = next((name for magic, name in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)
    if found is None or (found == "gzip" and path.suffix == ".gz"):
        return None
    if found == "gzip":
        stem = path.name[: -len(path.suffix)] if path.suffix.lower() in (".gzip", ".gzipped") else path.name
        return f"the file is gzip-compressed: name it {stem}.gz (gzip is read by its .gz name)"
    return f"the file is {found}-compressed: decompress it (or gzip it, as NAME.jsonl.gz)"


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _row_labeller(path: Path, rows: int):
    """How an error names row `index` of a local file: `line N` (1-based, as an editor shows it) for
    JSON lines, else `row i` (0-based, as `datasets` and pandas index it: parquet, a JSON array)."""

    def label(index: int) -> str:
        if not is_parquet(path):
            with open_maybe_gzipped(path) as handle:
                numbers = [n for n, line in enumerate(handle, start=1) if line.strip()]  # datasets skips blank lines
                handle.seek(0)
                array = handle.read(4096).decode("utf-8-sig", errors="replace").lstrip().startswith("[")
            if len(numbers) == rows and not array:  # a JSON array laid out one row a line still counts rows
                return f"line {numbers[index]}"
        return f"row {index}"

    return label


def json_with_literal_numbers(text: str):
    """`text` as JSON with its numbers as written (text): "12", "2.50", "12345678901234567890"; how
    training and rlvr.score read gold answers."""
    return json.loads(text, parse_int=str, parse_float=str)


def _file_rows(path: Path, parse=json_with_literal_numbers) -> list:
    """The rows of a JSON(-lines) file with their numbers as the file writes them (text), other values
    as JSON reads them (with `parse=json.loads`, all of them)."""
    with open_maybe_gzipped(path) as handle:
        text = handle.read().decode("utf-8-sig")
    if text.lstrip().startswith("["):  # a JSON array of rows (a JSON-lines row is an object)
        return parse(text)
    # lines end at "\n" only: str.splitlines would also split at U+2028 and others inside strings
    return [parse(line) for line in text.split("\n") if line.strip()]


def _column(rows: list, column: str) -> list:
    return [row.get(column) if isinstance(row, dict) else None for row in rows]


def _lost_its_numbers(feature) -> bool:
    """Whether `datasets` read a JSON column without its numbers as written: floats (pyarrow makes a
    column of ints and one 2.5 all floats, and an integer past 64 bits a float), or a `Json` column
    (numbers mixed with text, decoded as Python's floats: 2.50 -> 2.5, 1e3 -> 1000.0, -0.0 -> 0.0)."""
    return str(getattr(feature, "dtype", "")).startswith("float") or is_json_column(feature)


def is_json_column(feature) -> bool:
    """A column `datasets` (5 and later) read as JSON values: one of mixed types."""
    import datasets

    json_feature = getattr(datasets, "Json", None)
    return json_feature is not None and isinstance(feature, json_feature)


def read_local(path_text: str, literal_columns: tuple[str, ...] = (), written_columns: tuple[str, ...] = ()):
    """A local json/jsonl(.gz)/parquet file as a `datasets.Dataset`, with one-line errors.

    `literal_columns` of a JSON file whose numbers `datasets` did not keep as written (`_lost_its_numbers`)
    are text columns holding each number as the file writes it, other values as `str` makes them
    (`true` -> "True", as in a column of only `true`/`false`): a gold answer 12 stays "12", not "12.0",
    which no reward would match. `written_columns` that lost their numbers keep their type and get
    such a text copy beside them, `WRITTEN` + name (what a prompt is filled from). A column with a list
    or object in it stays as read."""
    path = Path(path_text).expanduser()
    if path.is_dir():
        raise DataError(f"dataset file {path} is a directory: name one file (a mixture of files: dataset.mixer)")
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}" + (" (a glob is not expanded: name one file)" if "*" in str(path) else ""))
    if path.suffix.lower() in (".csv", ".tsv"):
        raise DataError(f"dataset file {path}: rlvr reads JSON lines, JSON or parquet files, not {path.suffix}: convert it")
    kind = "parquet" if is_parquet(path) else "json"
    if kind == "json":
        try:
            bad = _compression_unread(path) or _first_bad_utf8(path)
        except (EOFError, OSError, zlib.error) as exc:  # a .gz file cut short or not gzip
            bad = f"{type(exc).__name__}: {exc}"
        if bad:
            raise DataError(f"cannot read dataset file {path}: {bad}")
    ds = _load_quietly(path, kind)
    return _as_the_file_writes_it(ds, path, literal_columns, written_columns) if kind == "json" else ds


def _load_quietly(path: Path, kind: str):
    """`datasets.load_dataset(kind)` of one file, a malformed one a DataError naming its first bad row."""
    import datasets

    # datasets' reader logs its own error for a malformed file (JSON: naming pyarrow's row; parquet: "Failed
    # to read schema"), which its handler and the root logger's both print; the one line below says it instead
    reader_log = logging.getLogger(f"datasets.packaged_modules.{kind}.{kind}")
    level = reader_log.level
    reader_log.setLevel(logging.CRITICAL)
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises several types for a malformed file
        detail = _first_bad_json_row(path) if kind == "json" else _no_parquet_rows(path)
        ds = None if detail or kind != "json" else _read_without_blank_lines(path)
        if ds is None:
            cause = exc.__cause__ or exc  # "An error occurred while generating the dataset" wraps pyarrow's
            if not detail and str(cause).startswith(("Value is too big", "Value is too small")):  # pandas' reader, at a byte offset
                detail = _first_huge_integer(path)
            detail = detail or next(iter(str(cause).splitlines()), type(cause).__name__)
            raise DataError(f"cannot read dataset file {path}: {detail}") from exc
    finally:
        reader_log.setLevel(level)
    return ds


def _as_the_file_writes_it(ds, path: Path, literal_columns: tuple[str, ...], written_columns: tuple[str, ...] = ()):
    """`ds` read from JSON file `path`, its `literal_columns` and JSON-typed columns as the file writes
    them, and a copy so written of its `written_columns` (read_local's contract)."""
    import datasets

    parsed: dict = {}  # parse -> the file's rows: the file is read and parsed at most once each way

    def file_column(column: str, parse=json_with_literal_numbers) -> list:
        if parse not in parsed:
            parsed[parse] = _file_rows(path, parse)
        return _column(parsed[parse], column)

    for column, copy in [(c, False) for c in literal_columns] + [(c, True) for c in written_columns]:
        if column in ds.column_names and _lost_its_numbers(ds.features[column]):
            try:
                values = file_column(column)
            except ValueError:  # a layout datasets reads and this does not: pyarrow's values stay
                continue
            if len(values) == len(ds) and not any(isinstance(value, (list, dict)) for value in values):
                texts = [None if value is None else str(value) for value in values]
                ds = ds if copy else ds.remove_columns(column)
                ds = ds.add_column(WRITTEN + column if copy else column, texts, feature=datasets.Value("string"))
    for column in ds.column_names:
        if is_json_column(ds.features[column]):
            # datasets stores such a column's strings that read as JSON as that JSON: a chosen "2"
            # beside message lists came back as the int 2. The file's own values instead.
            try:
                values = file_column(column, parse=json.loads)
            except ValueError:
                continue
            if len(values) == len(ds):
                ds = ds.remove_columns(column).add_column(column, [json.dumps(v) for v in values], feature=type(ds.features[column])())
    return ds


def _read_without_blank_lines(path: Path):
    """A JSON-lines file with blank lines read from a copy without them, else None: `datasets` reads a
    file whose column mixes numbers and text through pandas, which refuses blank lines."""
    import tempfile

    import datasets

    with open_maybe_gzipped(path) as handle:
        lines = handle.read().decode("utf-8-sig").split("\n")
    if lines[0].lstrip().startswith("[") or all(line.strip() for line in lines[:-1]):
        return None
    with tempfile.TemporaryDirectory(prefix="rlvr-rows-") as directory:
        copy = Path(directory) / "rows.jsonl"
        copy.write_text("\n".join(line for line in lines if line.strip()) + "\n", encoding="utf-8")
        try:
            return datasets.load_dataset("json", data_files=str(copy), split="train")  # kept in datasets' cache
        except Exception:  # the one-line error names the original file
            return None


def read_hub(name: str, subset: str | None, split: str):
    import datasets

    if is_offline():
        hint = "pass a local file (dataset.source=/path/to/train.jsonl) or go online (unset HF_HUB_OFFLINE)"
    else:
        hint = "check the name, or pass a local file (dataset.source=/path/to/train.jsonl)"
    try:
        return datasets.load_dataset(name, subset, split=split)
    except Exception as exc:  # offline, unknown name, or no network: all one message for the user
        raise DataError(f"cannot load Hub dataset '{name}' split '{split}' ({type(exc).__name__}); {hint}") from exc


def read_builtin(name: str, arguments: dict[str, Any], seed: int):
    """The splits of built-in generator `name`, drawn with `arguments` (`dataset.generator`) and `seed`
    (`dataset.shuffle_seed`: the run's seed leaves the data as it is, so runs of other seeds are
    trained and evaluated on the same prompts)."""
    import datasets

    from rlvr.data import arithmetic, humaneval

    generators = {"arithmetic": arithmetic.generate, "preferences": arithmetic.generate_preferences, "humaneval": humaneval.generate}
    if name not in generators:
        raise DataError(f"unknown built-in dataset 'builtin:{name}' (known: {', '.join(sorted(generators))})")
    if "seed" in arguments:
        raise DataError(f"dataset.generator.seed: builtin:{name} draws its rows with dataset.shuffle_seed (set that)")
    try:
        splits = generators[name](seed=seed, **arguments)
    except (TypeError, ValueError) as exc:
        raise DataError(f"dataset.generator for builtin:{name}: {exc}") from exc
    return {split: datasets.Dataset.from_list(rows) for split, rows in splits.items()}


def _not_a_text_prompt(value: list | dict, column: str) -> str:
    """Why a list or dict in the prompt column (no `prompt_template`) is refused: its `str` would be the prompt."""
    from rlvr.rewards.answers import short

    found = f"the prompt {short(value)} in column '{column}' is a {type(value).__name__}, not text"
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        return (
            f"{found}: rlvr takes a text prompt column, not chat messages (TRL's conversational format); "
            f"dataset.chat=true builds the messages from the text"
        )
    return f"{found}: name a text column (dataset.prompt_column) or build the prompt with dataset.prompt_template"


def prompt_columns(cfg) -> tuple[str, ...]:
    """The columns a row's prompt is made of: those `prompt_template` names (`{a}`, `{a:.2f}`,
    `{row[key]}`: row), or without one the prompt column. A field that names no column (`{}`, a JSON
    example's `{"answer": 1}`) is left to the template's own error (`template_error`)."""
    if cfg.prompt_template is None:
        return (cfg.prompt_column,)
    try:
        fields = [re.split(r"[.\[]", name)[0] for _, name, _, _ in string.Formatter().parse(cfg.prompt_template) if name]
    except ValueError:  # an unmatched brace: each row's formatting says so
        return ()
    return tuple(dict.fromkeys(field for field in fields if field.isidentifier()))


def wrapped_rows(ds) -> str:
    """For a missing column's error: where `ds` is one row whose column holds a list of objects (a file
    such as {"data": [{...}, ...]}, which a JSON reader takes as one row), what to write instead; else ""."""
    if len(ds) != 1:
        return ""
    row = ds[0]
    column = next((c for c, v in row.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)), None)
    if column is None:
        return ""
    return (
        f": the file is one object whose '{column}' holds {len(row[column])} rows; "
        "write the rows as JSON lines (one object per line) or as a JSON array of objects"
    )


def _check_columns(ds, cfg, where: str, label, required: Sequence[str]) -> None:
    """Each column the prompt, the gold and the rewards (`required`) read holds a value in every row:
    not null (a JSON row without the key), and outside a template not blank (a template's field may
    be empty text: "{context}{question}")."""
    from rlvr.rewards.answers import not_one_answer
    from rlvr.rewards.checks import check_reward_columns

    check_reward_columns(ds.column_names, cfg.answer_column, "dataset.answer_column", where)
    columns = prompt_columns(cfg)
    fields = set(columns if cfg.prompt_template is not None else ()) - {cfg.answer_column, *required}
    for column in dict.fromkeys((*columns, cfg.answer_column, *required)):
        if column not in ds.column_names:
            named = " (dataset.prompt_template names it)" if column in fields else ""
            shown = ", ".join(c for c in ds.column_names if not c.startswith(WRITTEN))
            raise DataError(f"{where} has no column '{column}'{named} (columns: {shown}){wrapped_rows(ds)}")
        for index, value in enumerate(ds[column]):
            if value is None or (column not in fields and isinstance(value, str) and not value.strip()):
                named = " (dataset.prompt_template names it: it would read 'None')" if column in fields else ""
                raise DataError(f"{where} {label(index)} has no value in column '{column}'{named}")
            if column == cfg.prompt_column and cfg.prompt_template is None and isinstance(value, (list, dict)):
                raise DataError(f"{where} {label(index)}: {_not_a_text_prompt(value, column)}")
            if column == cfg.answer_column and isinstance(value, (list, dict)):
                raise DataError(f"{where} {label(index)}: {not_one_answer(value, column)}")


class WrittenNumber(str):
    """A number as the file writes it ("2.50"): a template's `{price}` fills it in so; a format spec
    (`{price:.2f}`) formats the number it is."""

    def __format__(self, spec: str) -> str:
        if spec:
            try:
                return format(int(self) if re.fullmatch(r"[+-]?\d+", self) else float(self), spec)
            except ValueError:  # text in a column of numbers and text
                pass
        return str.__format__(self, spec)


def format_prompt(row: dict, cfg) -> str | list[dict]:
    """A row's prompt: `prompt_template` filled from the row, or (None) the prompt column's text; a
    number as the file writes it where a JSON file's column lost it (`WRITTEN` copies)."""
    written = {key[len(WRITTEN) :]: WrittenNumber(value) for key, value in row.items() if key.startswith(WRITTEN) and value is not None}
    row = row | written
    text = str(row[cfg.prompt_column]) if cfg.prompt_template is None else cfg.prompt_template.format_map(row)
    if not cfg.chat:
        return f"{cfg.system_prompt}\n\n{text}" if cfg.system_prompt else text
    # an empty system prompt is a message too: it keeps out the one a template adds by default (Qwen2.5's)
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt is not None else []
    return messages + [{"role": "user", "content": text}]


def map_rows(ds, to_row: Callable[[dict, int], dict], **map_arguments):
    """`ds.map(to_row, with_indices=True, **map_arguments)`, handed to `datasets` a batch of rows at a
    time: the same rows and columns, errors raised at the same row, about 20 times faster (datasets'
    row-at-a-time map spends ~50 us per row around the function; its batched map has no per-row form)."""

    def to_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows = [to_row(dict(zip(batch, values)), index) for values, index in zip(zip(*batch.values()), indices)]
        return {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}

    return ds.map(to_batch, with_indices=True, batched=True, **map_arguments)


def _with_prompts(ds, cfg, where: str, label, required: Sequence[str]):
    """Rows of one source, checked (prompt, gold and the `required` columns each hold a value) and given
    `prompt`/`answer` (text) columns in the order the source holds them (before any mixing, holdout or
    limit), so that an error names the row the user wrote."""
    _check_columns(ds, cfg, where, label, required)

    def add_prompt(row: dict, index: int) -> dict:
        try:
            prompt = format_prompt(row, cfg)
        except (KeyError, IndexError, ValueError) as exc:
            raise DataError(
                f"{where} {label(index)}: dataset.prompt_template {cfg.prompt_template!r} fails: {template_error(exc)}"
            ) from exc
        return {"prompt": prompt, GOLD_TEXT: str(row[cfg.answer_column])}

    drop = [c for c in ("prompt",) if c in ds.column_names and c != cfg.prompt_column]
    written = [c for c in ds.column_names if c.startswith(WRITTEN)]  # read by format_prompt, then gone
    ds = map_rows(ds.remove_columns(drop), add_prompt, remove_columns=written, desc=f"formatting {where}")
    # the gold as text under its own name, then as `answer`: a map into the file's own `answer` column keeps its type (int, JSON)
    return ds.remove_columns([c for c in ("answer",) if c in ds.column_names]).rename_column(GOLD_TEXT, "answer")


def limit_rows(ds, where: str, limit: int | None, seed: int):
    """At most `limit` rows of `ds` (None: all), drawn with the data's `seed` where there are more; a
    DataError naming `where` when none is left."""
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit))
    if len(ds) == 0:
        raise DataError(f"{where} has no rows")
    return ds


def mix(sources: dict[str, Any], read, seed: int):
    """Concatenate sources, each cut to a fraction (<= 1.0) or a count (> 1) of its rows (checked at
    start-up: rlvr.config's `_check_mixer`)."""
    import datasets

    parts = {}
    for name, amount in sources.items():
        ds = read(name).shuffle(seed=seed)
        n = round(amount * len(ds)) if amount <= 1.0 else int(amount)
        if n > len(ds):
            raise DataError(f"dataset.mixer['{name}'] asks for {n} rows; it has {len(ds)}")
        if n == 0:
            raise DataError(f"dataset.mixer['{name}']={amount} of its {len(ds)} rows rounds to none: ask for more, or leave it out")
        parts[name] = ds.select(range(n))
    return datasets.concatenate_datasets(aligned(parts))


def aligned(parts: dict[str, Any]) -> list:
    """The sources of a mixture with the columns they all have, a column that is text in one and a
    number in another (or parquet's large_string beside JSON's string) as text in all, and one that
    holds nothing in a source (nulls, empty lists: Arrow's null type) as the others' kind: what
    `concatenate_datasets` takes. Columns of other kinds that differ (chat messages beside plain
    text) are a DataError naming the two sources."""
    import datasets

    shared = [c for c in next(iter(parts.values())).column_names if all(c in part.column_names for part in parts.values())]
    parts = {name: part.select_columns(shared) for name, part in parts.items()}
    for column in shared:
        kinds = {name: part.features[column] for name, part in parts.items()}
        if len(held := {repr(kind): kind for kind in kinds.values() if not holds_nothing(kind)}) == 1:  # one kind holds values
            [kind] = held.values()
            parts = {name: part if repr(part.features[column]) in held else part.cast_column(column, kind) for name, part in parts.items()}
            continue
        if len({repr(kind) for kind in kinds.values()}) == 1:
            continue
        if not all(isinstance(kind, datasets.Value) for kind in kinds.values()):
            first, kind = next(iter(kinds.items()))
            other, other_kind = next((name, k) for name, k in kinds.items() if repr(k) != repr(kind))
            raise DataError(f"dataset.mixer: column '{column}' is {kind} in '{first}' and {other_kind} in '{other}': make them one kind")
        parts = {name: part.cast_column(column, datasets.Value("string")) for name, part in parts.items()}
    return list(parts.values())


def holds_nothing(kind) -> bool:
    """Whether a column of this kind holds no value: Arrow's null type, alone or as a list's items (every
    row None, or an empty list: a preference source without prompts)."""
    import datasets

    while isinstance(kind, datasets.List):
        kind = kind.feature
    return isinstance(kind, datasets.Value) and kind.dtype == "null"


def _row_index(index: int) -> str:
    return f"row {index}"


def read_source(source: str, cfg, split: str, prepare=None, written: tuple[str, ...] = ()):
    """One local file or Hub split; `prepare(ds, where, label)`, if given, runs on it as read; the
    `written` columns with a copy of their numbers as written (`read_local`)."""
    if is_local(source):
        ds = read_local(source, literal_columns=(cfg.answer_column,), written_columns=written)
        where, label = f"dataset file {source}", _row_labeller(Path(source).expanduser(), len(ds))
    else:
        ds = read_hub(source, cfg.subset, split)
        where, label = f"Hub dataset '{source}' split '{split}'", _row_index
    return ds if prepare is None else prepare(ds, where, label)


def _holdout(train, cfg, where: str):
    if cfg.eval_holdout <= 0:
        return train, None
    if cfg.eval_holdout >= len(train):
        raise DataError(f"dataset.eval_holdout={cfg.eval_holdout} leaves no training rows in {where} ({len(train)} rows)")
    parts = train.train_test_split(test_size=cfg.eval_holdout, seed=cfg.shuffle_seed)
    return parts["train"], parts["test"]


def _builtin_splits(source: str, cfg, prepare=None) -> dict:
    """The splits of the built-in generator `source` names (builtin:NAME), each prepared as read."""
    splits = read_builtin(source.split(":", 1)[1], dict(cfg.generator), cfg.shuffle_seed)
    return splits if prepare is None else {split: prepare(ds, f"{source} split '{split}'", _row_index) for split, ds in splits.items()}


def read_splits(cfg, prepare=None, written: tuple[str, ...] = ()):
    """(train, eval) Datasets from `source` (or `mixer`), `eval_source`/`eval_split` or a holdout.

    `prepare(ds, where, label)` runs on each source as read, before mixing and holdout shuffle it;
    `written` as `read_source` takes it.
    """
    source = cfg.source
    builtin = source.startswith("builtin:") and not cfg.mixer
    if builtin:
        splits = _builtin_splits(source, cfg, prepare)
        train = splits["train"]
    elif cfg.mixer:
        train = mix(dict(cfg.mixer), lambda name: read_source(name, cfg, cfg.train_split, prepare, written), cfg.shuffle_seed)
    else:
        train = read_source(source, cfg, cfg.train_split, prepare, written)
    if cfg.eval_source and cfg.eval_source.startswith("builtin:"):  # a generator's eval rows, whatever the source
        return train, _builtin_splits(cfg.eval_source, cfg, prepare).get("test")
    if cfg.eval_source:  # the user's own eval rows, whatever the source (a generator's tasks too)
        return train, read_source(cfg.eval_source, cfg, cfg.eval_split or "test", prepare, written)
    if builtin:
        return train, splits.get("test")
    if cfg.eval_split and not cfg.mixer and not is_local(source):  # the Hub dataset's own eval split
        return train, read_source(source, cfg, cfg.eval_split, prepare, written)
    return _holdout(train, cfg, "the mixture" if cfg.mixer else source)


def load_prompt_datasets(cfg, required: Sequence[str] = ()):
    """(train, eval) Datasets for the `dataset` config, each row with a value in every `required` column
    (what the rewards need: `rewards.checks.required_columns`); eval is None when there is no eval data. Eval
    prompts that are also training prompts are counted in a warning (not for a built-in generator,
    whose small task space repeats by design)."""
    prepare = lambda ds, where, label: _with_prompts(ds, cfg, where, label, required)  # noqa: E731
    train, evaluation = read_splits(cfg, prepare, written=prompt_columns(cfg))  # the prompt's numbers as the file writes them
    train = limit_rows(train, f"dataset '{cfg.name}' ({cfg.source})", cfg.max_train_samples, cfg.shuffle_seed)
    if evaluation is not None:
        where = f"eval data of '{cfg.name}' ({cfg.eval_source or cfg.source})"
        evaluation = limit_rows(evaluation, where, cfg.max_eval_samples, cfg.shuffle_seed)
        if not cfg.source.startswith("builtin:") and (seen := _shared_prompts(train, evaluation)):
            logging.getLogger(__name__).warning(
                "%d of the %d eval prompts of %s are also training prompts: the eval measures recall of them too",
                seen,
                len(evaluation),
                where,
            )
    return train, evaluation


def _shared_prompts(train, evaluation) -> int:
    """How many eval rows have a prompt some training row has."""
    trained = {str(prompt) for prompt in train["prompt"]}
    return sum(str(prompt) in trained for prompt in evaluation["prompt"])
