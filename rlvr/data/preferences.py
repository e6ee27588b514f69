"""Preference pairs for reward-model training, in TRL's explicit-prompt conversational format.

Accepted rows: TRL's format (`chosen`/`rejected` message lists, optional `prompt`), raw Anthropic HH
transcripts ("\\n\\nHuman: … \\n\\nAssistant: …"), or plain strings (prompt + chosen + rejected).
All become {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

from rlvr.data.loading import map_rows, wrapped_rows
from rlvr.errors import DataError
from rlvr.rewards.answers import short

log = logging.getLogger(__name__)
HH_TURN = re.compile(r"\n\n(Human|Assistant):(?: |$)")  # a turn left empty at the end may have lost its space
ROLES = {"Human": "user", "Assistant": "assistant"}

# Chat templates by name, as open-instruct writes them ("tokenizer" keeps the tokenizer's own): the last
# message ends with the tokenizer's eos token (when it has one), so the reward is read at EOS.
_EOS_AFTER_LAST = "{% if loop.last and not add_generation_prompt %}{{ eos_token }}{% endif %}"
CHAT_TEMPLATES = {
    "simple_concat_with_space": "{% for m in messages %}{{ ' ' if not loop.first else '' }}{{ m['content'] }}"
    + _EOS_AFTER_LAST
    + "{% endfor %}",
    "simple_chat": (
        "{% for m in messages %}{{ '\n\n' if not loop.first else '' }}"
        "{{ m['role'].capitalize() + ': ' + m['content'] }}" + _EOS_AFTER_LAST + "{% endfor %}"
        "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
    ),
}


def parse_hh(transcript: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{'role': 'user', 'content': 'a'}, {'role': 'assistant', ...}]."""
    parts = HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("not an HH transcript (expected '\\n\\nHuman: … \\n\\nAssistant: …')")
    messages = [{"role": ROLES[speaker], "content": text.strip()} for speaker, text in zip(parts[1::2], parts[2::2])]
    if messages[-1]["role"] != "assistant":
        raise ValueError("HH transcript does not end with an Assistant turn")
    return messages


def split_shared_prompt(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen tail, rejected tail): the longest shared prefix of turns is the prompt."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _as_messages(value: Any, role: str) -> list[dict]:
    """A list of {role, content} string dicts (copied), an HH transcript, or a string (one `role` message)."""
    if isinstance(value, list):
        for index, message in enumerate(value):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)):
                raise ValueError(f"message {index} is not a dict with string 'role' and 'content': {short(message)}")
        return [dict(m) for m in value]
    if isinstance(value, str) and HH_TURN.match(value):
        return parse_hh(value)
    if isinstance(value, str) and value.lstrip().startswith("Human: ") and "Assistant" in HH_TURN.findall(value):
        return parse_hh("\n\n" + value.lstrip())  # a transcript whose leading blank lines were stripped
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    raise ValueError(f"expected a string or a list of messages, got {type(value).__name__}")


def _messages_of(row: dict, column: str, role: str) -> list[dict]:
    try:
        return _as_messages(row[column], role)
    except ValueError as exc:
        raise ValueError(f"column '{column}': {exc}") from exc


def to_pair(row: dict, chosen_column: str, rejected_column: str, prompt_column: str | None) -> dict:
    """One row in any accepted format -> {"prompt", "chosen", "rejected"} message lists; without a
    prompt (no `prompt_column`, a null value or an empty list) the turns chosen and rejected share are
    the prompt. A ValueError names the column at fault."""
    chosen = _messages_of(row, chosen_column, "assistant")
    rejected = _messages_of(row, rejected_column, "assistant")
    prompt = _messages_of(row, prompt_column, "user") if prompt_column and row[prompt_column] is not None else []
    if not prompt:
        prompt, chosen, rejected = split_shared_prompt(chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def convert(ds, pref, where: str, label: Callable[[int], str]):
    """Every row of one source, in its order, in any accepted format -> a pair; errors name
    `where` and `label(index)` (a file's `line N`) and the column. Degenerate pairs are kept: see
    `drop_degenerate`."""
    for column in (pref.chosen_column, pref.rejected_column, *([pref.prompt_column] if pref.prompt_column else [])):
        if column not in ds.column_names:
            raise DataError(f"{where} has no column '{column}' (columns: {', '.join(ds.column_names)}){wrapped_rows(ds)}")

    def convert_row(row: dict, index: int) -> dict:
        try:
            return to_pair(row, pref.chosen_column, pref.rejected_column, pref.prompt_column)
        except ValueError as exc:
            raise DataError(f"{where} {label(index)}: {exc}") from exc

    return map_rows(ds, convert_row, remove_columns=ds.column_names, desc=f"reading pairs of {where}")


def _blank(messages: list[dict]) -> bool:
    return not any(m["content"].strip() for m in messages)


def drop_degenerate(ds) -> tuple[Any, dict[str, int]]:
    """(pairs, {"identical", "empty", "different_prompts": count}): pairs that carry no preference
    between two answers are dropped, and counted: chosen == rejected; a blank chosen or rejected answer
    (no message, or only whitespace); and sides that part before the answer (chosen or rejected, after
    the prompt, starts with another turn than the assistant's: transcripts of two different questions,
    or a transcript against a bare answer), which would teach the model to score the questions."""
    dropped = {"identical": 0, "empty": 0, "different_prompts": 0}
    keep = []
    for index, (chosen, rejected) in enumerate(zip(ds["chosen"], ds["rejected"])):
        if chosen == rejected:
            dropped["identical"] += 1
        elif _blank(chosen) or _blank(rejected):
            dropped["empty"] += 1
        elif chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
            dropped["different_prompts"] += 1
        else:
            keep.append(index)
    return ds.select(keep), dropped


def as_whole_conversations(ds):
    """The pairs as TRL's reward trainer tokenizes an explicit prompt (prompt + chosen, prompt + rejected),
    handed to it so, without a `prompt` column: its format check (trl.data_utils.is_conversational) reads
    the first message of one key drawn from a set, and where the prompt was empty (plain strings whose
    sides share no turn) it failed with an IndexError in about one run of two, as Python's hash seed fell.
    Remove when is_conversational skips an empty value (TRL 1.16)."""
    return map_rows(
        ds, lambda row, _: {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}, remove_columns=["prompt"]
    )


@dataclass
class FilterCounts:
    """How many pairs each filter dropped, reported in metrics.json."""

    kept: int = 0
    dropped_identical: int = 0
    dropped_empty: int = 0
    dropped_different_prompts: int = 0
    dropped_too_long: int = 0
    dropped_prompt_too_long: int = 0


def length_filter(ds, tokenizer, max_token_length: int | None, max_prompt_token_length: int | None):
    """Drop pairs whose prompt, or prompt + either answer, exceeds the limits; returns (ds, counts)."""
    counts = FilterCounts()
    if max_token_length is None and max_prompt_token_length is None:
        counts.kept = len(ds)
        return ds, counts

    def length(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    keep = []
    for i, row in enumerate(ds):
        if max_prompt_token_length is not None and row["prompt"] and length(row["prompt"]) > max_prompt_token_length:
            counts.dropped_prompt_too_long += 1
        elif (
            max_token_length is not None
            and max(length(row["prompt"] + row["chosen"]), length(row["prompt"] + row["rejected"])) > max_token_length
        ):
            counts.dropped_too_long += 1
        else:
            keep.append(i)
    counts.kept = len(keep)
    return ds.select(keep), counts
