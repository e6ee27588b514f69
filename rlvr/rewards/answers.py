"""Gold answers and numbers as they appear in text: extraction and normalisation."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from rlvr.errors import DataError

# Bounded lengths keep every match linear on adversarial input (a 1 MB run of digits included). A minus
# sign (or U+2212) right after a digit is a range or a difference ("3-5 days"), not the number's sign.
# A comma only between groups of three digits: "1,000" is 1000, "1,2,3" the numbers 1, 2 and 3. A run of
# more digits than the bounds (31 before the point, 20 after) is no number, nor any part of it ("1000...0004"
# is not 4, "4.000...0001" not 4).
NUMBER = re.compile(r"(?:(?<!\d)[-\u2212])?(?<!\d)(?<!\d\.)(?:\d{1,3}(?:,\d{3}){1,10}(?!\d)|\d{1,31}(?!\d))(?:\.\d{1,20}(?!\d))?(?!\.?\d)")
THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
FINAL_LINE = re.compile(r"^\s*Final:\s*(?P<value>\S.{0,60}?)\s*$")
LINE = re.compile(r"[^\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")  # a line between str.splitlines' breaks


def last_line(text: str) -> re.Match | None:
    """The last line of `text` that is not all whitespace (None: there is none), as a match: its
    `start()`/`end()` are its place in `text`. Lines end where str.splitlines ends them (\\r too)."""
    last = None
    for line in LINE.finditer(text):
        if not line.group().isspace():
            last = line
    return last


def not_one_answer(gold: Any, column: str | None = None) -> str:
    """Why a gold answer that is a list or a dict is refused (which of its parts is the answer is not
    rlvr's to guess), for an error line; `column`: the column it was read from."""
    where = f" in column '{column}'" if column else ""
    kind = type(gold).__name__
    return f"the gold answer {short(gold)}{where} is a {kind}, not one value: give each row a single answer (a string or a number)"


def gold_answer(raw: Any) -> str | None:
    """The gold answer of an `answer` cell as written: the part after the last '####' (GSM8K), else the cell.

    Commas stay: they separate the parts of tuples, intervals and sets ("(1,2)" is not "12"). Each
    verifier normalises the text its own way (`normalize_number` drops thousands separators).
    A list or dict is refused: which of its parts is the answer is not rlvr's to guess.
    """
    if raw is None:
        return None
    if isinstance(raw, (list, tuple, dict, set)):
        raise DataError(not_one_answer(raw))
    text = str(raw)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip() or None


def short(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters, for one-line messages about bad values."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalize_number(text: str) -> str | None:
    """Canonical decimal form of a number written as text ("1,000.50" -> "1000.5", "\u22125" -> "-5",
    a gold written by JSON as "1e3" -> "1000"), or None (also for commas that group no thousands: "1,8").
    Digits of other scripts are read as the digits they are ("\uff14\uff12", "\u0664\u0662" -> "42"), as `\\d` finds them."""
    cleaned = text.strip().replace("\u2212", "-").rstrip(".")
    if not cleaned.isascii():
        cleaned = "".join(str(digit) if (digit := unicodedata.decimal(c, None)) is not None else c for c in cleaned)
    if cleaned.startswith("$"):
        cleaned = cleaned[1:]
    if "," in cleaned:
        if not THOUSANDS.fullmatch(cleaned):
            return None
        cleaned = cleaned.replace(",", "")
    written = re.fullmatch(r"-?\d{1,40}(?:\.\d{1,20})?(?P<exponent>[eE][-+]?\d{1,2})?", cleaned)
    if written is None:
        return None
    if written["exponent"]:
        from decimal import Decimal

        cleaned = format(Decimal(cleaned), "f")
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".")
    if cleaned in ("-0", ""):
        cleaned = "0"
    sign = "-" if cleaned.startswith("-") else ""
    digits = cleaned.lstrip("-").lstrip("0") or "0"
    if digits.startswith("."):
        digits = "0" + digits
    return sign + digits


LONGEST_NUMBER = 80  # characters: more than any match of NUMBER spans


def last_number(text: str) -> str | None:
    """The last number in `text`, or None. Reads windows from the end, each 4 times the last, so that a
    huge completion whose answer comes last costs little; a window's last number that starts so near
    its edge that it may be the end of a longer one (`12,345` cut to `345`) is read in the next."""
    size = 4096
    while True:
        begin = max(0, len(text) - size)
        numbers = list(NUMBER.finditer(text, begin))  # its lookbehinds see the text before `begin`
        last = numbers[-1] if numbers else None
        if begin == 0 or (last is not None and last.start() >= begin + LONGEST_NUMBER):
            return last.group() if last else None
        size *= 4


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a plain string, or the content of the last chat message (content given as
    parts, as multimodal messages give it: the text of its text parts, in order)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text")
        return str(content)
    return str(completion)
