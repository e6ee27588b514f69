"""The reward-function contract: TRL's signature outside, per-completion `Outcome`s inside.

TRL calls `fn(prompts=..., completions=..., completion_ids=..., **dataset_columns,
trainer_state=..., log_metric=..., log_extra=...)` and wants one float per completion. Built-in
rewards subclass `Reward` and implement `score`; the outcomes (prediction, reason, correctness)
feed rollouts.jsonl, eval and `rlvr.score`, and the reason fractions are logged as metrics.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rlvr.config import Range, check_number
from rlvr.errors import ConfigError, DataError
from rlvr.rewards.answers import completion_text, gold_answer

log = logging.getLogger(__name__)

# Fractions of these reasons (Outcome.reason) are logged per function.
FAILURE_REASONS = ("missing", "unparsable", "timeout", "error")


@dataclass(frozen=True)
class Outcome:
    reward: float
    reason: str  # why it got its reward: correct | wrong | ok (a form reward) | one of FAILURE_REASONS
    prediction: str | None = None
    correct: bool | None = None  # None: the function judges form, not correctness


class Reward(ABC):
    """Base of built-in rewards. Subclasses set `needs_gold` and implement `score`."""

    needs_gold = True
    # The data columns it reads besides the gold answer (`take_columns`): {name: a value needed in every row}
    data_columns: dict[str, bool] = {}
    # `reward.functions.<name>.answer_after` ("</think>"): it reads only what follows the last such marker
    # (the answer, not the reasoning before it), or the whole completion where there is none (`answer_part`).
    answer_after: str | None = None

    def __init__(self, name: str | None = None):
        self.__name__ = name or type(self).__name__  # TRL names metrics after __name__
        self.last_outcomes: list[Outcome] = []

    @abstractmethod
    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts: Sequence | None = None) -> list[Outcome]:
        """One Outcome per completion, in order. `prompts` (text or chat messages) for rewards that read them."""

    def __call__(self, prompts=None, completions=(), answer=None, log_metric=None, **columns: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if self.answer_after:
            texts = [answer_part(text, self.answer_after) for text in texts]
        if self.needs_gold and answer is None:
            raise ConfigError(f"reward '{self.__name__}' needs an 'answer' column in the data")
        self.take_columns(columns)
        golds = [self._gold(row, a) for row, a in enumerate(answer)] if answer is not None else [None] * len(texts)
        self.last_outcomes = self.score(texts, golds, prompts)
        if log_metric is not None and texts:
            for reason, fraction in failure_fractions(self.last_outcomes).items():
                log_metric(f"rewards/{self.__name__}/{reason}_frac", fraction)
        return [o.reward for o in self.last_outcomes]

    def take_columns(self, columns: dict[str, Any]) -> None:  # noqa: B027 (a hook: most rewards read no other column)
        """The batch's other keywords (its data's other columns, and what TRL passes), before `_gold` and
        `score` run: for a reward that reads more of each row than its gold answer. None by default."""

    def same_answer(self, a: str, b: str) -> bool:
        """Whether two predictions (`Outcome.prediction`s) are the same answer: maj@k votes by it.
        Rewards whose answers have equivalent spellings (numbers, LaTeX) override it."""
        return a.strip() == b.strip()

    def _gold(self, row: int, raw: Any) -> str | None:
        try:
            return gold_answer(raw)
        except DataError as exc:
            raise DataError(f"reward '{self.__name__}', row {row}: {exc}") from None


def failure_fractions(outcomes: Sequence[Outcome]) -> dict[str, float]:
    n = max(len(outcomes), 1)
    return {r: sum(o.reason == r for o in outcomes) / n for r in FAILURE_REASONS}


@dataclass
class WeightedReward:
    name: str
    fn: Callable[..., list[float]]
    weight: float
    timeout_s: float | None = None  # a plain function given `timeout_s` runs in a killable worker


def weighted_total(rewards: Sequence[WeightedReward], values: dict[str, float | None]) -> float | None:
    """A completion's reward from each reward's value (`values[name]`, None: no verdict): the weighted
    sum of the verdicts, or None where no reward gave one (as TRL leaves such a completion out of its
    reward statistics: a 0 would pull the mean down)."""
    given = [r.weight * values[r.name] for r in rewards if values[r.name] is not None]
    return sum(given) if given else None


def mean_reward(totals: Sequence[float | None]) -> float:
    """The mean of the completions' rewards that some reward gave a verdict on (NaN: none)."""
    given = [t for t in totals if t is not None]
    return sum(given) / len(given) if given else math.nan


def reward_entries(functions: dict[str, Any]) -> dict[str, Any]:
    """`reward.functions` as plain dicts; a value a preset leaves for the user (`???`, e.g. the hybrid
    reward's reward_model), and an entry that is not a mapping (`reward.functions.f=mypkg.f`), are
    refused in one line naming it."""
    from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf

    if isinstance(functions, DictConfig):
        try:
            functions = OmegaConf.to_container(functions, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            raise ConfigError(f"{exc.full_key} must be set (it is ???)") from exc
    functions = functions or {}
    if not isinstance(functions, dict):
        raise ConfigError(f"reward.functions={functions!r} must be a mapping of names to {{_target_: ..., weight: ...}}")
    for name, entry in functions.items():
        if not isinstance(entry, dict):
            example = f", e.g. '+reward.functions.{name}={{_target_: {entry}, weight: 1.0}}'" if isinstance(entry, str) else ""
            raise ConfigError(
                f"reward.functions.{name}={entry!r} is not a reward entry: it must be a mapping "
                f"{{_target_: dotted.path, weight: number, ...arguments}}{example}"
            )
    return functions


def reward_target(name: str, entry: dict) -> Any:
    """The module-level class or function `reward.functions.<name>._target_` names, or a one-line
    ConfigError with the reason. (Not hydra's get_object: it logs each failure as an ERROR block first.)"""
    import importlib

    target = entry.get("_target_")
    if target is None:
        raise ConfigError(f"reward.functions.{name} has no _target_")
    module, _, attribute = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception as exc:  # not found, or the module failed while importing
        raise ConfigError(f"reward.functions.{name}._target_: cannot import '{target}' ({type(exc).__name__}: {exc})") from exc


def runs_in_worker(target: Any, entry: dict) -> bool:
    """Whether `timeout_s` in `entry` runs a plain-function `target` in a killable worker; a class takes
    `timeout_s` as an argument of its own (MathVerifyReward's limit per completion)."""
    import inspect

    return "timeout_s" in entry and not inspect.isclass(target)


def build_rewards(functions: dict[str, Any]) -> list[WeightedReward]:
    """Instantiate `reward.functions` entries: {_target_, weight, **arguments} each.

    A class target is constructed with the arguments (built-ins); a plain function target
    (a user's TRL-style reward) is bound to them with functools.partial, except `timeout_s`, which
    makes each call run in a killable worker process (rlvr/rewards/checks.py).
    """
    import functools
    import inspect

    functions = reward_entries(functions)
    check_configured(functions)
    rewards = []
    for name, entry in functions.items():
        obj = reward_target(name, entry)
        entry = {k: v for k, v in entry.items() if k != "_target_"}
        weight = reward_weight(name, entry)
        entry.pop("weight", None)
        timeout_s = entry.pop("timeout_s") if runs_in_worker(obj, entry) else None
        answer_after = entry.pop("answer_after", None)
        check_answer_after(name, obj, answer_after)
        try:
            if inspect.isclass(obj):
                fn = obj(name=name, **entry) if issubclass(obj, Reward) else obj(**entry)
                fn.answer_after = answer_after
            else:
                if hasattr(obj, "preflight"):  # a built-in function's checks of its arguments (a class's run in __init__)
                    obj.preflight(name, **entry)
                fn = functools.update_wrapper(functools.partial(obj, **entry), obj)
        except TypeError as exc:
            raise ConfigError(f"reward.functions.{name}: {exc}") from exc
        fn.__name__ = name
        if timeout_s is not None:
            check_runs_in_worker(name, fn, timeout_s)
        rewards.append(WeightedReward(name, fn, weight, timeout_s))
    return rewards


def check_configured(functions: dict[str, Any]) -> None:
    """At least one reward function (`functions`: `reward_entries`' plain dicts)."""
    if not functions:
        raise ConfigError("no reward functions configured: pick one, e.g. reward=gsm8k_strict")


def reward_weight(name: str, entry: dict) -> float:
    """`reward.functions.<name>.weight` (1 when not set), a finite number or a one-line ConfigError."""
    weight = entry.get("weight", 1.0)
    check_number(f"reward.functions.{name}.weight", weight)
    return weight


def check_reward_signal(functions: dict[str, Any]) -> None:
    """For a policy trained on the rewards (the GRPO family): at least one reward, each weight a number,
    and not every weight 0, which would train on no reward signal at all (loss and gradients 0 every step)."""
    entries = reward_entries(functions)
    check_configured(entries)
    weights = {name: reward_weight(name, entry) for name, entry in entries.items()}
    if not any(weights.values()):
        keys = ", ".join(f"reward.functions.{name}.weight" for name in weights)
        raise ConfigError(f"{keys}: every reward weight is 0, so the run has no reward signal and learns nothing: give one a weight")


def preflight_rewards(functions: dict[str, Any]) -> None:
    """Each configured reward's weight a number and its target importable, taking the arguments it is
    given, and the `preflight(name, **arguments)` of each reward class or function that has one run:
    checks of its arguments and of the machine (a sandbox that must work) made before a run writes anything."""
    import inspect

    for name, entry in reward_entries(functions).items():
        reward_weight(name, entry)
        arguments = {k: v for k, v in entry.items() if k not in ("_target_", "weight")}
        target = reward_target(name, entry)
        check_answer_after(name, target, arguments.pop("answer_after", None))
        check_arguments(name, target, arguments)
        if runs_in_worker(target, arguments):
            check_timeout(name, arguments["timeout_s"])
        if hasattr(target, "preflight"):  # a function's time limit is rlvr's (`own_settings`), not one of its settings
            target.preflight(name, **{k: v for k, v in arguments.items() if inspect.isclass(target) or k != "timeout_s"})


def check_arguments(name: str, target: Any, arguments: dict) -> None:
    """Each of `reward.functions.<name>`'s arguments one that its target takes: a class's `__init__`,
    a function's parameters, or, for a function with a `preflight`, the settings that preflight
    declares (the function's own **kwargs take the data columns TRL passes at each call). A target
    that takes **kwargs takes any; a near miss of rlvr's own keys (`wieght`, `timeout`) or of the
    function's named parameters is named in a warning: it goes to the **kwargs, and what it may have
    meant is not set (a refusal would also refuse a function's own `weights` or `timeout`)."""
    import inspect

    from rlvr.config import did_you_mean

    declares = target if inspect.isclass(target) else getattr(target, "preflight", target)
    try:
        parameters = inspect.signature(declares).parameters
    except (TypeError, ValueError):  # a builtin without a signature: its call names what it refuses
        return
    own = ["weight"] + ([] if inspect.isclass(target) else ["timeout_s"])  # see runs_in_worker
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        named = [k for k, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        for key in (k for k in arguments if k not in parameters and k not in own):
            if hint := did_you_mean(key, own, cutoff=0.8):
                log.warning("reward.functions.%s.%s goes to %s's **kwargs, not to rlvr%s", name, key, target.__name__, hint)
            elif hint := did_you_mean(key, named, cutoff=0.8):  # `max_chrs` beside `max_chars=3`, which stays 3
                log.warning("reward.functions.%s.%s goes to %s's **kwargs, not to its parameter%s", name, key, target.__name__, hint)
        return
    passed_by_rlvr = inspect.isclass(target) or declares is not target  # `name`: a class's or a preflight's first argument
    known = [p for p in parameters if p != "name" or not passed_by_rlvr] + own
    for key in arguments:
        if key not in known:
            raise ConfigError(f"reward.functions.{name}.{key}: {target.__name__} takes no '{key}'{did_you_mean(key, known)}")


def answer_part(text: str, marker: str) -> str:
    """What follows the last `marker` in `text` (the answer after "</think>"); nothing where the tag that
    `marker` closes ("<think>") is opened and never closed (a completion cut inside its reasoning has
    given no answer); the whole text where neither is there."""
    if marker in text:
        return text.rpartition(marker)[2]
    opener = "<" + marker[2:] if marker.startswith("</") else None
    return "" if opener and opener in text else text


def check_answer_after(name: str, target: Any, marker: Any) -> None:
    """`reward.functions.<name>.answer_after`, if set: a marker (non-empty text) for one of rlvr's reward classes."""
    import inspect

    if marker is None:
        return
    if not (inspect.isclass(target) and issubclass(target, Reward)):
        raise ConfigError(f"reward.functions.{name}.answer_after is for rlvr's reward classes: {target.__name__} reads what it is given")
    if not isinstance(marker, str) or not marker:
        raise ConfigError(f"reward.functions.{name}.answer_after={marker!r} must be the text that ends the reasoning (e.g. '</think>')")


def check_timeout(name: str, timeout_s: Any) -> None:
    check_number(f"reward.functions.{name}.timeout_s", timeout_s, Range(0, open_low=True, why="seconds"))


def check_runs_in_worker(name: str, fn: Callable, timeout_s: Any) -> None:
    """A reward with `timeout_s` must be a positive time and a function a worker process can import."""
    import pickle

    check_timeout(name, timeout_s)
    try:
        pickle.dumps(fn)
    except Exception as exc:  # a lambda, a closure, a function defined in __main__ ...
        raise ConfigError(
            f"reward.functions.{name}.timeout_s runs the reward in a worker process, which needs "
            f"a module-level function importable by its path ({type(exc).__name__})"
        ) from exc


def verdicts(rewards: Sequence[WeightedReward], count: int) -> list[tuple[str, Outcome] | None]:
    """Per completion of the rewards' last call (`count` of them): the name of the reward whose
    correctness counts, the first in config order that judged that completion (its outcome's `correct`
    is not None), and that outcome; None where none judged it. Per completion, so that a completion's
    verdict does not depend on the others in its batch."""
    outcomes = [(r.name, listed) for r in rewards if (listed := getattr(r.fn, "last_outcomes", None))]
    return [next(((name, o[i]) for name, o in outcomes if o[i] is not None and o[i].correct is not None), None) for i in range(count)]
