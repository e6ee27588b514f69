"""GRPO generation for a policy with a reasoning vocabulary (rlvr/vocab.py).

TRL generates, decodes and scores; three things change when the model carries a reasoning
vocabulary: generation runs with the think-segment logits processor, the text rewards see has
reasoning ids mapped back to their standard ids, and vocabulary usage is logged every step.
Without a reasoning vocabulary every hook is a pass-through, so plain GRPO is untouched.
"""

from __future__ import annotations

import torch

from rlvr.errors import ConfigError
from rlvr.trainers.generation import GenerationMixin
from rlvr.vocab import ReasoningVocab


class ReasoningVocabMixin(GenerationMixin):
    """Mixed into rlvr's GRPOTrainer; active only when the model's config has a reasoning vocabulary."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reasoning_vocab = ReasoningVocab.of(self.model)
        if self.reasoning_vocab is not None and (self.use_vllm or self.use_transformers_continuous_batching):
            raise ConfigError("a reasoning vocabulary needs TRL's transformers generation (its logits processor "
                              "is bound to model.generate): set use_vllm and continuous batching off")

    def generation_processors(self) -> list:
        processors = super().generation_processors()
        return processors + [self.reasoning_vocab.processor()] if self.reasoning_vocab is not None else processors

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
