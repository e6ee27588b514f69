"""Reward-model scores as a reward, alone or combined with a verifier (`reward=hybrid`).

Hybrid (the tiny-grpo refactor): verifier v in {0, 1}, reward-model score r normalised to
n = clip((r - r_min) / (r_max - r_min + eps), 0, 1), then
    v == 1: (1 - beta) + 2 * beta * n        v == 0: -alpha + 2 * alpha * n
The clip keeps every verified answer above every unverified one (ranges [1-β, 1+β] and [-α, α]),
also when r falls outside the calibrated range.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from rlvr.errors import ConfigError
from rlvr.rewards.base import Outcome, Reward, build_rewards

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
    if candidate.is_dir() and not (candidate / "config.json").exists():
        raise ConfigError(f"reward model '{path}' is a directory with neither final_model/ nor config.json")
    return str(candidate) if candidate.exists() else path


def check_is_reward_model(resolved: str, path: str) -> None:
    """Refuse a model whose config.json (local, or in the Hub cache) lists `architectures` none of
    which is a sequence classifier: a policy (a GRPO run's final_model/) would load with a new, random
    score head, and every reward would be noise. A Hub model not yet downloaded is not checked."""
    from rlvr.models.hub import looks_like_path

    config = Path(resolved).expanduser() / "config.json"
    if not config.is_file():
        if looks_like_path(resolved):
            return  # not there: check_reachable says so
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(resolved, "config.json")
        except ValueError:  # not a valid Hub name either: loading it says why
            return
        if not isinstance(cached, str):
            return
        config = Path(cached)
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except ValueError:
        return  # a config that does not parse: transformers' error names it when the model loads
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"reward model '{path}' is a {', '.join(architectures)}, not a reward model (no trained score head): "
            "name the run dir of an algorithm=reward_model run, or a sequence-classification model"
        )


def as_messages(prompt: Any, completion: str) -> list[dict]:
    """The conversation a reward model scores: prompt turns (or a text prompt as one user turn) + the answer."""
    turns = [dict(m) for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    return turns + [{"role": "assistant", "content": completion}]


class RewardModelScorer:
    """Batched scoring with a one-output sequence-classification model, right-padded as in training.

    `offload: true` keeps the model on the CPU between calls and moves it to `device` to score.
    """

    def __init__(self, model, tokenizer, device: str = "cpu", batch_size: int = 32, offload: bool = False):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device, self.batch_size, self.offload = device, batch_size, offload
        self.model.to("cpu" if offload else device)

    @classmethod
    def from_path(cls, path: str, **kwargs) -> "RewardModelScorer":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        resolved = resolve_reward_model_path(path)
        check_is_reward_model(resolved, path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved)
            model = AutoModelForSequenceClassification.from_pretrained(resolved)
        except OSError as exc:
            raise ConfigError(f"cannot load reward model '{path}': {str(exc).splitlines()[0]}") from exc
        return cls(model, tokenizer, **kwargs)

    def pair_accuracy(self, pairs) -> float:
        """Share of preference pairs (TRL conversational rows) whose chosen answer outscores the rejected one.

        Weighted per pair; TRL's eval `accuracy` averages per-batch means, which a partial last batch skews.
        """
        chosen = self.score([p["prompt"] + p["chosen"] for p in pairs])
        rejected = self.score([p["prompt"] + p["rejected"] for p in pairs])
        return sum(c > r for c, r in zip(chosen, rejected)) / max(len(chosen), 1)

    def token_ids(self, conversations: Sequence[list[dict]]) -> list[list[int]]:
        if self.tokenizer.chat_template:
            return [self.tokenizer.apply_chat_template(c, tokenize=True, return_dict=False) for c in conversations]
        texts = ["\n\n".join(m["content"] for m in c) for c in conversations]
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"]

    def score(self, conversations: Sequence[list[dict]]) -> list[float]:
        import torch

        ids = self.token_ids(conversations)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        limit = getattr(self.model.config, "max_position_embeddings", None) or 10**9
        scores: list[float] = []
        if self.offload:
            self.model.to(self.device)
        try:
            for start in range(0, len(ids), self.batch_size):
                batch = [seq[-limit:] for seq in ids[start : start + self.batch_size]]
                width = max(len(seq) for seq in batch)
                input_ids = torch.tensor([seq + [pad] * (width - len(seq)) for seq in batch], device=self.device)
                mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in batch], device=self.device)
                with torch.inference_mode():
                    scores += self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
        finally:
            if self.offload:
                self.model.to("cpu")
        return scores


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
        if not reward_model:
            raise ConfigError(f"reward '{self.__name__}' needs reward_model=<run dir of algorithm=reward_model or model path>")
        if not verifier:
            raise ConfigError(f"reward '{self.__name__}' needs a verifier: {{_target_: ...}}")
        self.verifier = build_rewards({f"{self.__name__}_verifier": verifier})[0].fn
        self.scorer = RewardModelScorer.from_path(reward_model, device=device, batch_size=batch_size, offload=offload)
        self.alpha, self.beta, self.eps = alpha, beta, eps
        self.r_min, self.r_max = r_min, r_max
        self.calibration_prompts = calibration_prompts

    @classmethod
    def preflight(cls, name: str, reward_model: str | None = None, **_) -> None:
        """At start-up: `reward_model` names a model this machine can load (a run dir of
        algorithm=reward_model, a model dir, a Hub name it can reach)."""
        from rlvr.models.loading import check_reachable

        if reward_model:
            resolved = resolve_reward_model_path(reward_model)
            check_reachable(resolved, f"reward.functions.{name}.reward_model")
            check_is_reward_model(resolved, reward_model)

    def same_answer(self, a: str, b: str) -> bool:
        """Predictions are the verifier's: it says which are one answer."""
        return self.verifier.same_answer(a, b)

    @property
    def needs_calibration(self) -> bool:
        return self.r_min is None or self.r_max is None

    def calibrate(self, policy, tokenizer, prompts: Sequence, max_new_tokens: int, out_path: Path) -> dict:
        """r_min/r_max: the RM score range over one sampled completion for each of the first K prompts,
        recorded in `out_path`; read from it where it exists (a later start of the run, an eval of
        it): one scale throughout."""
        from rlvr.evaluation.engine import generate_batch

        if out_path.exists():
            record = json.loads(out_path.read_text())
            self.r_min, self.r_max = record["r_min"], record["r_max"]
            log.info("hybrid reward: r_min=%.4f r_max=%.4f, the calibration in %s", self.r_min, self.r_max, out_path)
            return record
        chosen = list(prompts[: self.calibration_prompts])
        completions = generate_batch(policy, tokenizer, chosen, max_new_tokens, do_sample=True)[0]
        scores = self.scorer.score([as_messages(p, c) for p, c in zip(chosen, completions)])
        self.r_min, self.r_max = min(scores), max(scores)
        record = {"r_min": self.r_min, "r_max": self.r_max, "prompts": len(chosen), "scores": scores}
        out_path.write_text(json.dumps(record, indent=2) + "\n")
        log.info("hybrid reward calibrated on %d prompts: r_min=%.4f r_max=%.4f", len(chosen), self.r_min, self.r_max)
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
