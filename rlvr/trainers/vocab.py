"""GRPO generation for a policy with a reasoning vocabulary (rlvr/models/vocab.py).

TRL generates, decodes and scores; when the model carries a reasoning vocabulary:
- generation runs with the think-segment logits processor, and records each drawn token's log-prob
  (TRL's `sampling_per_token_logps`);
- the text rewards see has reasoning ids mapped back to their standard ids;
- every training, old and reference log-prob is computed over the ids the token could be drawn from
  (rlvr/trainers/vocab_log_probs.py), so the loss and the KL term see the sampling distribution;
- vocabulary usage is logged every step, and `vocab/logprob_gap`: the mean |sampling log-prob -
  training log-prob| of the sampled tokens (0 up to rounding when both see the same distribution,
  as long as the policy has not moved since sampling).
Without a reasoning vocabulary every hook is a pass-through, so plain GRPO is untouched.
"""

from __future__ import annotations

import torch

from rlvr.errors import ConfigError
from rlvr.trainers.sampling import SampledTokenLogProbs
from rlvr.trainers.generation import GenerationMixin
from rlvr.trainers.vocab_log_probs import restricted_vocabulary, shifted_labels
from rlvr.models.vocab import STANDARD, ReasoningVocab


class ReasoningVocabMixin(GenerationMixin):
    """Mixed into rlvr's GRPOTrainer; active only when the model's config has a reasoning vocabulary."""

    def __init__(self, *args, **kwargs):
        self._sampling_recorder: SampledTokenLogProbs | None = None  # the generation call's, until it returns
        self._sampling_logps: torch.Tensor | None = None  # the batch's, while compute_loss runs
        super().__init__(*args, **kwargs)
        self.reasoning_vocab = ReasoningVocab.of(self.model)
        if self.reasoning_vocab is not None and self.use_transformers_continuous_batching:  # vLLM: refused at start-up
            raise ConfigError(
                "a reasoning vocabulary needs model.generate (its logits processor is bound to it): "
                "set algorithm.trl.use_transformers_continuous_batching=false"
            )

    def generation_processors(self) -> list:
        processors = super().generation_processors()
        if self.reasoning_vocab is None:
            return processors
        self._sampling_recorder = SampledTokenLogProbs(self.temperature)
        return processors + [self.reasoning_vocab.processor(), self._sampling_recorder]

    def _generate_single_turn(self, *args, **kwargs):
        completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
        recorder, self._sampling_recorder = self._sampling_recorder, None
        if recorder is not None and logprobs is None:
            logprobs = recorder.per_completion(completion_ids)
        return completion_ids, logprobs

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, compute_aux_loss=False, **media
    ):
        """TRL's, over each token's allowed ids (see the module docstring); logs `vocab/logprob_gap` for
        the policy's log-probs inside `compute_loss`."""
        if self.reasoning_vocab is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **media
            )
        if any(value is not None for value in media.values()):
            raise ConfigError("a reasoning vocabulary is for text-only models: this batch has image inputs")
        labels = shifted_labels(input_ids, attention_mask, logits_to_keep)
        allowed = torch.full_like(labels, STANDARD)
        allowed[:, -logits_to_keep:] = self.reasoning_vocab.allowed_sets(input_ids[:, :-logits_to_keep], input_ids[:, -logits_to_keep:])
        batch_size = batch_size or input_ids.size(0)
        results = []
        for start in range(0, input_ids.size(0), batch_size):
            rows = slice(start, start + batch_size)
            with restricted_vocabulary(self.reasoning_vocab, labels[rows], allowed[rows]):
                results.append(
                    super()._get_per_token_logps_and_entropies(
                        model, input_ids[rows], attention_mask[rows], logits_to_keep, batch_size, compute_entropy, compute_aux_loss
                    )
                )
        logps = torch.cat([r[0] for r in results])
        entropies = torch.cat([r[1] for r in results]) if compute_entropy else None
        aux_loss = torch.stack([r[2] for r in results]).mean() if compute_aux_loss else None
        if self._sampling_logps is not None:
            self._log_logprob_gap(self._sampling_logps, logps, attention_mask[:, -logits_to_keep:])
            self._sampling_logps = None
        return logps, entropies, aux_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.reasoning_vocab is not None:
            self._sampling_logps = inputs.get("sampling_per_token_logps")
        try:
            return super().compute_loss(model, inputs, *args, **kwargs)
        finally:
            self._sampling_logps = None

    def _log_logprob_gap(self, sampling, training, mask) -> None:
        mask = mask.to(training.dtype)
        local = torch.stack([((sampling.to(training.device) - training.detach()).abs() * mask).sum(), mask.sum()])
        gap, count = self.accelerator.gather(local[None]).sum(dim=0).tolist()
        self._metrics["train" if self.model.training else "eval"]["vocab/logprob_gap"].append(gap / max(count, 1.0))

    def _generate(self, prompts):
        outputs = super()._generate(prompts)
        if self.reasoning_vocab is None:
            return outputs
        prompt_ids, completion_ids, tool_mask, completions, *rest = outputs
        texts = self.reasoning_vocab.decode(self.processing_class, completion_ids)
        if completions and isinstance(completions[0], list):  # conversational: one assistant message each
            completions = [[{"role": "assistant", "content": text}] for text in texts]
        else:
            completions = texts
        self._log_vocab_usage(prompt_ids, completion_ids)
        return (prompt_ids, completion_ids, tool_mask, completions, *rest)

    def _log_vocab_usage(self, prompt_ids, completion_ids) -> None:
        usage = self.reasoning_vocab.usage(prompt_ids, completion_ids)
        keys = ("think_tokens", "reasoning_in_think", "reasoning_outside_think")
        local = torch.tensor([usage[k] for k in keys], device=self.accelerator.device)
        think, in_think, outside = self.accelerator.gather(local[None]).sum(dim=0).tolist()
        drift = self.reasoning_vocab.embedding_norms(self.accelerator.unwrap_model(self.model))["relative_drift"]
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["vocab/reasoning_share_in_think"].append(in_think / think if think else 0.0)
        metrics["vocab/think_tokens_per_completion"].append(think / max(len(completion_ids), 1))
        metrics["vocab/reasoning_outside_think"].append(outside)
        metrics["vocab/embedding_drift"].append(sum(drift) / len(drift))

    def reasoning_positions(self, completion_ids) -> list[list[int]] | None:
        """Per completion, the positions of reasoning ids (rollouts keep which tokens were which)."""
        if self.reasoning_vocab is None:
            return None
        start = self.reasoning_vocab.standard_size
        return [[t for t, i in enumerate(ids) if i >= start] for ids in completion_ids]
