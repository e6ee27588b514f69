"""Code as a verifiable reward: a completion's program run against the row's unit tests in a sandbox.

A row gives the tests as its answer column, the name of the function under test in `entry_point`
and, optionally, `code_prelude`: code both the program and the tests start from (HumanEval's prompt:
imports, helpers and the function's signature). Tests are either bare `assert`s calling the entry
point by name (MBPP style) or a `check(candidate)` function (HumanEval style); each `assert` counts.

The program is taken from the completion as stated in `extract_program`. It is run as the prelude
followed by the program, so a body continuing the prompt and a whole function both work.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Sequence

from rlvr.config import Range, check_number
from rlvr.errors import ConfigError, DataError
from rlvr.rewards.answers import short
from rlvr.rewards.base import Outcome, Reward
from rlvr.rewards.code_sandbox import MAX_WORKERS, Job, Limits, Sandbox

log = logging.getLogger(__name__)

# An opening fence line (indented up to 3 spaces, as CommonMark allows): its fence, then an info string
# without backticks, whose language leads it (```python, ```{python}, ```python:solution.py). Two patterns,
# not one: a single one's overlapping repeats backtracked quadratically on a long line that ends in a backtick.
FENCE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
LANGUAGE = re.compile(r"[ \t]*\{?([^\s`{}:]*)")
# Not CommonMark, but how models open a block after a sentence ("Sure! ```python"): a line ending in a
# backtick fence, bare or naming Python, after text with no fence of its own (so "```x```" stays text).
TRAILING_FENCE = re.compile(r"(?:(?!```).)*?\S[ \t]*(`{3,})[ \t]*(python3?|py)?[ \t]*", re.IGNORECASE)
# Not CommonMark either: a backtick fence closing a block at the end of its last line of code ("    return a```")
CLOSING_AFTER_CODE = re.compile(r"(.*[^`\s])[ \t]*(`{3,})[ \t]*")
PYTHON_FENCES = ("", "python", "python3", "py")
SCORES = ("pass", "fraction")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each Markdown fenced block (``` or ~~~, CommonMark's rule: closed by a line
    of the same character, at least as long; opened after text too, by `TRAILING_FENCE`); an unclosed
    last block runs to the end (a completion cut at max length). Written by hand: the standard library
    has no Markdown parser, and this is the one rule needed."""
    blocks, fence, language, body, indent = [], None, "", [], 0
    for line in text.replace("\r\n", "\n").split("\n"):
        if fence is None:
            if (opening := FENCE.fullmatch(line)) and "`" not in opening[3]:
                indent, fence, language, body = len(opening[1]), opening[2], LANGUAGE.match(opening[3])[1].lower(), []
            elif trailing := TRAILING_FENCE.fullmatch(line):
                indent, fence, language, body = 0, trailing[1], (trailing[2] or "").lower(), []
        elif len(line) - len(line.lstrip(" ")) <= 3 and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append((language, "\n".join(body) + "\n"))
            fence = None
        elif fence[0] == "`" and (glued := CLOSING_AFTER_CODE.fullmatch(line)) and len(glued[2]) >= len(fence):
            body.append(glued[1][min(indent, len(line) - len(line.lstrip(" "))) :])
            blocks.append((language, "\n".join(body) + "\n"))
            fence = None
        else:  # the opening fence's indentation comes off each line (a block inside a list item)
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
    if fence is not None:
        blocks.append((language, "\n".join(body)))
    return blocks


def extract_program(completion: str, entry_point: str) -> str:
    """The program in a completion: the first Python block (```python, ```py or a bare fence; ~~~ too)
    that defines `entry_point`, else the first block named Python, else the first bare one (which may
    hold sample output); "" when the completion has fenced blocks but none in Python (a shell or text
    block alone); with no fence, the whole completion as it is (a body continuing the prompt, or raw code)."""
    blocks = fenced_blocks(completion)
    if not blocks:
        return completion
    python = [body for language, body in sorted(blocks, key=lambda block: block[0] == "") if language in PYTHON_FENCES]  # named first
    defines = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    return next((body for body in python if defines.search(body)), python[0] if python else "")


@functools.lru_cache(maxsize=1024)
def does_not_compile(tests: str, prelude: str) -> str | None:
    """Why a row's tests or code prelude are not Python (compiled, not run), or None; once per pair (a
    prompt's completions share them)."""
    for name, source in (("code_prelude", prelude), ("tests", tests)):
        try:
            compile(source, f"<{name}>", "exec")
        except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte
            return f"the row's {name} {'are' if name == 'tests' else 'is'} not Python: {type(exc).__name__}: {exc}"
    return None


class CodeTestsReward(Reward):
    """`correct` (1.0 by default) when every test passes; with `score: fraction`, the share of the
    tests' asserts that passed (a test run that stopped early counts one more failure).

    Reasons: correct, wrong (a test failed, or the program did not load), missing (no code),
    timeout (killed at `timeout_s`, or out of its `cpu_s`), error (the sandbox returned no verdict). `sandbox: none` runs
    model-written code with no isolation at all: an explicit opt-in, logged loudly, never a fallback.
    """

    data_columns = {"entry_point": True, "code_prelude": False}

    def __init__(self, name: str | None = None, score: str = "pass", correct: float = 1.0, wrong: float = 0.0, **settings):
        """`settings`: the sandbox's (`preflight`'s arguments: sandbox, workers, limits), its defaults for the rest."""
        super().__init__(name)
        self.sandbox = self.preflight(self.__name__, score=score, correct=correct, wrong=wrong, **settings)
        if self.sandbox.kind == "none":
            log.warning(
                "reward '%s' RUNS MODEL-WRITTEN CODE UNSANDBOXED (sandbox=none): it can read and write "
                "your files, reach the network and outlive the run",
                self.__name__,
            )
        self.score_mode, self.correct, self.wrong = score, correct, wrong
        self._rows: tuple[Sequence[str], Sequence[str]] = ((), ())

    @classmethod
    def preflight(
        cls,
        name: str,
        sandbox: str = "bubblewrap",
        workers: int = 2,
        score: str = "pass",
        correct: float = 1.0,
        wrong: float = 0.0,
        **limits,
    ) -> Sandbox:
        """The checked sandbox: every argument in range, and a trivial program run in it on this machine."""
        if score not in SCORES:
            raise ConfigError(f"reward.functions.{name}.score={score!r}: must be one of {', '.join(SCORES)}")
        check_number(f"reward.functions.{name}.workers", workers, Range(1, MAX_WORKERS), whole=True)
        check_number(f"reward.functions.{name}.correct", correct)
        check_number(f"reward.functions.{name}.wrong", wrong, Range(high=correct, open_high=True, why="correct"))
        try:
            checked = Sandbox(sandbox, Limits(**limits), workers)
            checked.check_works()
        except TypeError as exc:
            raise ConfigError(f"reward.functions.{name}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"reward.functions.{name}: {exc}".replace("sandbox=none", f"reward.functions.{name}.sandbox=none")) from None
        return checked

    def take_columns(self, columns: dict) -> None:
        """Each row's `entry_point` (required) and `code_prelude` (optional)."""
        if (entry_point := columns.get("entry_point")) is None:
            raise DataError(f"reward '{self.__name__}' needs an 'entry_point' column: the name of the function the tests call")
        self._rows = (entry_point, columns.get("code_prelude") or [""] * len(entry_point))

    def _gold(self, row: int, raw) -> str | None:
        """The tests as written (no answer extraction): Python source, one string per row."""
        if raw is not None and not isinstance(raw, str):
            raise DataError(
                f"reward '{self.__name__}': row {row}'s tests are a {type(raw).__name__}, not Python source "
                "(join a list of asserts into one string)"
            )
        entry_point, prelude = self._rows[0][row], self._rows[1][row]
        if not isinstance(entry_point, str) or not entry_point.isidentifier():
            raise DataError(f"reward '{self.__name__}': row {row}'s entry_point {entry_point!r} is not a function name")
        if prelude is not None and not isinstance(prelude, str):
            raise DataError(f"reward '{self.__name__}': row {row}'s code_prelude {short(prelude)} is not Python source (text)")
        return raw

    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts=None) -> list[Outcome]:
        entry_points, preludes = self._rows
        outcomes: list[Outcome | None] = [None] * len(completions)
        jobs = {}
        for i, (completion, tests) in enumerate(zip(completions, golds, strict=True)):
            program = extract_program(completion, entry_points[i])
            if tests is None or not program.strip():
                outcomes[i] = Outcome(self.wrong, "missing", None, False)
            elif broken := does_not_compile(tests, preludes[i] or ""):  # the data's fault: no verdict on the program
                outcomes[i] = Outcome(self.wrong, "error", broken, False)
            else:
                jobs[i] = Job(program, tests, entry_points[i], preludes[i] or "")
        for i, verdict in zip(jobs, self.sandbox.run(list(jobs.values())), strict=True):
            outcomes[i] = self._outcome(verdict)
        return outcomes

    def _outcome(self, verdict) -> Outcome:
        if verdict.status != "ok":
            return Outcome(self.wrong, verdict.status, verdict.error if verdict.status == "error" else None, False)
        ran = verdict.passed + verdict.failed + (verdict.error is not None)
        if ran == 0:  # the tests hold no assert and no check(): they judge nothing
            return Outcome(self.wrong, "error", "the tests ran no assert (no assert, no check function)", False)
        passed = verdict.passed == ran and not verdict.out_of_cpu
        if verdict.passed + verdict.failed == 0 and verdict.error:
            summary = f"no test ran: {verdict.error}"  # the program did not load, or the tests stopped at once
        else:
            summary = f"{verdict.passed}/{ran} tests passed" + (f"; {verdict.error}" if verdict.error else "")
        if verdict.out_of_cpu:
            summary += f"; the program used up its {self.sandbox.limits.cpu_s} s of CPU time (cpu_s)"
        if verdict.too_large and verdict.too_large not in (verdict.error or ""):
            summary += f"; {verdict.too_large}"
        if self.score_mode == "fraction":
            value = self.wrong + (self.correct - self.wrong) * (verdict.passed / ran if ran else 0.0)
        else:
            value = self.correct if passed else self.wrong
        return Outcome(value, "correct" if passed else "timeout" if verdict.out_of_cpu else "wrong", summary, passed)
