"""The one place rlvr changes TRL's generation (GRPO-family trainers).

Whichever engine TRL samples with (transformers' `model.generate`, or vLLM with `use_vllm`), every
training row logs how many generate calls each one served since the previous row
(`rollout/hf_generate_calls`, `rollout/vllm_generate_calls`): what ran, not what was asked for.

TRL's `model.generate(...)` call takes no logits processor and no sampler of ours; for one
generation call this binds to the model's `generate` the processors the trainer's mixins ask for
(`generation_processors`: a reasoning vocabulary's think-segment mask) and, on CPU, the inverse-CDF
sampler (rlvr/trainers/sampling.py) in place of `torch.multinomial`, under a greedy copy of TRL's
generation config. Same distribution; at Qwen's vocabulary a rollout takes about half the time.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from contextlib import contextmanager

from rlvr._compat import reshard_fsdp2_before_vllm_sync, sync_vllm_weights_by_reload
from rlvr.hardware.distributed import before_closing_process_group
from rlvr.trainers.sampling import global_stream_sampler


ENGINES = ("hf", "vllm")


def counted(fn, calls: Counter, engine: str):
    """`fn`, adding one to `calls[engine]` per call."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls[engine] += 1
        return fn(*args, **kwargs)

    return wrapper


@contextmanager
def bound_generate(model, processors, calls: Counter):
    """`model.generate` with `processors` (if any) and counted as an "hf" call, for the length of the block."""
    from transformers import LogitsProcessorList

    generate = model.generate
    if processors:
        generate = functools.partial(generate, logits_processor=LogitsProcessorList(processors))
    model.generate = counted(generate, calls, "hf")
    try:
        yield
    finally:
        del model.generate


def greedy_copy(config):
    """TRL's sampling config made greedy (the sampler leaves one token: greedy takes it). Its sampling
    filters, which the sampler applies, are set to the values transformers' greedy-mode check
    passes over without a warning."""
    greedy = copy.deepcopy(config)
    greedy.do_sample, greedy.temperature, greedy.top_p, greedy.top_k, greedy.min_p = False, 1.0, 1.0, 50, None
    return greedy


class GenerationMixin:
    def __init__(self, *args, inverse_cdf_on_cpu: bool = True, **kwargs):
        """inverse_cdf_on_cpu=False (`hardware.cpu_inverse_cdf_sampling=false`): transformers' own
        sampling, the draws plain TRL makes with the same seed."""
        super().__init__(*args, **kwargs)
        self.inverse_cdf_on_cpu = inverse_cdf_on_cpu
        self.generate_calls: Counter = Counter()  # per engine, since the last logged training row
        if self.use_vllm:
            self.vllm_generation.generate = counted(self.vllm_generation.generate, self.generate_calls, "vllm")
            if self.vllm_mode == "colocate":
                # shut down at the run's end, while the process group it shares is whole
                before_closing_process_group(self.vllm_generation.llm.llm_engine.engine_core.shutdown)
                reshard_fsdp2_before_vllm_sync(self.vllm_generation)
                if self.accelerator.device.type == "cpu":
                    sync_vllm_weights_by_reload(self.vllm_generation)

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:  # a training row (evaluation rows carry eval_loss)
            logs.update({f"rollout/{engine}_generate_calls": float(self.generate_calls[engine]) for engine in ENGINES})
            self.generate_calls.clear()
        return super().log(logs, *args, **kwargs)

    def generation_processors(self) -> list:
        """Logits processors for one generation call (fresh ones: they may keep per-sequence state)."""
        return []

    def samples_by_inverse_cdf(self) -> bool:
        """On CPU, for TRL's transformers sampling with only the filters TRL sets (a user's own
        `generation_kwargs` may add others: then transformers samples as it does)."""
        return (
            self.inverse_cdf_on_cpu
            and self.accelerator.device.type == "cpu"
            and bool(self.generation_config.do_sample)
            and self.args.generation_kwargs is None
            and not self.use_transformers_continuous_batching
        )

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        if self.use_vllm:  # TRL has no generation config then; vLLM samples with its own sampler
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        processors = self.generation_processors()
        config = self.generation_config
        if self.samples_by_inverse_cdf():
            processors.append(global_stream_sampler(self.temperature, self.top_p, self.top_k, self.min_p))
            self.generation_config = greedy_copy(config)
        try:
            with bound_generate(self.accelerator.unwrap_model(self.model_wrapped), processors, self.generate_calls):
                return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            self.generation_config = config
