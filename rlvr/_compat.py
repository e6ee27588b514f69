"""Every patch rlvr makes to another library's internals, in one place.

Each function names the upstream version it was written against and when to remove it, and
tests/test_compat.py fails when upstream changes underneath one of them (the name is gone, or the code
that reads it no longer does). The behaviour each patch serves is documented and tested where it is
used; here is only the mechanism.

| patch | library | used by |
| --- | --- | --- |
| `wrap_hydra_reporter` | hydra-core 1.3 | config.one_line_preset_errors |
| `raise_failed_job_results` | hydra-core 1.3 | launcher.report_ended_jobs_once |
| `score_labelled_positions_only_on_cpu` | trl 1.16 | run (CPU runs) |
| `swapped_chunked_log_prob_function` | trl 1.16 | trainers.vocab_log_probs |
| `enable_fsdp_on_cpu` | accelerate 1.15-1.16 | sharding.ShardedTrainerMixin |
| `skip_deepspeed_shm_comm_op` | deepspeed 0.17-0.19 | sharding.use_deepspeed |
| `loading_whole` | transformers 5 | sharding (the final model loaded back after ZeRO-3) |
| `keep_4bit_weights_trainable` | bitsandbytes 0.50 | models (QLoRA) |
| `vllm_engine_arguments` | trl 1.16 | trainers.rollout_engine (algorithm.rollout=vllm) |
| `sync_vllm_weights_by_reload` | trl 1.16, vllm 0.31 | trainers.generation (vLLM on CPU) |
| `reshard_fsdp2_before_vllm_sync` | trl 1.16, torch 2.13 | trainers.generation (vLLM colocated) |
| `TiedWeightsLoadQuietly` | transformers 5 | trainers.grpo (resume) |
| `requeue_through_submitit` | submitit 1.5 | hardware.stops (SIGUSR2 under hydra/launcher=slurm) |
| `generation_used_up` | trl 1.16 | recipes.grpo_family (checkpoints between generations) |
| `seed_each_epoch` | trl 1.16 | trainers.grpo (resume after the first epoch) |
| `wandb_offline_notice_to_stderr` | transformers 5 | run.set_up_process (rlvr.run, rlvr.eval) |
| `counting_reward_tokens_in_state` | trl 1.16 | trainers.reward (resume) |
| `close_progress_bars` | tqdm 4 | run.fail (an error line after the bars) |
| `without_load_report` | transformers 5 | models.loading (a policy's weights checked in one line) |
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable

log = logging.getLogger(__name__)
# Vocabulary columns per tile of TRL's fused log-prob head on CPU: 320 tokens x 2048 fp32 stays in L2.
CPU_VOCAB_TILE = 2048


def wrap_hydra_reporter(wrapper: Callable[[Callable], Callable]) -> None:
    """Hydra calls every command's work (run, -m, --cfg, composition) through
    `hydra._internal.utils.run_and_report(func)`; from now on it gets `wrapper(func)` instead of `func`.
    Once per process. hydra-core 1.3; remove when Hydra has a hook for wording its errors."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report
    if getattr(original, "rlvr_wrapped", False):
        return

    def run_and_report(func):
        return original(wrapper(func))

    run_and_report.rlvr_wrapped = True
    hydra_utils.run_and_report = run_and_report


def hydra_file_being_read(exc: BaseException) -> str | None:
    """The config file a Hydra config source was reading when `exc` was raised through it ("a preset"
    where its frame names none), or None if it was not raised there: Hydra's error names no file.
    Reads the frame's `full_path` local of hydra-core 1.3's FileConfigSource.load_config; remove when
    Hydra's error names the file."""
    import traceback

    reading = [
        f for f, _ in traceback.walk_tb(exc.__traceback__) if f.f_globals.get("__name__", "").startswith("hydra._internal.core_plugins.")
    ]
    return str(reading[-1].f_locals.get("full_path", "a preset")) if reading else None


def raise_failed_job_results(raised_as_is: Callable[[BaseException], bool]) -> None:
    """Hydra (`JobReturn.return_value`) prints "Error executing job with overrides: [...]" whenever a
    sweeper reads a failed job's result; a failed job's exception for which `raised_as_is(exc)` holds is
    raised without that line. Once per process. hydra-core 1.3; remove when Hydra lets a launcher or job
    word a failure itself."""
    from hydra.core.utils import JobReturn, JobStatus

    hydra_property = JobReturn.return_value
    if getattr(hydra_property.fget, "rlvr_wrapped", False):
        return

    def return_value(job: JobReturn):
        if job.status == JobStatus.FAILED and raised_as_is(job._return_value):
            raise job._return_value
        return hydra_property.fget(job)

    return_value.rlvr_wrapped = True
    JobReturn.return_value = property(return_value, hydra_property.fset)


def score_labelled_positions_only_on_cpu() -> None:
    """TRL's fused log-prob head (`add_fused_lm_head`, every training log-prob of GRPOTrainer and
    SFTTrainer) runs the LM head in [tokens, 32,768-column] tiles. Where Triton runs (CUDA, XPU) it
    projects only the positions whose label is not -100 (the completion); elsewhere EVERY position,
    prompt included, and each tile of torch temporaries is hundreds of MB. On CPU neither pays: nothing
    compiles the tiles, and a tile that fits the cache is faster (docs/performance.md).

    So CPU tensors take the compact path, in `CPU_VOCAB_TILE` columns: the same log-probs and gradients.
    Process-wide; changes nothing for CUDA tensors except the tile width, so call it for CPU runs only.
    Both are module globals of `trl.trainer.utils` read at each call (trl 1.16); remove when TRL has an
    option for them."""
    import trl.trainer.utils as trl_utils

    with_triton = getattr(trl_utils._use_triton, "rlvr_wrapped", trl_utils._use_triton)

    def compact(device) -> bool:  # TRL asks this only to choose between the compact and all-positions paths
        return device.type == "cpu" or with_triton(device)

    compact.rlvr_wrapped = with_triton
    trl_utils._use_triton = compact
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_VOCAB_TILE


@contextmanager
def swapped_chunked_log_prob_function(replacement: Callable):
    """Inside the block, TRL's fused head calls `replacement(original).apply(...)` where it calls
    `_ChunkedLogProbFunction.apply(...)` (the autograd function computing log-probs tile by tile).
    Not reentrant. trl 1.16 (`trl.trainer.utils._ChunkedLogProbFunction`, read at each call); remove
    when TRL's fused head takes a per-position vocabulary mask."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._ChunkedLogProbFunction
    trl_utils._ChunkedLogProbFunction = replacement(original)
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = original


def enable_fsdp_on_cpu(trainer) -> None:
    """accelerate (1.15, 1.16) turns an FSDP plugin into `DistributedType.FSDP` for GPU-like devices only:
    on CPU (MULTI_CPU, gloo) it drops the plugin without a word and trains plain DDP. FSDP2 itself works
    on CPU with gloo, so set the state accelerate sets on a GPU. Applied only on CPU and only when FSDP
    is asked; tests/sharding fails the day accelerate does this itself (then remove this)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    log.info("FSDP on CPU: accelerate would have trained plain DDP here; rlvr turned its FSDP2 on")


def skip_deepspeed_shm_comm_op() -> None:
    """DeepSpeed's torch backend JIT-compiles a shared-memory all-reduce op when it starts (a minute or
    more the first time on a machine, needs g++). Only its tensor-parallel
    inference (`inference_all_reduce`) calls that op, never ZeRO training, whose collectives are
    torch.distributed's. So the op is marked as not buildable in DeepSpeed's table of compatible ops,
    which its one reader (`deepspeed.comm.torch.build_shm_op`) then skips; set before DeepSpeed probes
    every op, which it also spares. deepspeed 0.17-0.19; remove when DeepSpeed builds the op lazily."""
    import deepspeed.ops

    vars(deepspeed.ops).setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False


@contextmanager
def loading_whole():
    """`from_pretrained` loads the model whole inside this block. While a ZeRO-3 Trainer's arguments live,
    transformers loads every model partitioned across the processes (deepspeed.zero.Init), to be trained
    by that Trainer's engine: a model loaded back for the evals after training must not be. transformers
    has `unset_hf_deepspeed_config` but no public way to set the switch back, so its private weak
    reference is kept and restored (transformers 5); remove when transformers scopes the switch itself."""
    from transformers.integrations import deepspeed

    reference = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = reference


def keep_4bit_weights_trainable(model) -> None:
    """bitsandbytes (0.50) repacks a 4-bit layer's weights for its fast CPU kernel on the first forward
    in eval mode (rlvr's eval before training) and never back, so the next training forward fails
    ("a view of a leaf Variable ... in-place"): the training layout is kept throughout by turning that
    kernel off per layer. Remove when bitsandbytes repacks back for training."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def vllm_engine_arguments(**arguments) -> None:
    """TRL builds its colocated vLLM engine as `LLM(...)` with fixed arguments (`_init_vllm` of
    `trl.generation.vllm_generation`, which looks `LLM` up in its module at each call): from now on that
    call also passes `arguments` (e.g. dtype, enforce_eager), the latest set winning. Process-wide.
    trl 1.16; remove when TRL's config takes vLLM engine arguments."""
    import trl.generation.vllm_generation as trl_vllm

    engine = getattr(trl_vllm.LLM, "rlvr_wrapped", trl_vllm.LLM)

    def llm(*args, **kwargs):
        return engine(*args, **kwargs | arguments)

    llm.rlvr_wrapped = engine
    trl_vllm.LLM = llm


def sync_vllm_weights_by_reload(generation) -> None:
    """vLLM (0.31) on CPU repacks every linear layer's weight for its GEMM kernels once loaded and drops the
    parameter, so TRL's colocated weight sync (`VLLMGeneration.sync_weights`, trl 1.16), which calls the
    engine model's `load_weights` directly, fails (`'Parameter' object has no attribute 'weight_loader'`).
    vLLM's own in-place reload (`GPUModelRunner.reload_weights`) brackets `load_weights` with
    `initialize_layerwise_reload` / `finalize_layerwise_reload`, which restore the checkpoint layout and
    repack after: `generation`'s sync does the same from now on. That reload repacks a weight shared by
    two layers for one of them only ("Tied parameters" in its limitations): an LM head tied to the input
    embeddings would go on scoring with the old matrix, so it is repacked too. Remove when TRL syncs
    through vLLM's reload and vLLM repacks tied heads."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

    sync = generation.sync_weights

    def sync_weights(*args, **kwargs):
        runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner  # where TRL loads
        model = runner.model
        initialize_layerwise_reload(model)
        try:
            return sync(*args, **kwargs)
        finally:
            finalize_layerwise_reload(model, runner.model_config)
            modules = list(model.modules())
            embeddings = {id(m.weight) for m in modules if type(m) is VocabParallelEmbedding}
            for head in (m for m in modules if isinstance(m, ParallelLMHead) and id(m.weight) in embeddings):
                head.quant_method.process_weights_after_loading(head)

    generation.sync_weights = sync_weights


def reshard_fsdp2_before_vllm_sync(generation) -> None:
    """TRL's colocated weight sync under FSDP2 (`VLLMGeneration._iter_fsdp2_params`, trl 1.16) calls
    `full_tensor()` on every parameter, which only a sharded (DTensor) one has; FSDP2 leaves the root
    module's parameters unsharded (plain tensors) after a forward, and the sync fails ("'Tensor' object
    has no attribute 'full_tensor'"). From now on `generation`'s sync reshards every FSDP2 module first
    (a no-op where they are sharded, or without FSDP). Remove when TRL's sync takes unsharded parameters."""
    from torch.distributed.fsdp import FSDPModule

    sync = generation.sync_weights

    def sync_weights(*args, **kwargs):
        for module in generation.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        return sync(*args, **kwargs)

    generation.sync_weights = sync_weights


class TiedWeightsLoadQuietly:
    """A transformers Trainer mixin. Loading a checkpoint (a resume), the Trainer warns "There were
    missing keys in the checkpoint model loaded" for every key the checkpoint lacks unless the model
    lists it in `_keys_to_ignore_on_save`; transformers 5's models tie their LM head to the input
    embeddings without listing it, and the saved checkpoint leaves the tied copy out, so every resume
    of a tied model (Qwen2.5-0.5B and 1.5B, Qwen3-0.6B, the tiny model) warned of weights it did not lose.
    A missing key whose parameter is the same tensor as one the checkpoint did hold is not reported;
    any other missing or unexpected key is, as transformers words it. transformers 5
    (`Trainer._issue_warnings_after_load`, called by `_load_from_checkpoint`); remove when it knows tied weights."""

    def _issue_warnings_after_load(self, load_result) -> None:
        missing = set(load_result.missing_keys)
        names_per_tensor: dict[int, set[str]] = {}
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            names_per_tensor.setdefault(id(parameter), set()).add(name)
        loaded_through_a_tie = {n for names in names_per_tensor.values() if names - missing for n in names & missing}
        kept = [key for key in load_result.missing_keys if key not in loaded_through_a_tie]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=kept))


def requeue_through_submitit(handler: Callable) -> None:
    """Call submitit's SIGUSR2 handler (checkpoint, `scontrol requeue`, then `sys.exit(-1)`). SLURM's
    requeue signals every process of the job, scontrol among them: when its SIGTERM lands before
    scontrol exits, submitit's `check_call` raises CalledProcessError after the requeue was made, and
    submitit records that error as the job's result, so the sweep reports a failure while the job
    runs again. Such an error ends the process as the handler would have. submitit 1.5; remove when
    its `_requeue` tolerates the requeue's own signal."""
    import signal
    import subprocess
    import sys

    try:
        handler(signal.SIGUSR2, None)
    except subprocess.CalledProcessError as exc:
        if list(exc.cmd[:2]) != ["scontrol", "requeue"] or exc.returncode != -signal.SIGTERM:
            raise
        log.warning("scontrol requeue was ended by the requeue it asked for: the job is requeued")
        sys.exit(-1)


def generation_used_up(trainer) -> bool:
    """Whether TRL's GRPOTrainer holds no generated completions for later steps: it generates every
    steps_per_generation x num_iterations batches, counted by its private `_step`, and trains on the
    stored ones in between. trl 1.16; remove when TRL's checkpoints hold that buffer."""
    return trainer._step % (trainer.args.steps_per_generation * trainer.num_iterations) == 0


def seed_each_epoch(sampler):
    """`sampler` (TRL's RepeatSampler) with a `set_epoch` that transformers calls at each epoch's start:
    the epoch's order is drawn from seed + epoch, not from one generator seeded once, whose later
    epochs a resume (which replays no finished epoch) would not reproduce. The first epoch's order is
    unchanged. trl 1.16; remove when RepeatSampler has set_epoch."""
    if getattr(sampler, "shuffle", False) and not hasattr(sampler, "set_epoch"):
        seed = sampler.seed or 0

        def set_epoch(epoch: int) -> None:
            sampler.generator.manual_seed(seed + epoch)

        sampler.set_epoch = set_epoch
    return sampler


def wandb_offline_notice_to_stderr() -> None:
    """transformers 5 `print`s "[INFO] Running in WANDB offline mode" to stdout as it first imports
    `transformers.integrations.integration_utils` with WANDB_MODE=offline (as rlvr's docs set it): that
    import is made here, its stdout sent to stderr with the logs, so that stdout holds only what the
    CLIs print as results. A no-op once imported. Remove when transformers logs the notice instead."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        import transformers.integrations.integration_utils  # noqa: F401


@contextmanager
def counting_reward_tokens_in_state(trainer):
    """Around a `compute_loss` of TRL's RewardTrainer: its `num_tokens` metric (logged by evals too) counts in a private
    `_total_train_tokens` that checkpoints do not hold, so a resumed run counted again from 0. The count
    is kept in TrainerState's `num_input_tokens_seen` (saved with each checkpoint; transformers leaves it
    alone at its default include_num_input_tokens_seen="no") and taken from there. trl 1.16; remove when
    RewardTrainer's count survives a resume."""
    trainer._total_train_tokens = trainer.state.num_input_tokens_seen
    yield
    trainer.state.num_input_tokens_seen = trainer._total_train_tokens


def close_progress_bars() -> None:
    """Close every live tqdm bar (each draws its last state and a newline), so that a line written next
    stays the last one: a bar a failed step left open was drawn again below it when the process exited.
    tqdm keeps its live bars in the class's private `_instances`; tqdm 4; remove when tqdm can close them all."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


@contextmanager
def without_load_report():
    """While a policy loads, transformers' "<Model> LOAD REPORT" (a table of the weights it started random
    or dropped, logged as a warning by `log_state_dict_report`) is left out: rlvr refuses such a policy in
    one line naming them (models.loading.check_weights_fit). transformers 5.25
    (transformers/utils/loading_report.py); remove when from_pretrained can be told not to log it."""
    logger = logging.getLogger("transformers.modeling_utils")

    def not_the_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    logger.addFilter(not_the_report)
    try:
        yield
    finally:
        logger.removeFilter(not_the_report)
