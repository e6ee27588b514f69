"""Evaluation through vLLM (`eval.engine=vllm`): the completions rlvr/evaluation/engine.py scores, generated
by a vLLM engine instead of transformers' `model.generate`.

Where the engine comes from: in a training run, the run's own colocated rollout engine
(`algorithm.rollout=vllm`), with the policy's weights synced into it first (the evals during and
after training); otherwise an engine of its own, loaded from a saved model directory and shut
down after (the eval before training, from initial_policy/; `python -m rlvr.eval`; the eval of a
run finished from its saved final model).

What matches the transformers path: the prompts' token ids (the same chat template, no special
tokens added), the end ids, the decoding (`skip_special_tokens`), a greedy pass, and one seed per
sample (`rlvr.evaluation.engine.sample_seed`, given to vLLM as the request's own seed: a sample does not
depend on its batch). The draws themselves differ (another sampler), so the metrics agree within
their confidence intervals, not row by row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from rlvr.errors import ConfigError

log = logging.getLogger(__name__)


class VllmCompleter:
    """`complete` as rlvr.evaluation.engine.generate_batch does it, through the vLLM engine `llm`."""

    def __init__(self, llm, tokenizer, stop: list[int]):
        self.llm, self.tokenizer, self.stop = llm, tokenizer, stop

    def complete(self, prompts, max_new_tokens: int, samples: int = 1, seeds: Sequence[int] | None = None, sampling: dict | None = None):
        """(completions, new-token counts, truncation flags) for `prompts`, `samples` each, prompt-major:
        greedy, or sample i drawn with seed `seeds[i]` and `sampling`'s temperature, top_p, top_k."""
        from vllm import SamplingParams

        from rlvr.evaluation.engine import tokenized_prompts

        ids = tokenized_prompts(prompts, self.tokenizer)["input_ids"]
        requests = [{"prompt_token_ids": one} for one in ids for _ in range(samples)]
        common = {"max_tokens": max_new_tokens, "stop_token_ids": self.stop, "detokenize": False}
        if seeds is None:
            params = [SamplingParams(temperature=0.0, **common)] * len(requests)
        else:
            params = [SamplingParams(seed=seed, **sampling, **common) for seed in seeds]
        outputs = [output.outputs[0] for output in self.llm.generate(requests, params, use_tqdm=False)]
        tokens = [list(output.token_ids) for output in outputs]
        truncated = [output.finish_reason == "length" for output in outputs]
        return self.tokenizer.batch_decode(tokens, skip_special_tokens=True), [len(t) for t in tokens], truncated


def check_trainer_engine(cfg) -> None:
    """Refuse in one line a training run whose evals cannot go through its rollout engine."""
    from rlvr.trainers.rollout_engine import uses_vllm

    if cfg.eval.engine != "vllm":
        return
    prefix = "eval.engine=vllm in a training run evaluates with its rollout engine"
    if not uses_vllm(cfg):
        raise ConfigError(
            f"{prefix}: set algorithm.rollout=vllm too, or evaluate the run's checkpoints afterwards "
            f"(python -m rlvr.eval target=RUN_DIR eval.engine=vllm)"
        )
    v = cfg.algorithm.vllm
    if v.mode != "colocate" or v.tensor_parallel_size != 1 or v.sleep_mode:
        raise ConfigError(
            f"{prefix}, which it can only do colocated, unsharded and awake: algorithm.vllm.mode=colocate, "
            f"algorithm.vllm.tensor_parallel_size=1, algorithm.vllm.sleep_mode=false (or eval.engine=hf)"
        )


def check_model(model) -> None:
    """Refuse in one line a model vLLM cannot sample as transformers would."""
    from rlvr.models.vocab import ReasoningVocab

    if ReasoningVocab.of(model) is not None:
        raise ConfigError(
            "eval.engine=vllm: this model has a reasoning vocabulary, whose think-segment mask is a "
            "transformers logits processor vLLM does not run: use eval.engine=hf"
        )


def trainer_completer(cfg, trainer, model, tokenizer) -> VllmCompleter | None:
    """For eval.engine=vllm, the trainer's colocated rollout engine with the policy's weights as they
    are now: synced unless TRL's bookkeeping says they are (the last sync was at this step), or
    before the first step (the engine loaded the policy it starts from). None for eval.engine=hf."""
    from rlvr.evaluation.engine import end_ids

    if cfg.eval.engine != "vllm":
        return None
    step = trainer.state.global_step
    if step not in (trainer._last_loaded_step, 0):
        trainer.vllm_generation.sync_weights()
        trainer._last_loaded_step = step
    return VllmCompleter(trainer.vllm_generation.llm, tokenizer, end_ids(model, tokenizer))


@contextlib.contextmanager
def own_completer(cfg, model, tokenizer, model_dir: Path | None) -> Iterator[VllmCompleter | None]:
    """For eval.engine=vllm, an engine of its own with `model`'s weights, loaded from `model_dir`
    where they are saved whole (else from a temporary copy), settings from `algorithm.vllm`, shut
    down on exit. None for eval.engine=hf."""
    if cfg.eval.engine != "vllm":
        yield None
        return
    from vllm import LLM

    from rlvr.hardware.distributed import process_count
    from rlvr.evaluation.engine import end_ids
    from rlvr.trainers.rollout_engine import engine_arguments

    check_model(model)
    if process_count() > 1:
        raise ConfigError(
            "eval.engine=vllm outside a training run's rollout engine runs in one process: "
            "evaluate with one process, or with eval.engine=hf"
        )
    with contextlib.ExitStack() as stack:
        if model_dir is None or not (model_dir / "config.json").exists():
            model_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rlvr-vllm-eval-")))
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        # in this process, as TRL's colocated engine: no worker processes to start or leave behind
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        memory = cfg.algorithm.vllm.gpu_memory_utilization
        arguments = engine_arguments(cfg)
        llm = LLM(model=str(model_dir), seed=cfg.seed, gpu_memory_utilization=memory, distributed_executor_backend="uni", **arguments)
        stack.callback(llm.llm_engine.engine_core.shutdown)
        yield VllmCompleter(llm, tokenizer, end_ids(model, tokenizer))
