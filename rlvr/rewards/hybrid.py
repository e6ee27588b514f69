"""Reward-model scores as a reward, alone or combined with a verifier (`reward=hybrid`).

Hybrid (the tiny-grpo refactor): verifier v in {0, 1}, reward-model score r normalised to
n = clip((r - r_min) / (r_max - r_min + eps), 0, 1), then
    v == 1: (1 - beta) + 2 * beta * n        v == 0: -alpha + 2 * alpha * n
With alpha, beta >= 0 the ranges are [1-β, 1+β] and [-α, α], both rising with r; the lowest verified
value 1-β is at or above the highest unverified one α exactly when α + β <= 1. The clip keeps this also
when r falls outside the calibrated range.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from rlvr.config import Range, allowed_values, check_number, choice_error
from rlvr.errors import ConfigError, DivergedError
from rlvr.rewards.base import Outcome, Reward, build_rewards, preflight_rewards, reward_target

log = logging.getLogger(__name__)


def resolve_reward_model_path(path: str) -> str:
    """A run dir of `algorithm=reward_model` (its final_model/), a local model dir, or a Hub name."""
    candidate = Path(path).expanduser()
    if (candidate / "final_model" / "config.json").exists():
        return str(candidate / "final_model")
    if (candidate / "final_adapter").is_dir():
        raise ConfigError(
            f"reward model '{path}' kept only its LoRA adapter (model.lora.save_merged=false): train it again without that option"
        )
    if (candidate / "adapter_config.json").exists() and not (candidate / "config.json").exists():
        raise ConfigError(
            f"reward model '{path}' is a LoRA adapter, not a model: name its run dir (final_model/ holds the adapter merged into its base)"
        )
    if candidate.is_dir() and not (candidate / "config.json").exists():
        raise ConfigError(f"reward model '{path}' is a directory with neither final_model/ nor config.json")
    return str(candidate) if candidate.exists() else path


def check_is_reward_model(resolved: str, path: str) -> None:
    """Refuse a model whose config.json (local, or in the Hub cache) lists `architectures` none of
    which is a sequence classifier: a policy (a GRPO run's final_model/) would load with a new, random
    score head, and every reward would be noise. A Hub model not yet downloaded is not checked."""
    from rlvr.models.loading import is_sequence_classifier, saved_architectures

    architectures = saved_architectures(resolved)
    if architectures and not is_sequence_classifier(architectures):
        raise ConfigError(
            f"reward model '{path}' is a {', '.join(architectures)}, not a reward model (no trained score head): "
            "name the run dir of an algorithm=reward_model run, or a sequence-classification model"
        )


def check_reward_model(path: str, key: str) -> str:
    """The reward model that `path` (the setting `key`) names, checked without loading it: there (a
    local dir, or a Hub name this machine can reach), a sequence classifier, and a saved model that
    can load (config, weights, tokenizer: a dir without its tokenizer would score every answer as
    zero tokens); its resolved path, else a one-line error."""
    from rlvr.models.loading import check_reachable, check_saved_model

    resolved = resolve_reward_model_path(path)
    check_reachable(resolved, key)
    check_is_reward_model(resolved, path)
    check_saved_model(resolved, key)
    return resolved


def as_messages(prompt: Any, completion: str) -> list[dict]:
    """The conversation a reward model scores: prompt turns (or a text prompt as one user turn) + the answer."""
    turns = [dict(m) for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    return turns + [{"role": "assistant", "content": completion}]


class RewardModelScorer:
    """Batched scoring with a one-output sequence-classification model, right-padded as in training.

    `offload: true` keeps the model on the CPU between calls and moves it to `device` to score;
    `device="cuda"` is each process's own GPU (`process_device`), not GPU 0 for every rank.
    A conversation longer than the model's context is cut to it, keeping the end the model reads its
    score from (a decoder's last token, an encoder's first), with a warning the first time.
    """

    warned_cut = False

    def __init__(self, model, tokenizer, device: str = "cpu", batch_size: int = 32, offload: bool = False):
        from rlvr.hardware.device import process_device

        self.model, self.tokenizer = model.eval(), tokenizer
        self.device, self.batch_size, self.offload = process_device(device), batch_size, offload
        self.model.to("cpu" if offload else self.device)

    @classmethod
    def from_path(cls, path: str, key: str = "reward_model", **kwargs) -> "RewardModelScorer":
        """The scorer of the reward model `path` (the setting `key` names it), checked first (`check_reward_model`)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        resolved = check_reward_model(path, key)
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved)
            model = AutoModelForSequenceClassification.from_pretrained(resolved)
        except OSError as exc:
            raise ConfigError(f"cannot load reward model '{path}': {str(exc).splitlines()[0]}") from exc
        return cls(model, tokenizer, **kwargs)

    def pair_metrics(self, pairs) -> dict[str, float]:
        """Over preference pairs (TRL conversational rows): `accuracy`, the share whose chosen answer outscores
        the rejected one, and `margin`, the mean chosen - rejected score. Weighted per pair: TRL's eval
        `accuracy` and `margin` average per-batch means, which a partial last batch skews (a margin's sign too)."""
        chosen = self.score([p["prompt"] + p["chosen"] for p in pairs])
        rejected = self.score([p["prompt"] + p["rejected"] for p in pairs])
        n = max(len(chosen), 1)
        return {"accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n, "margin": sum(c - r for c, r in zip(chosen, rejected)) / n}

    def token_ids(self, conversations: Sequence[list[dict]]) -> list[list[int]]:
        if self.tokenizer.chat_template:
            return [self.tokenizer.apply_chat_template(c, tokenize=True, return_dict=False) for c in conversations]
        texts = ["\n\n".join(m["content"] for m in c) for c in conversations]
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"]

    def cut_to_context(self, ids: list[list[int]]) -> list[list[int]]:
        """`ids`, each cut to the model's context (max_position_embeddings) on the side its score is not read
        from: transformers' decoder classifiers (GenericForSequenceClassification) read the last token."""
        from transformers.modeling_layers import GenericForSequenceClassification

        limit = getattr(self.model.config, "max_position_embeddings", None)
        cut = [] if limit is None else [i for i, seq in enumerate(ids) if len(seq) > limit]
        if not cut:
            return ids
        reads_last = isinstance(self.model, GenericForSequenceClassification)
        if not self.warned_cut:
            self.warned_cut = True
            log.warning(
                "reward model: %d of %d conversations are longer than its %d-token context: each is scored on its %s %d "
                "tokens only (warned once; shorter completions, algorithm.max_completion_length, or a reward model "
                "with a longer context avoid it)",
                len(cut),
                len(ids),
                limit,
                "last" if reads_last else "first",
                limit,
            )
        return [seq[-limit:] if reads_last else seq[:limit] for seq in ids]

    def score(self, conversations: Sequence[list[dict]]) -> list[float]:
        import torch

        ids = self.cut_to_context(self.token_ids(conversations))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores: list[float] = []
        if self.offload:
            self.model.to(self.device)
        try:
            for start in range(0, len(ids), self.batch_size):
                batch = ids[start : start + self.batch_size]
                width = max(len(seq) for seq in batch)
                input_ids = torch.tensor([seq + [pad] * (width - len(seq)) for seq in batch], device=self.device)
                mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in batch], device=self.device)
                with torch.inference_mode():
                    scores += self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
        finally:
            if self.offload:
                self.model.to("cpu")
        return scores


def check_settings(
    name: str,
    verifier: Any,
    reward_model: str | None,
    alpha: Any,
    beta: Any,
    eps: Any,
    r_min: Any,
    r_max: Any,
    calibration_prompts: Any,
    batch_size: Any,
    device: Any,
    offload: Any,
    **_: Any,
) -> None:
    """The hybrid reward's settings (HybridReward's arguments), checked without loading anything; a
    ConfigError naming the first bad one: `reward_model` and a `verifier` that is a Reward class set,
    alpha and beta >= 0 with alpha + beta <= 1 (a verified answer never below an unverified one), eps > 0,
    r_min and r_max both set with r_min < r_max or both left to the calibration, calibration_prompts a
    whole number >= 2, batch_size a whole number >= 1, a device this machine has (`check_device`), and
    offload true or false."""
    key = f"reward.functions.{name}"
    if not reward_model:
        raise ConfigError(f"reward '{name}' needs reward_model=<run dir of algorithm=reward_model or model path>")
    if not verifier or not isinstance(verifier, Mapping):
        raise ConfigError(f"reward '{name}' needs a verifier: {{_target_: ...}}, not {verifier!r}")
    check_verifier(name, verifier)
    weight = Range(0, why="a negative weight ranks higher reward-model scores lower")
    check_number(f"{key}.alpha", alpha, weight)
    check_number(f"{key}.beta", beta, weight)
    if alpha + beta > 1:
        raise ConfigError(
            f"{key}: alpha + beta = {alpha} + {beta} must be <= 1, or an unverified answer (up to alpha) "
            f"outscores a verified one (down to 1 - beta)"
        )
    check_number(f"{key}.eps", eps, Range(0, open_low=True, why="it keeps (r - r_min) / (r_max - r_min + eps) defined"))
    for setting, value in {"r_min": r_min, "r_max": r_max}.items():
        if value is not None:
            check_number(f"{key}.{setting}", value)
    if (r_min is None) != (r_max is None):
        given, value = ("r_min", r_min) if r_max is None else ("r_max", r_max)
        raise ConfigError(
            f"{key}.{given}={value} is set without {'r_max' if r_max is None else 'r_min'}: set both (a fixed range) "
            "or neither (a calibration pass sets them)"
        )
    if r_min is not None and r_max <= r_min:
        raise ConfigError(f"{key}: r_max={r_max} must be > r_min={r_min} (higher reward-model scores must give higher rewards)")
    if r_min is not None and r_max - r_min < eps:  # as a calibration's range is refused (check_spread)
        top = (r_max - r_min) / (r_max - r_min + eps)
        raise ConfigError(
            f"{key}: r_max - r_min = {r_max - r_min:.3g} is below eps={eps}: n = (r - r_min) / (r_max - r_min + eps) would "
            f"never pass {top:.2f} of its [0, 1] range: widen r_min..r_max or lower eps"
        )
    check_number(
        f"{key}.calibration_prompts",
        calibration_prompts,
        Range(2, why="the score range over the completions of that many prompts sets r_min and r_max"),
        whole=True,
    )
    check_number(f"{key}.batch_size", batch_size, Range(1, why="completions scored per reward-model forward pass"), whole=True)
    check_device(f"{key}.device", device)
    if not isinstance(offload, bool):
        raise ConfigError(f"{key}.offload={offload!r} must be true or false")


def check_device(key: str, device: Any) -> None:
    """`device` one that torch can put the reward model on here: cpu, cuda, cuda:<index> of a GPU torch
    sees, or mps (a typo gets a "did you mean"); else a ConfigError naming `key`."""
    kinds = allowed_values("hardware.device")
    if not (isinstance(device, str) and (device in kinds or re.fullmatch(r"cuda:\d+", device))):
        raise ConfigError(choice_error(key, device, (*kinds, "cuda:<index>")))
    from rlvr.hardware.device import check_torch_device

    check_torch_device(key, device, fix=f"use {key}=cpu")


def check_verifier(name: str, verifier: Mapping) -> None:
    """The verifier must be a Reward class (rlvr.rewards.base): the hybrid reward reads the `correct` of
    the Outcomes its `score` returns and asks its `same_answer`, which a plain TRL-style function has not."""
    target = reward_target(f"{name}.verifier", verifier)
    if not (inspect.isclass(target) and issubclass(target, Reward)):
        raise ConfigError(
            f"reward.functions.{name}.verifier: {verifier['_target_']} is not a verifier: "
            "a verifier is a subclass of rlvr.rewards.base.Reward whose score() judges each completion "
            "(Outcome.correct True or False), e.g. rlvr.rewards.numeric.LastNumberReward"
        )


def check_spread(name: str, r_min: float, r_max: float, eps: float, source: str) -> None:
    """Refuse a score range that is not finite (the reward model scores NaN or infinity) or narrower than
    eps: the reward model scored the calibration's completions (nearly) alike, and n, set by eps rather
    than by the scores, would be close to a step at r_min."""
    if not (math.isfinite(r_min) and math.isfinite(r_max)):
        raise DivergedError(
            f"reward '{name}': {source} gives r_min={r_min}, r_max={r_max}: the reward model (reward.functions.{name}.reward_model) "
            "scores NaN or infinity: its weights are broken, or its training diverged"
        )
    if r_max - r_min < eps:
        raise ConfigError(
            f"reward '{name}': {source} gives r_max - r_min = {r_max - r_min:.3g}, below eps={eps}: the reward model "
            "scored its completions (nearly) alike, so the reward-model part would be a step; set "
            f"reward.functions.{name}.r_min and r_max, more calibration_prompts, or a smaller eps"
        )


def reward_model_record(path: str) -> dict:
    """What a calibration records of the reward model `path` names (a local one, or a Hub one in the
    Hub cache, where loading it put it): `path` as given, `resolved`, the dir of its files (a Hub model's
    snapshot, named by its commit), and `files`, a digest of the name, size and modification time of
    each file there, which changes when the model is written again. Two records with the same `files`
    are of one model, wherever its dir is."""
    directory = Path(resolve_reward_model_path(path)).expanduser()
    if not directory.is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(directory), "config.json")
        if not isinstance(cached, str):
            raise ConfigError(f"reward model '{path}' is neither a local dir nor in the Hub cache")
        directory = Path(cached).parent
    from rlvr.tracking.outputs import files_fingerprint

    return {"path": path, "resolved": str(directory.resolve()), "files": files_fingerprint(directory)}


def hybrid_value(verified: bool, r: float, r_min: float, r_max: float, alpha: float, beta: float, eps: float) -> float:
    n = min(max((r - r_min) / (r_max - r_min + eps), 0.0), 1.0)
    return (1 - beta) + 2 * beta * n if verified else -alpha + 2 * alpha * n


class HybridReward(Reward):
    """Verifier + reward model. r_min/r_max: fixed in config, or from `calibrate` before training."""

    def __init__(
        self,
        name: str | None = None,
        verifier: dict | None = None,
        reward_model: str | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        eps: float = 0.01,
        r_min: float | None = None,
        r_max: float | None = None,
        calibration_prompts: int = 16,
        batch_size: int = 32,
        device: str = "cpu",
        offload: bool = False,
    ):
        super().__init__(name)
        check_settings(
            self.__name__, verifier, reward_model, alpha, beta, eps, r_min, r_max, calibration_prompts, batch_size, device, offload
        )
        self.verifier = build_rewards({f"{self.__name__}.verifier": verifier})[0].fn
        key = f"reward.functions.{self.__name__}.reward_model"
        self.scorer = RewardModelScorer.from_path(reward_model, key=key, device=device, batch_size=batch_size, offload=offload)
        self.reward_model = reward_model_record(reward_model)  # the files just loaded, for `calibrate`
        self.alpha, self.beta, self.eps = alpha, beta, eps
        self.r_min, self.r_max = r_min, r_max
        self.calibration_prompts = calibration_prompts

    @classmethod
    def preflight(cls, name: str, **arguments) -> None:
        """At start-up, before anything loads: the settings (`check_settings`; what config leaves out
        takes `__init__`'s default), the verifier's own start-up checks, and `reward_model` names a
        reward model this machine can load (`check_reward_model`: a run dir of algorithm=reward_model, a
        model dir, a Hub name it can reach)."""
        settings = inspect.signature(cls).bind(name=name, **arguments)
        settings.apply_defaults()
        check_settings(**settings.arguments)
        preflight_rewards({f"{name}.verifier": settings.arguments["verifier"]})
        check_reward_model(settings.arguments["reward_model"], f"reward.functions.{name}.reward_model")

    def same_answer(self, a: str, b: str) -> bool:
        """Predictions are the verifier's: it says which are one answer."""
        return self.verifier.same_answer(a, b)

    @property
    def data_columns(self) -> dict[str, bool]:
        return self.verifier.data_columns

    def take_columns(self, columns: dict) -> None:
        """The verifier's: it reads the rows (the code reward, each row's entry_point)."""
        self.verifier.take_columns(columns)

    def _gold(self, row: int, raw) -> str | None:
        """The verifier's reading of the gold answer (the code reward's: the tests, as written)."""
        return self.verifier._gold(row, raw)

    @property
    def needs_calibration(self) -> bool:
        return self.r_min is None or self.r_max is None

    def calibrate(self, policy, tokenizer, prompts: Sequence, max_new_tokens: int, out_path: Path, earlier: Path | None = None) -> dict:
        """For a reward that `needs_calibration` (r_min/r_max not in config): r_min/r_max, the RM score
        range over one sampled completion for each of the first `calibration_prompts` prompts, recorded
        in `out_path` with the reward model (its `reward_model_record`). Read instead from `earlier` (the
        run's own, for an eval of it) or `out_path` where one exists that was made with this reward
        model: one scale throughout; one made with another reward model, or not saying which, is not
        used (the log says so), and `earlier` is never written. A range narrower than eps is refused
        (`check_spread`), and not written."""
        from rlvr.evaluation.engine import generate_batch
        from rlvr.hardware.distributed import is_main_process
        from rlvr.tracking.outputs import write_json

        model = self.reward_model
        for path in (p for p in (earlier, out_path) if p is not None and p.exists()):
            record = json.loads(path.read_text())
            made_with = record.get("reward_model")
            if made_with is not None and made_with["files"] == model["files"]:
                check_spread(self.__name__, record["r_min"], record["r_max"], self.eps, f"the calibration in {path}")
                self.r_min, self.r_max = record["r_min"], record["r_max"]
                log.info("hybrid reward: r_min=%.4f r_max=%.4f, the calibration in %s", self.r_min, self.r_max, path)
                return record
            made_with = f"{made_with['resolved']}, files {made_with['files']}" if made_with else "a reward model it does not record"
            log.info("hybrid reward: %s was made with %s, not with %s (files %s)", path, made_with, model["resolved"], model["files"])
        chosen = list(prompts[: self.calibration_prompts])
        completions = generate_batch(policy, tokenizer, chosen, max_new_tokens, do_sample=True)[0]
        scores = self.scorer.score([as_messages(p, c) for p, c in zip(chosen, completions)])
        # min/max of scores holding a NaN depend on where it is: any non-finite score makes the range NaN
        r_min, r_max = (min(scores), max(scores)) if all(map(math.isfinite, scores)) else (math.nan, math.nan)
        check_spread(self.__name__, r_min, r_max, self.eps, f"the calibration on {len(chosen)} prompts")
        self.r_min, self.r_max = r_min, r_max
        record = {"r_min": self.r_min, "r_max": self.r_max, "prompts": len(chosen), "scores": scores, "reward_model": model}
        if is_main_process():  # every process samples the same completions (one seed, one policy): one writes them
            write_json(out_path, record)
        log.info("hybrid reward calibrated on %d prompts: r_min=%.4f r_max=%.4f (%s)", len(chosen), self.r_min, self.r_max, out_path)
        return record

    def score(self, completions: Sequence[str], golds: Sequence[str | None], prompts=None) -> list[Outcome]:
        if self.needs_calibration:
            raise ConfigError(f"reward '{self.__name__}': set r_min and r_max, or let the recipe calibrate it")
        verdicts = self.verifier.score(completions, golds, prompts)
        prompts = prompts if prompts is not None else [""] * len(completions)
        scores = self.scorer.score([as_messages(p, c) for p, c in zip(prompts, completions)])
        return [
            Outcome(
                hybrid_value(bool(v.correct), r, self.r_min, self.r_max, self.alpha, self.beta, self.eps), v.reason, v.prediction, v.correct
            )
            for v, r in zip(verdicts, scores)
        ]
