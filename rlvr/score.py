"""Score a JSONL of completions with a reward preset, without a model:

    python -m rlvr.score reward=gsm8k_strict input=rows.jsonl [output=scored.jsonl]

Each row needs `completion` and the gold column (`answer`: a value, or a GSM8K solution ending
'#### n'); `prompt` and other columns are passed to the reward functions as in training. Writes
each row back with `reward`, `rewards` (per function), `reasons`, `prediction` and `correct` (the first
reward that judges correctness; None if none does), and prints a summary. An eval row's `samples` are
left out (they are not scored: score them as rows of their own).

A line that is not UTF-8 stops the run with one error line naming it. A lone surrogate (JSON allows
"\\ud800"; UTF-8 cannot encode it) is kept: the row is written with the same escape, the run goes
on. The output appears whole or not at all: a failed run leaves no file, or the previous one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rlvr.config import ScoreConfig, check_ranges, conf_dir, exit_on_unknown_keys, one_line_preset_errors, register_schemas
from rlvr.data.loading import WrittenNumber, json_error, json_with_literal_numbers, open_maybe_gzipped
from rlvr.errors import ConfigError, DataError, RlvrError
from rlvr.rewards.answers import not_one_answer
from rlvr.rewards.base import mean_reward, verdicts, weighted_total
from rlvr.rewards.checks import ROW_FIELDS, check_reward_columns, check_reward_parameters, warn_unreadable_golds
from rlvr.tracking.outputs import UNPAIRED_AS_ESCAPE, json_text

CONF_DIR = conf_dir()
register_schemas()


def read_rows(path: Path, completion_column: str, answer_column: str = "answer", needs_gold: bool = True) -> list[dict]:
    """The rows of a JSONL file (gzipped where its name ends in .gz). Gold answers as training reads them:
    numbers as the file writes them ("12", not 12), and, for rewards that `needs_gold`, a row without one
    where other rows have one refused naming its line."""
    if not path.is_file():
        raise DataError(f"input {path}: {'a directory, not a JSONL file' if path.is_dir() else 'file not found'}")
    rows, no_gold = [], []
    for number, raw in numbered_lines(path):  # bytes, decoded line by line, so a decoding error names its line
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a leading BOM, as training reads it
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}: {exc.reason})"
            ) from exc
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not JSON ({json_error(exc)})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: {json.dumps(row)[:60]} is not an object of fields ({{...}})")
        if completion_column not in row:
            raise DataError(f"{path} line {number}: no '{completion_column}' field")
        if not is_completion(completion := row[completion_column]):
            raise DataError(
                f"{path} line {number}: '{completion_column}' is {json.dumps(completion)[:60]}, not a completion "
                "(the model's text, or a list of chat messages with 'content')"
            )
        gold = row.get(answer_column)
        if isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold):  # NaN, Infinity: golds no reward reads
            row[answer_column] = WrittenNumber(json_with_literal_numbers(line)[answer_column])  # scored as written, output as read
        elif needs_gold and isinstance(gold, (list, dict)):
            raise DataError(f"{path} line {number}: {not_one_answer(gold, answer_column)}")
        elif gold is None or (isinstance(gold, str) and not gold.strip()):
            no_gold.append(number)
        rows.append(row)
    if not rows:
        raise DataError(f"{path} has no rows")
    if needs_gold and no_gold and len(no_gold) < len(rows):
        raise DataError(f"{path} line {no_gold[0]} has no value in column '{answer_column}'")
    if needs_gold and len(no_gold) == len(rows) and any(answer_column in row for row in rows):  # each row scored "missing"
        raise DataError(f"{path}: column '{answer_column}' has no value in any row")
    return rows


def numbered_lines(path: Path):
    """(number from 1, bytes) of each line of `path`; a file that cannot be read (a corrupt .gz) is one line."""
    import zlib

    try:
        with open_maybe_gzipped(path) as handle:
            yield from enumerate(handle, start=1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"input {path} cannot be read: {exc}") from exc


def is_completion(value) -> bool:
    """Text, or chat messages (a list of {"role", "content"}), as TRL passes completions to rewards."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value))


def score_rows(rows: list[dict], rewards, completion_column: str, answer_column: str) -> list[dict]:
    """Rows with reward, per-function rewards, reasons, the first extracted prediction and `correct` (the
    first reward that judged the row's correctness; None if none did) set; an eval row's `samples` and `judge`,
    which this scoring does not make, left out."""
    if answer_column == completion_column:
        raise DataError(
            f"completion_column={completion_column} and answer_column={answer_column} name the same column: "
            "answer_column names the gold answers' column"
        )
    arguments = reward_arguments(rows, rewards, completion_column, answer_column)
    check_reward_parameters(rewards, [k for k in arguments if k not in ("prompts", "completions")], "the input")
    warn_unreadable_golds(rewards, arguments.get("answer", []), "the input")
    values = {rw.name: rw.fn(**arguments) for rw in rewards}
    judged_by = verdicts(rewards, len(rows))
    if any("samples" in row for row in rows):
        print("rlvr.score: the rows' `samples` (an eval's sampled completions) are not scored: left out of the output", file=sys.stderr)
    scored = []
    for i, row in enumerate(rows):
        outcomes = {rw.name: rw.fn.last_outcomes[i] for rw in rewards if getattr(rw.fn, "last_outcomes", None)}
        prediction = next((o.prediction for o in outcomes.values() if o.prediction is not None), None)
        scored.append(
            {
                **{k: json.loads(v) if isinstance(v, WrittenNumber) else v for k, v in row.items() if k not in ("samples", "judge")},
                "reward": weighted_total(rewards, {name: v[i] for name, v in values.items()}),
                "rewards": {name: v[i] for name, v in values.items()},
                "reasons": {name: o.reason for name, o in outcomes.items()},
                "prediction": prediction,
                "correct": judged_by[i][1].correct if judged_by[i] else None,  # None: no reward judged it
            }
        )
    return scored


def reward_arguments(rows: list[dict], rewards, completion_column: str, answer_column: str) -> dict:
    """What the rewards are called with for `rows`, as in training: prompts, completions and the other
    columns, the gold column as `answer`; not the fields rlvr wrote in a run's rows (ROW_FIELDS: an
    fgrpo row's `correct` would set answer_spans's own `correct`)."""
    completions = [r[completion_column] for r in rows]  # `is_completion`: the rewards read either form
    columns = {k: [r.get(k) for r in rows] for k in set().union(*rows) - {completion_column, "prompt", *ROW_FIELDS}}
    if answer_column not in columns and answer_column != "answer":
        present = ", ".join(sorted(set().union(*rows)))
        raise DataError(f"answer_column={answer_column}: the input has no such column (its columns: {present})")
    check_reward_columns(columns, answer_column, "answer_column", "the input")
    if answer_column in columns:
        columns["answer"] = columns.pop(answer_column)
    if "answer" not in columns and (needing := [rw.name for rw in rewards if getattr(rw.fn, "needs_gold", False)]):
        hint = " (it has a 'gold' column, as a run's rollouts.jsonl does: answer_column=gold)" if "gold" in columns else ""
        raise DataError(f"reward '{needing[0]}' needs an 'answer' column in the input{hint}")
    return {"prompts": [r.get("prompt", "") for r in rows], "completions": completions, **columns}


def is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_rows(rows: list[dict], path: Path) -> None:
    """The rows as JSONL at `path`, whole or not at all: written to a temp file beside it, then renamed
    over it, so a failure never leaves an empty or partial file; through a symlink, its target is the
    file rewritten (the link stays). A path that is there but not a regular file (/dev/stdout, /dev/null,
    a FIFO) is written into: a rename over it would put a file in its place."""
    try:
        if path.exists() and not path.is_file():
            with open(path, "w", encoding="utf-8", errors=UNPAIRED_AS_ESCAPE) as handle:
                write_lines(rows, handle)
            return
        path = Path(os.path.realpath(path))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8", errors=UNPAIRED_AS_ESCAPE) as handle:
                write_lines(rows, handle)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    except OSError as exc:
        raise DataError(f"cannot write {path} ({exc.strerror or exc})") from exc


def is_same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is not there (a missing input is named when it is read)
        return False


def write_lines(rows: list[dict], handle) -> None:
    for number, row in enumerate(rows, start=1):
        line = json_text(row) + "\n"
        if not line.isascii() and not is_utf8_encodable(line):
            print(f"rlvr.score: row {number}: a lone surrogate is written as its JSON escape (\\ud8xx)", file=sys.stderr)
        handle.write(line)


def summary(scored: list[dict]) -> str:
    """Rows and mean reward, then each reward's mean over the rows it scored (None: no verdict, counted) and its reasons."""
    n = len(scored)
    mean = mean_reward([r["reward"] for r in scored])
    lines = [f"{n} rows, mean reward {mean:.4f}" if not math.isnan(mean) else f"{n} rows, no reward gave a verdict on any"]
    for name in scored[0]["rewards"] if scored else []:
        vals = [v for r in scored if (v := r["rewards"][name]) is not None]
        reasons = Counter(r["reasons"].get(name, "-") for r in scored if r["rewards"][name] is not None)
        if len(vals) < n:
            reasons["no verdict (None)"] = n - len(vals)
        shown = f"mean {sum(vals) / len(vals):.4f}" if vals else "no verdict on any row"
        lines.append(f"  {name}: {shown}; " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    return "\n".join(lines)


def check_no_calibration_needed(functions) -> None:
    """Before anything loads: a hybrid reward without r_min and r_max is calibrated on a policy's samples
    by a run or rlvr.eval; rlvr.score has no policy, so it needs them set."""
    from rlvr.rewards.base import reward_entries, reward_target
    from rlvr.rewards.hybrid import HybridReward

    for name, entry in reward_entries(functions).items():
        if reward_target(name, entry) is HybridReward and (entry.get("r_min") is None or entry.get("r_max") is None):
            raise ConfigError(
                f"reward '{name}' needs r_min and r_max: a run calibrates them on its policy's samples, rlvr.score has no policy; "
                f"set reward.functions.{name}.r_min and r_max (a run's are in its {name}_calibration.json)"
            )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="score")
def hydra_main(cfg: DictConfig) -> None:
    from rlvr.recipes.fgrpo import adapt_rewards
    from rlvr.rewards import build_rewards
    from rlvr.rewards.checks import SpansReturned, checked_rewards

    try:
        if OmegaConf.is_missing(cfg, "input"):
            raise ConfigError("input must be set (it is ???): input=ROWS.jsonl, the rows to score")
        check_ranges(cfg)
        if cfg.output and is_same_file(Path(cfg.input), Path(cfg.output)):
            raise ConfigError(f"output={cfg.output} is the input file, which the scored rows would replace: name another output")
        check_no_calibration_needed(cfg.reward.functions)
        checks = OmegaConf.to_container(cfg.reward.checks)
        rewards = checked_rewards(build_rewards(cfg.reward.functions), checks)
        needs_gold = any(getattr(reward.fn, "needs_gold", False) for reward in rewards)
        rows = read_rows(Path(cfg.input), cfg.completion_column, cfg.answer_column, needs_gold)
        try:
            scored = score_rows(rows, rewards, cfg.completion_column, cfg.answer_column)
        except SpansReturned:  # span rewards (reward=fgrpo_spans): scored as algorithm=fgrpo sums each completion's spans
            rewards = checked_rewards(adapt_rewards(build_rewards(cfg.reward.functions)), checks)
            scored = score_rows(rows, rewards, cfg.completion_column, cfg.answer_column)
        if cfg.output:
            write_rows(scored, Path(cfg.output))
    except RlvrError as exc:
        print(f"rlvr.score: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("rlvr.score: stopped by Ctrl-C: nothing written", file=sys.stderr)
        sys.exit(130)
    print(summary(scored))


def main() -> None:
    sys.stdout.reconfigure(errors="backslashreplace")  # a reward's reason may quote a lone surrogate
    exit_on_unknown_keys("rlvr.score", sys.argv[1:], schema=ScoreConfig, groups=frozenset({"reward"}))
    one_line_preset_errors("rlvr.score", ScoreConfig)
    hydra_main()


if __name__ == "__main__":
    main()
