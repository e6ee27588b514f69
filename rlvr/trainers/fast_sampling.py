"""GRPO rollouts through rlvr.sampling instead of `model.generate`, where that changes nothing but time.

TRL's transformers generation path repeats each prompt `num_generations` times and calls
`generate`. This mixin overrides `_generate_single_turn` only: it prefills each distinct prompt
once and samples with the same draws (rlvr/sampling.py; tests/trainers/test_fast_sampling.py
checks the completions equal TRL's for the same seed). Anything that path does not mirror falls
back to TRL: vLLM, continuous batching, images, `generation_kwargs`, a cache implementation,
generation-config fields beyond TRL's sampling knobs, top-k, min-p, a repetition penalty, or
temperature together with top-p (not yet proven bit-exact, see docs/performance.md), or a `generate`
bound on the model for the call (a logits processor bound that way: use `generation_logits_processor`).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# GenerationConfig fields that either TRL sets from GRPOConfig (and rlvr.sampling reproduces) or
# that do not change what `generate` samples (only what it returns, or how it is run).
MIRRORED = {"max_new_tokens", "do_sample", "pad_token_id", "bos_token_id", "eos_token_id", "temperature", "top_p",
            "top_k", "min_p", "repetition_penalty", "cache_implementation", "disable_compile", "max_length",
            "use_cache", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
            "return_dict_in_generate", "transformers_version", "_from_model_config"}


class FastSamplingMixin:
    """Mixed into rlvr's GRPOTrainer before `GRPOTrainer`."""

    def generation_logits_processor(self):
        """An HF-style `(input_ids, scores) -> scores` applied before the sampling warpers, or None."""
        return None

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        import torch
        from trl.models import unwrap_model_for_generation

        from rlvr.sampling import sample

        model = self.accelerator.unwrap_model(self.model_wrapped)
        reason = self._fast_sampling_blocker(model, images, multimodal_fields, has_tool_images)
        if reason is not None:
            if not getattr(self, "_fast_sampling_reported", False):
                log.info("GRPO generation: TRL's generate path (%s)", reason)
                self._fast_sampling_reported = True
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        distinct, repeats = repeated_groups(prompt_ids, num_generations)
        config = self.generation_config
        with (
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped_model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            completion_ids = sample(
                unwrapped_model, distinct, repeats, config.max_new_tokens, eos_token_ids=self.eos_token_ids,
                pad_token_id=self._tokenizer.pad_token_id, temperature=config.temperature, top_k=config.top_k,
                top_p=config.top_p, min_p=config.min_p, repetition_penalty=config.repetition_penalty,
                logits_processor=self.generation_logits_processor(), pad_to_multiple_of=self.pad_to_multiple_of,
            )
        return completion_ids, None

    def _fast_sampling_blocker(self, model, images, multimodal_fields, has_tool_images) -> str | None:
        """Why this call must take TRL's path, or None."""
        if self.use_vllm or self.use_transformers_continuous_batching:
            return "vLLM or continuous batching"
        if images is not None or multimodal_fields or has_tool_images:
            return "multimodal inputs"
        if self.args.generation_kwargs or self.args.cache_implementation is not None:
            return "generation_kwargs or cache_implementation set"
        if model.config.is_encoder_decoder:
            return "encoder-decoder model"
        if "generate" in vars(model):
            return "a generate bound on the model"
        extra = set(model.generation_config.to_diff_dict()) - MIRRORED
        if extra:
            return f"model generation config sets {sorted(extra)}"
        c = self.generation_config
        # Proven equal to generate over whole training steps: plain sampling, or temperature alone, or
        # top-p alone. top-k (and combinations) differed in a row or two per step (docs/performance.md).
        if bool(c.top_k) or c.min_p is not None or c.repetition_penalty != 1.0 or (c.temperature != 1.0 and c.top_p < 1.0):
            return "top_k / min_p / repetition_penalty, or temperature with top_p: not yet proven equal to generate"
        return None


def repeated_groups(rows: list[list[int]], n: int) -> tuple[list[list[int]], int]:
    """(distinct rows, n) when `rows` is each distinct row repeated n times in a row (TRL's
    RepeatSampler order), else (rows, 1)."""
    if n > 1 and len(rows) % n == 0 and all(rows[i] == rows[i - i % n] for i in range(len(rows))):
        return rows[::n], n
    return rows, 1
