"""The one checked path every reward's output takes before TRL, eval or `rlvr.score` sees it.

TRL turns whatever a reward returns into a float tensor: `inf` trains with zero gradients, NaN is
skipped as "not applicable", a string or a short list fails deep inside. rlvr accepts exactly one
finite float or None (= not applicable, as TRL means it) per completion and otherwise stops the run
in one line naming the reward, the row and the value. It also watches each reward across calls:
the share of completions it gave no verdict on (None, timeout, error) as a metric and a warning,
a reward that gave no verdict at all for `none_patience` training steps in a row stops the run, and a call
still running after `slow_call_s` is named while it runs. A plain-function reward given `timeout_s`
runs in a killable worker process (as math_verify does), so it can neither hang nor kill the run.
Without it, the reward runs in the training process: ending the process there (sys.exit, os._exit)
stops the run in one line naming the reward, and a stop signal waits for its call a bounded time
(rlvr/hardware/stops.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import copy
import logging
import math
import numbers
import os
import signal
import sys
import sysconfig
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from rlvr.hardware.stops import awaited
from rlvr.errors import DataError, RewardError, RlvrError
from rlvr.rewards.answers import completion_text, short

log = logging.getLogger(__name__)

# What TRL's GRPOTrainer passes every reward besides the data columns (`_calculate_rewards`); a data
# column of the same name collides. tests/rewards/test_checks.py holds this list against TRL itself.
TRL_REWARD_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments")
# The fields rlvr writes in a rollouts or eval row beside its prompt, completion, gold and the rewards' data
# columns (`reward_columns`), and those rlvr.score adds: never reward arguments when such a row is scored again.
ROW_FIELDS = (
    *("step", "prompt_id", "prompt_text", "stop", "reasoning_token_positions", "index", "rank", "judge", "samples"),
    *("new_tokens", "truncated", "prediction", "rewards", "reasons", "reward", "correct"),
)
NO_VERDICT_REASONS = ("timeout", "error")  # Outcome reasons of built-in rewards that judged nothing


class SpansReturned(RewardError):
    """A reward returned span lists where a float was due: a span reward (algorithm=fgrpo's)."""


def is_span_list(value: Any) -> bool:
    """A row's value shaped as a span reward returns it: a list of 3-item spans (none, for a row without one)."""
    return isinstance(value, (list, tuple)) and all(isinstance(s, (list, tuple)) and len(s) == 3 for s in value)


def innermost(fn: Callable) -> Callable:
    """The reward function itself, looked through its wrappers (CheckedReward, SpanReward) by their `fn`."""
    while "fn" in getattr(fn, "__dict__", {}):
        fn = fn.__dict__["fn"]
    return fn


def reward_columns(rewards) -> list[str]:
    """The data columns the reward functions read beyond TRL's keywords and the gold `answer`: those a
    Reward declares (`data_columns`: CodeTestsReward's entry_point and code_prelude) and those a function
    names as parameters (a user's function's `difficulty`). What a rollouts or eval row carries, besides
    prompt and gold, for `rlvr.score` to score it as training did."""
    names: dict[str, None] = {}
    for reward in rewards:
        fn = innermost(reward.fn)
        names.update(dict.fromkeys(getattr(fn, "data_columns", {})))
        names.update(dict.fromkeys(p.name for p in named_parameters(fn)))
    return [name for name in names if name not in (*TRL_REWARD_KEYWORDS, "answer")]


def named_parameters(fn: Callable) -> list:
    """The parameters `fn` takes by name, as `inspect.Parameter`s: a reward function's own (through the
    functools.partial build_rewards binds its arguments with, which wraps it), a Reward's `__call__`'s;
    none for a callable without a signature (its call names what it lacks)."""
    import inspect

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def required_columns(rewards) -> list[str]:
    """The data columns a Reward declares it needs a value of in every row (`data_columns`), checked as the data loads."""
    return [name for reward in rewards for name, required in getattr(innermost(reward.fn), "data_columns", {}).items() if required]


def check_reward_parameters(rewards, columns: Sequence[str], where: str) -> None:
    """Refuses in one line a reward function's parameter without a default that no column of the data
    `where` (`columns`, as loaded: `prompt`, `answer` and the source's others) gives and TRL does not
    pass: its first call would fail, after the model loaded. So is one named like a field rlvr writes
    in a rollout or eval row (ROW_FIELDS: `index`, `step`, ..., and `gold`, the gold answer): the row would
    hold rlvr's value, not the column's, and `rlvr.score` could not score it again. Classes (`Reward`s) take no such parameter."""
    import functools

    given = {*TRL_REWARD_KEYWORDS, *(c for c in columns if c not in ("prompt", "completion", "completion_ids"))}
    for reward in rewards:
        fn = innermost(reward.fn)
        target, bound = (fn.func, fn.keywords) if isinstance(fn, functools.partial) else (fn, {})
        needed = [p.name for p in named_parameters(fn) if p.default is p.empty]
        if clashes := [name for name in needed if name in (*ROW_FIELDS, "gold") and name not in bound]:
            raise DataError(
                f"reward.functions.{reward.name}: {getattr(target, '__name__', target)} takes '{clashes[0]}', the name of a "
                f"field rlvr writes in its rollout and eval rows ({', '.join(ROW_FIELDS)}, gold): those rows would hold rlvr's "
                f"value, not the column's: rename the column and the parameter"
            )
        if missing := [name for name in needed if name not in given and name not in bound]:
            names = ", ".join(f"'{name}'" for name in missing)
            raise DataError(
                f"reward.functions.{reward.name}: {getattr(target, '__name__', target)} takes {names} (no default), which no "
                f"column of {where} gives (columns: {', '.join(c for c in columns if c != 'prompt')}): give it a default, "
                f"or set it (reward.functions.{reward.name}.{missing[0]}=...)"
            )


def warn_unreadable_golds(rewards, golds: Sequence, where: str) -> None:
    """A warning for each reward that can match none of some gold answers `golds` of `where` (its
    `reads_gold`: a numeric reward and golds such as "five", "#### " or "\\frac{1}{2}"): every completion
    of those prompts scores wrong, so they carry no signal."""
    for reward in rewards:
        reads = getattr(innermost(reward.fn), "reads_gold", None)
        unread = [] if reads is None else [gold for gold in golds if gold is not None and not reads_or_refuses(reads, gold)]
        if unread:
            log.warning(
                "%d of the %d gold answers of %s (e.g. %s) are not numbers, which reward '%s' reads: it scores every "
                "completion of their prompts wrong (a math reward reads them: reward=math_verify)",
                len(unread),
                len(golds),
                where,
                short(unread[0]),
                reward.name,
            )


def reads_or_refuses(reads: Callable[[Any], bool], gold: Any) -> bool:
    """`reads(gold)`, True where the gold is one the reward refuses (a list): its call names the row."""
    try:
        return reads(gold)
    except DataError:
        return True


def check_reward_columns(columns: Sequence[str], answer_column: str, setting: str, where: str) -> None:
    """Refuses in one line, naming `where`, data columns that would not reach the reward functions as
    they are: named like a keyword TRL passes them, or a column 'answer' beside the gold answer's column
    `answer_column` (set by `setting`), which rewards get as `answer` in its place."""
    if clashes := [c for c in columns if c in TRL_REWARD_KEYWORDS]:
        raise DataError(f"{where} has columns named like the keywords TRL passes to reward functions ({', '.join(clashes)}): rename them")
    if answer_column != "answer" and "answer" in columns:
        raise DataError(
            f"{where} has a column 'answer' besides the gold answer's column '{answer_column}' ({setting}): "
            "rewards get the gold answer as `answer`, in its place: rename that column"
        )


# The largest reward magnitude: float32's (TRL holds rewards in float32 tensors, where a larger finite
# float, 1e300, is infinite and every statistic of its batch NaN).
LARGEST_REWARD = 3.4e38


def as_reward(value: Any) -> float | None:
    """A finite float within float32's range, or None, from one returned value (numpy and 0-d torch
    scalars included), else ValueError."""
    if value is None:
        return None
    if not isinstance(value, numbers.Real) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, numbers.Real) and math.isfinite(value) and abs(value) <= LARGEST_REWARD:
        return float(value)
    raise ValueError(value)


def call_in_worker(fn: Callable, prompts, completions, kwargs: dict) -> list:
    """Run one reward call in a pool worker; the list comes back pickled."""
    return list(fn(prompts=prompts, completions=completions, **kwargs))


def worker_keywords(kwargs: dict) -> dict:
    """The keywords a worker's reward call gets: TRL's callables (log_metric, log_extra) and
    environments stay in the trainer; `trainer_state` goes as a SimpleNamespace with its attributes.
    Unpickling the TrainerState itself imports transformers, which costs a worker that replaces a
    killed one seconds of every step after a timeout."""
    import types

    portable = {k: v for k, v in kwargs.items() if not callable(v) and k != "environments"}
    if (state := portable.get("trainer_state")) is not None and hasattr(state, "__dict__"):
        portable["trainer_state"] = types.SimpleNamespace(**vars(state))
    return portable


# Where the standard library and installed packages live: a frame there is not a reward's own code.
LIBRARY_DIRS = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")})


def code_location(filename: str, line: int) -> str:
    """'path:line' of a line of code, as a one-line error names it: the path relative to the working
    directory where the file is under it (`mypkg/rewards.py:12`), else whole; never the base name alone,
    which two modules of a user's can share."""
    path = Path(filename)
    with contextlib.suppress(ValueError, OSError):
        path = path.resolve().relative_to(Path.cwd().resolve())
    return f"{path}:{line}"


def where_raised(exc: BaseException) -> str:
    """' (at path:12)' (`code_location`) of the innermost frame outside the standard library and installed
    packages (else the innermost), so a one-line error points at the reward's code: not at a library it
    called, nor at one that wraps `sys.exit` (wandb.init does)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [frame for frame in frames if not frame.filename.startswith(LIBRARY_DIRS)]
    if not frames:
        return ""
    frame = (own or frames)[-1]
    return f" (at {code_location(frame.filename, frame.lineno)})"


class ExitRefused(BaseException):
    """Raised in place of `os._exit` during an in-process reward call; a BaseException, as SystemExit is,
    so that the reward's own `except Exception` does not swallow it."""


def raised_by_a_signal_handler(exc: BaseException) -> bool:
    """Whether `exc` came from a Python signal handler that interrupted the call (submitit's requeue on
    SIGUSR2 ends the process so): the handler's decision, not the reward's."""
    handlers = (signal.getsignal(sig) for sig in signal.valid_signals())
    codes = {getattr(getattr(h, "__func__", h), "__code__", None) for h in handlers if callable(h)}
    return any(frame.f_code in codes for frame, _ in traceback.walk_tb(exc.__traceback__))


@contextlib.contextmanager
def exits_refused(name: str):
    """Around an in-process call of reward `name`: ending the process becomes a one-line RewardError
    naming the reward and where. SystemExit (sys.exit) is caught; `os._exit`, which would end the run
    with no message, no flushed logs and, with several processes, the others waiting on it for ever,
    raises `ExitRefused` instead while the call runs (in any thread; a child process the reward forks
    keeps the real one). A crash below Python (a segfault, the OOM killer) cannot be caught here."""
    owner, real_exit, exits = os.getpid(), os._exit, []

    def refused_exit(code):
        if os.getpid() != owner:
            real_exit(code)
        caller = sys._getframe(1)
        exits.append(f"called os._exit({code!r}) (at {code_location(caller.f_code.co_filename, caller.f_lineno)})")
        raise ExitRefused(exits[-1])

    os._exit = refused_exit
    try:
        yield
    except ExitRefused:
        pass
    except SystemExit as exc:
        if raised_by_a_signal_handler(exc):
            raise
        exits.append(f"raised SystemExit({exc.code!r}){where_raised(exc)}")
    finally:
        os._exit = real_exit
    if exits:  # also when the reward caught ExitRefused, or another of its threads called os._exit
        raise RewardError(
            f"reward '{name}' {exits[0]}: a reward must return its scores, not end the run; give it "
            f"timeout_s to run it in a worker process, where an exit scores None"
        )


class CheckedReward:
    """Wraps a reward (built-in or a user's function); everything else reads through to the wrapped one.

    In a multi-process trainer `defer_errors` is set: an error is kept in `pending_error` and the
    call returns Nones, so every rank reaches TRL's gather and the trainer stops all ranks together
    instead of leaving the others waiting on a collective forever.
    """

    def __init__(self, fn: Callable, name: str, timeout_s: float | None = None, **checks):
        """`checks`: `reward.checks` settings (RewardChecksConfig's fields), its defaults for the rest."""
        from rlvr.config import RewardChecksConfig
        from rlvr.rewards.sandbox import TimeLimitedPool

        self.fn, self.__name__ = fn, name
        vars(self).update(dataclasses.asdict(RewardChecksConfig(**checks)))  # failure_warn_frac, none_patience, slow_call_s
        self.timeout_s = timeout_s
        self.pool = TimeLimitedPool(1, timeout_s, preload=["rlvr.rewards.checks"]) if timeout_s else None
        self.none_streak = 0
        self.defer_errors = False
        self.pending_error: RlvrError | None = None

    def __getattr__(self, attr: str):  # last_outcomes, last_spans, calibrate, ... of the wrapped reward
        fn = self.__dict__.get("fn")
        if fn is None:
            raise AttributeError(attr)
        return getattr(fn, attr)

    def __call__(self, prompts=None, completions=(), **kwargs) -> list[float | None]:
        try:
            return self._checked_call(prompts, completions, kwargs)
        except RlvrError as exc:
            if not self.defer_errors:
                raise
            self.pending_error = exc
            return [None] * len(completions)

    def take_pending_error(self) -> RlvrError | None:
        error, self.pending_error = self.pending_error, None
        return error

    def _checked_call(self, prompts, completions, kwargs: dict) -> list[float | None]:
        n = len(completions)
        timer = threading.Timer(
            self.slow_call_s,
            log.warning,
            args=(
                "reward '%s' has been running for %.0f s on %d completions and has not returned (give it timeout_s to bound it)",
                self.__name__,
                self.slow_call_s,
                n,
            ),
        )
        timer.daemon = True
        started = time.perf_counter()
        timer.start()
        bound = "give it timeout_s to bound it" if self.pool is None else f"its timeout_s={self.timeout_s:g} is longer than a stop waits"
        try:
            with awaited(f"reward '{self.__name__}'", bound):  # named, and waited for a bounded time, by a stop
                values = self._call(prompts, completions, kwargs)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        if seconds > self.slow_call_s:
            log.warning(
                "reward '%s' is slow: %.1f s for a call of %d completions (reward.checks.slow_call_s=%g)",
                self.__name__,
                seconds,
                n,
                self.slow_call_s,
            )
        values = self._validated(values, prompts, completions)
        self._watch(values, seconds, kwargs.get("log_metric"), training="trainer_state" in kwargs)
        return values

    def _call(self, prompts, completions, kwargs: dict):
        if self.pool is None:
            try:
                with exits_refused(self.__name__):  # copies: a reward that edits them would change the next one's and the logs
                    columns = {k: list(v) if isinstance(v, list) else v for k, v in kwargs.items()}
                    return self.fn(prompts=copy.deepcopy(prompts), completions=copy.deepcopy(completions), **columns)
            except RlvrError:
                raise
            except Exception as exc:  # a user's reward: its failure in one line, pointing at its code
                raise RewardError(f"reward '{self.__name__}' raised {type(exc).__name__}: {exc}"[:300] + where_raised(exc)) from exc
        [(status, value)] = self.pool.map(call_in_worker, [(self.fn, prompts, completions, worker_keywords(kwargs))])
        if status == "ok":
            return value
        if status == "error":
            raise RewardError(f"reward '{self.__name__}' raised {value}")
        why = f"timed out after {self.timeout_s:g} s" if status == "timeout" else value
        log.warning("reward '%s' %s on a call of %d completions: they score None (no verdict)", self.__name__, why, len(completions))
        return [None] * len(completions)

    def _validated(self, values, prompts, completions) -> list[float | None]:
        n = len(completions)
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
            raise RewardError(
                f"reward '{self.__name__}' returned {short(values)} ({type(values).__name__}), "
                f"not a list of {n} rewards (one float or None per completion)"
            )
        values = list(values)
        if len(values) != n:
            raise RewardError(
                f"reward '{self.__name__}' returned {len(values)} rewards for {n} completions (one float or None per completion)"
            )
        checked = []
        for row, value in enumerate(values):
            try:
                checked.append(as_reward(value))
            except ValueError:
                prompt = completion_text(prompts[row]) if prompts is not None else ""
                spans = all(map(is_span_list, values)) and any(values)  # a row may have none: []
                raise (SpansReturned if spans else RewardError)(
                    f"reward '{self.__name__}' returned {short(value)} for row {row} "
                    f"(prompt {short(prompt, 60)}): a reward must be a finite float (float32's range: |r| <= {LARGEST_REWARD:g}) or None"
                    + (" (spans: a span reward trains with algorithm=fgrpo)" if spans else "")
                ) from None
        return checked

    def _watch(self, values: list[float | None], seconds: float, log_metric, training: bool) -> None:
        n = len(values)
        if n == 0:
            return
        outcomes = getattr(self.fn, "last_outcomes", None)
        if not outcomes or len(outcomes) != n:
            outcomes = [None] * n
        no_verdict = sum(v is None or (o is not None and o.reason in NO_VERDICT_REASONS) for v, o in zip(values, outcomes))
        if log_metric is not None:
            log_metric(f"rewards/{self.__name__}/no_verdict_frac", no_verdict / n)
            log_metric(f"rewards/{self.__name__}/call_s", seconds)
        if no_verdict / n > self.failure_warn_frac:
            log.warning(
                "reward '%s' gave no verdict (None, timeout or error) on %d of %d completions (reward.checks.failure_warn_frac=%g)",
                self.__name__,
                no_verdict,
                n,
                self.failure_warn_frac,
            )
        if not training:  # eval batches may be grouped by task: a streak counts training steps only
            return
        self.none_streak = self.none_streak + 1 if all(v is None for v in values) else 0
        if self.none_patience and self.none_streak >= self.none_patience:
            raise RewardError(
                f"reward '{self.__name__}' returned None for every completion in {self.none_streak} "
                f"training steps in a row: it scores nothing (reward.checks.none_patience={self.none_patience})"
            )


def checked_rewards(rewards: list, checks=None) -> list:
    """Every WeightedReward's function behind a CheckedReward (`checks`: the `reward.checks` settings,
    None for their defaults, as `check_ranges` passed them); rewards already checked are kept as they are."""
    from rlvr.rewards.base import WeightedReward

    settings = dict(checks or {})  # in range: rlvr.config.check_ranges has seen them
    return [
        r
        if isinstance(r.fn, CheckedReward)
        else WeightedReward(r.name, CheckedReward(r.fn, r.name, timeout_s=r.timeout_s, **settings), r.weight)
        for r in rewards
    ]
