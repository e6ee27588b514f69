"""Preference pairs for reward-model training, in TRL's explicit-prompt conversational format.

Accepted rows: TRL's format (`chosen`/`rejected` message lists, optional `prompt`), raw Anthropic HH
transcripts ("\\n\\nHuman: … \\n\\nAssistant: …"), or plain strings (prompt + chosen + rejected).
All become {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from rlvr.errors import DataError

log = logging.getLogger(__name__)
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
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
    if isinstance(value, list):
        return [dict(m) for m in value]
    if isinstance(value, str) and HH_TURN.match(value):
        return parse_hh(value)
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    raise ValueError(f"expected a string or a list of messages, got {type(value).__name__}")


def to_pair(row: dict, chosen_column: str, rejected_column: str, prompt_column: str | None) -> dict:
    """One row in any accepted format -> {"prompt", "chosen", "rejected"} message lists."""
    chosen = _as_messages(row[chosen_column], "assistant")
    rejected = _as_messages(row[rejected_column], "assistant")
    prompt = _as_messages(row[prompt_column], "user") if prompt_column and row.get(prompt_column) is not None else []
    if not prompt:
        prompt, chosen, rejected = split_shared_prompt(chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def convert(ds, pref, where: str):
    """Rows in any accepted format -> pairs; identical pairs carry no signal and are dropped (counted)."""
    for column in (pref.chosen_column, pref.rejected_column):
        if column not in ds.column_names:
            raise DataError(f"{where} has no column '{column}' (columns: {', '.join(ds.column_names)})")

    def convert_row(row: dict, index: int) -> dict:
        try:
            return to_pair(row, pref.chosen_column, pref.rejected_column, pref.prompt_column)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{where} row {index}: {exc}") from exc

    pairs = ds.map(convert_row, with_indices=True, remove_columns=ds.column_names)
    distinct = pairs.filter(lambda row: row["chosen"] != row["rejected"])
    return distinct, len(pairs) - len(distinct)


@dataclass
class FilterCounts:
    """How many pairs each filter dropped, reported in metrics.json."""

    kept: int = 0
    dropped_identical: int = 0
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
