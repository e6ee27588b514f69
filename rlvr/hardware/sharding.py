"""`hardware.sharding`: the model's parameters, gradients and optimizer state split across processes.

rlvr only chooses and checks; transformers and accelerate shard from the Trainer's own fields: `fsdp` /
`fsdp_config` (torch's FSDP2, a block per decoder layer from `_no_split_modules`) and `deepspeed`
(ZeRO stage 2 or 3, the optional `deepspeed` extra). Checkpoints are sharded; `final_model/` is
gathered into one Hugging Face directory that loads alone (docs/sharding.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from rlvr._compat import enable_fsdp_on_cpu, loading_whole, skip_deepspeed_shm_comm_op
from rlvr.errors import ConfigError
from rlvr.hardware.device import checkpointing_argument

log = logging.getLogger(__name__)
ZERO_STAGES = {"zero2": 2, "zero3": 3}  # with none and fsdp, the values of hardware.sharding
# What `accelerate launch --use_deepspeed` / `--use_fsdp` set for the processes it starts: a sharding of
# accelerate's own, set up whatever hardware.sharding says (DeepSpeed trained ZeRO-2 under sharding=none)
LAUNCHER_SHARDING = {"ACCELERATE_USE_DEEPSPEED": "--use_deepspeed", "ACCELERATE_USE_FSDP": "--use_fsdp"}


def check_sharding(hw, processes: int | None = None) -> None:
    """`hardware.sharding` (one of config.CHOICES) is a mode this start can run, in one line: 2 or more
    processes running (`processes`: the number this start runs; torchrun's need not be what the hardware
    asks for) or, where that is not known, asked for; DeepSpeed installed for zero2 / zero3. Part of
    the start-up check (rlvr/run.py), before anything is written. A launcher's own sharding flag is
    refused: rlvr sets the sharding up from hardware.sharding alone."""
    if flags := [flag for variable, flag in LAUNCHER_SHARDING.items() if os.environ.get(variable, "").lower() in ("true", "1")]:
        raise ConfigError(
            f"accelerate launch {flags[0]} sets up a sharding of its own, which rlvr does not record or check "
            f"(hardware.sharding={hw.sharding}): launch without it and set hardware.sharding=fsdp, zero2 or zero3"
        )
    if hw.sharding == "none":
        return
    if (processes or 1) < 2 and hw.nodes * hw.tasks_per_node < 2:
        raise ConfigError(
            f"hardware.sharding={hw.sharding} splits the model across processes, but this is one process and the "
            f"hardware asks for one (hardware.nodes x hardware.tasks_per_node = 1): ask for 2 or more, or sharding=none "
            f"(without GPUs, accelerate launch --num_processes N starts one process unless given --multi_gpu)"
        )
    if processes == 1:
        raise ConfigError(
            f"hardware.sharding={hw.sharding} splits the model across the {hw.nodes * hw.tasks_per_node} "
            f"processes the hardware asks for, but this is one process: start it with -m "
            f"hydra/launcher=local (or slurm), torchrun or accelerate launch, or use sharding=none"
        )
    if hw.sharding in ZERO_STAGES:
        use_deepspeed(hw.sharding)


def sharding_arguments(hw) -> dict:
    """The TrainingArguments fields of `hardware.sharding` (none: nothing, DDP as before)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's processes count whatever the hardware asks
    check_sharding(hw, launched if launched > 1 else None)
    if hw.sharding == "none":
        return {}
    if hw.sharding in ZERO_STAGES:
        return {"deepspeed": deepspeed_config(hw)}
    # Fully sharded, each decoder layer its own FSDP unit (transformers' defaults); activation
    # checkpointing by FSDP itself (the Trainer's own would all-gather each layer once more in backward).
    return {
        "fsdp": True,
        checkpointing_argument(): False,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,
            "state_dict_type": "SHARDED_STATE_DICT",
            "activation_checkpointing": hw.activation_checkpointing,
        },
    }


def deepspeed_config(hw) -> dict:
    """The DeepSpeed config of `hardware.sharding=zero2|zero3`: "auto" wherever transformers fills the
    value from the TrainingArguments or the model (batch sizes, clipping, precision, bucket sizes)."""
    use_deepspeed(hw.sharding)
    zero = {"stage": ZERO_STAGES[hw.sharding], "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if zero["stage"] == 3:
        zero |= {
            "stage3_prefetch_bucket_size": "auto",
            # A parameter with fewer elements than this stays whole on every process. "auto" is 10 x
            # hidden size: on a GPU it spares the gathers of norms and biases, whose latency costs more
            # than their memory. On CPU (tests, small models) 0: with "auto" a model as small as the tiny
            # one (hidden size 64) would not be split at all.
            "stage3_param_persistence_threshold": 0 if hw.device == "cpu" else "auto",
            # checkpoints and final_model/ get the whole model, gathered, beside the sharded state
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    return {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
    }


def use_deepspeed(mode: str) -> None:
    """DeepSpeed, ready for rlvr's trainers (no run waits on, or fails for want of, a compiler for an op
    ZeRO never uses: rlvr._compat.skip_deepspeed_shm_comm_op); one line if it is not installed."""
    try:
        import deepspeed.ops  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"hardware.sharding={mode} needs DeepSpeed, which is not installed ({exc}): pip install 'rlvr[deepspeed]'"
        ) from exc
    skip_deepspeed_shm_comm_op()


class ShardedTrainerMixin:
    """For every rlvr trainer: FSDP on CPU, DeepSpeed's comm started before anything loads under ZeRO, and a
    stop in one line if the asked sharding is not the one running."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("args") is not None and sharding_asked(kwargs["args"]).startswith("zero"):
            start_deepspeed_comm()  # before the trainer loads TRL's KL reference model
        super().__init__(*args, **kwargs)
        self.add_callback(MemoryReport())
        if sharding_asked(self.args) != "none":
            self.add_callback(ShardingCheck(self))

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    def _generate(self, prompts):  # GRPO-family trainers: the rollouts (TRL gathers ZeRO-3's parameters itself)
        with gathered_for_generation(self.model if self.is_fsdp_enabled else None):
            return super()._generate(prompts)


def start_deepspeed_comm() -> None:
    """DeepSpeed's own view of the process group, over the one accelerate started. Under ZeRO-3 every
    model transformers loads by path while a Trainer's arguments live (TRL's KL reference model) is
    split as it loads (deepspeed.zero.Init), which reads the number of processes from DeepSpeed: on a
    GPU accelerate starts it, on CPU it does not, and zero.Init then counts one process and stops on
    DeepSpeed's batch-size check (train_batch_size 32 != 16 * 1 * 1)."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        deepspeed.init_distributed(dist_backend=dist.get_backend())


def sharding_asked(args) -> str:
    """The `hardware.sharding` mode a Trainer's arguments ask for: none, fsdp, zero2 or zero3."""
    if args.fsdp_plugin_args is not None:
        return "fsdp"
    if args.deepspeed:
        return f"zero{args.hf_deepspeed_config.config['zero_optimization']['stage']}"
    return "none"


@contextlib.contextmanager
def generating_model(trainer):
    """The trainer's model, whole on every process for the length of the block (an eval during
    training): FSDP's by gathered_for_generation, ZeRO-3's by TRL's own gather (ZeRO-2 holds it whole)."""
    if trainer.is_deepspeed_enabled:
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            yield model
        return
    with gathered_for_generation(trainer.model if trainer.is_fsdp_enabled else None):
        yield trainer.model


@contextlib.contextmanager
def gathered_for_generation(model):
    """The whole model on every process for the length of the block (generation, an eval), then
    back to its shards. FSDP2 otherwise gathers a layer's shards at each forward and frees them
    after it: generating T tokens would gather the whole model T times, and processes generating
    different numbers of tokens or batches would wait on each other's gathers for ever. Every
    process gathers each layer once, together, at the start (as TRL's ds3_gather_for_generation
    does under ZeRO-3); inside, forwards need no collective. `None`: nothing to do (not sharded)."""
    if model is None:  # before the import: FSDPModule is public from torch 2.6, rlvr runs on 2.4 too
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(True, recurse=False)


def local_part(tensor):
    """This process's part of a tensor: a ZeRO-3 parameter's partition, an FSDP2 (DTensor) parameter's
    or state's local shard, else the tensor itself. By attribute, not class: DTensor's import path
    moved between torch 2.4 and 2.5, and every run (MemoryReport) asks."""
    if hasattr(tensor, "ds_tensor"):
        return tensor.ds_tensor
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def non_finite_share(trainer) -> float:
    """The share of the trained model's parameter elements that are NaN or infinite, over what every
    process holds (`local_part`; whole copies count once per process, which leaves the share as it is).
    Every process must call it (a gather), and gets the same value."""
    import torch

    bad = held = 0
    for parameter in trainer.model.parameters():
        local = local_part(parameter)
        if local.is_floating_point() and local.numel():  # not a 4-bit base's packed bytes
            held += local.numel()
            bad += local.numel() - int(torch.isfinite(local).sum())
    counts = torch.tensor([[bad, held]], dtype=torch.float64, device=trainer.accelerator.device)
    bad, held = trainer.accelerator.gather(counts).sum(dim=0).tolist()
    return bad / held if held else 0.0


def full_numel(tensor) -> int:
    return getattr(tensor, "ds_numel", None) or tensor.numel()  # a ZeRO-3 parameter's own tensor is empty


def held_size(tensor) -> int:
    local = local_part(tensor)
    return local.numel() * local.element_size()


def zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimizer (inside accelerate's wrapper), or None under FSDP / DDP."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner if any(hasattr(inner, name) for name in MASTER_PARTITIONS) else None


# Where a ZeRO optimizer keeps the fp32 master weights it updates, this process's partition of them:
# stages 1-2, stage 3. A copy beside the model's own parameters, also in fp32 training (DeepSpeed clones them).
MASTER_PARTITIONS = ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat")


def master_partitions(zero) -> list:
    return next(list(getattr(zero, name)) for name in MASTER_PARTITIONS if hasattr(zero, name))


def sharded_fraction(model, optimizer=None) -> float:
    """Parameters this process holds / the model's parameters (1.0: not sharded); under ZeRO-2, whose
    parameters are whole everywhere, the share of the optimizer's master weights (its state is per element of them)."""
    params = list(model.parameters())
    total = max(sum(map(full_numel, params)), 1)
    zero = zero_optimizer(optimizer)
    if zero is not None and not any(hasattr(p, "ds_tensor") for p in params):
        trainable = max(sum(full_numel(p) for p in params if p.requires_grad), 1)
        return sum(t.numel() for t in master_partitions(zero)) / trainable
    return sum(local_part(p).numel() for p in params) / total


def check_running(trainer, asked: str) -> float:
    """Raise in one line unless the asked sharding is what runs and this process holds only part of
    the model (zero2: of its optimizer state); returns the part it holds. Asked is never assumed: a
    flag can be dropped on the way (enable_fsdp_on_cpu)."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    expected = DistributedType.FSDP if asked == "fsdp" else DistributedType.DEEPSPEED
    if accelerator.distributed_type != expected:
        raise ConfigError(
            f"hardware.sharding={asked} was asked, but accelerate runs {accelerator.distributed_type.value} "
            f"with {accelerator.num_processes} process(es): the model is not sharded"
        )
    fraction = sharded_fraction(trainer.model, trainer.optimizer)
    if fraction >= 1.0:
        what = "optimizer state" if asked == "zero2" else "model"
        raise ConfigError(
            f"hardware.sharding={asked}: process {accelerator.process_index} holds the whole {what} "
            f"after the trainer wrapped it (nothing was sharded)"
        )
    return fraction


class ShardingCheck(TrainerCallback):
    """At the start of training, once the trainer has wrapped the model: check_running, and log what each process holds."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        asked = sharding_asked(args)
        fraction = check_running(self.trainer, asked)
        log.info(
            "sharding: process %d holds %.1f%% of the %s",
            self.trainer.accelerator.process_index,
            100 * fraction,
            "optimizer state" if asked == "zero2" else "parameters",
        )


def held_bytes(model, optimizer) -> dict[str, int]:
    """Bytes of parameters, gradients (one per trainable parameter, as allocated in backward) and
    optimizer state that this process holds: its shards under FSDP, everything under DDP. Under ZeRO:
    the model's parameters (ZeRO-3: their partitions) plus the fp32 master partition, one gradient per
    element of that partition (DeepSpeed reduces them into it; its reduce buckets, bounded by
    reduce_bucket_size, are not counted) and the state of the optimizer stepping that partition."""
    import torch

    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    held = {
        "parameters": sum(map(held_size, params)),
        "gradients": sum(held_size(p) for p in params if p.requires_grad),
        "optimizer_state": sum(map(held_size, state)),
    }
    zero = zero_optimizer(optimizer)
    if zero is not None:
        masters = master_partitions(zero)
        held["parameters"] += sum(t.numel() * t.element_size() for t in masters)
        held["gradients"] = sum(t.numel() for t in masters) * next(p.element_size() for p in params if p.requires_grad)
    return held


class MemoryReport(TrainerCallback):
    """One log line per process after the first optimizer step (state is allocated by then): what
    it holds of parameters, gradients and optimizer state; and its peak resident memory at the end.
    Tells a user what sharding saved, and `make bench` reads them."""

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step == 1 and model is not None and optimizer is not None:
            held = held_bytes(model, optimizer)
            log.info(
                "memory: process %d holds %s bytes (parameters %d, gradients %d, optimizer state %d)",
                args.process_index,
                sum(held.values()),
                held["parameters"],
                held["gradients"],
                held["optimizer_state"],
            )

    def on_train_end(self, args, state, control, **kwargs):
        import resource

        log.info("memory: process %d peak RSS %d kB", args.process_index, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def save_gathered(trainer, tokenizer, model_cfg, run_dir: Path):
    """final_model/ (and a LoRA run's final_adapter/) of a sharded run, gathered into one Hugging Face
    directory by process 0; returns the model loaded back from it, whole, on every process (the
    evals after training run data-parallel on plain copies, not through the shards' collectives)."""
    from peft import PeftModel

    from rlvr.hardware.distributed import barrier, is_main_process

    model = trainer.accelerator.unwrap_model(trainer.model)
    if not trainer.is_deepspeed_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)  # whole on process 0, empty elsewhere
    elif trainer.deepspeed is not None:  # from ZeRO's engine (ZeRO-3: gathered, stage3_gather_16bit_weights_on_model_save)
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)
    else:  # no engine: this start trained nothing (it finishes a run from its last checkpoint), the model is whole
        state_dict = model.state_dict()
    lora = isinstance(model, PeftModel)
    model_class = type(model.get_base_model() if lora else model)  # a causal LM, or a reward model's classifier
    saved = run_dir / ("final_adapter" if lora else "final_model")
    base = model.get_base_model().config.name_or_path if lora else None  # initial_policy/ or a Hub name

    def load(path):  # whole, in the trained dtype
        with loading_whole():
            return model_class.from_pretrained(path, dtype=model.dtype)

    if is_main_process():
        for tied in getattr(model, "all_tied_weights_keys", None) or {}:  # gathered as copies: save_pretrained would keep both
            state_dict.pop(tied, None)
        model.save_pretrained(saved, state_dict=state_dict)
        tokenizer.save_pretrained(saved)
        if lora and model_cfg.lora.save_merged:
            merged = PeftModel.from_pretrained(load(base), saved).merge_and_unload()
            merged.save_pretrained(run_dir / "final_model")
            tokenizer.save_pretrained(run_dir / "final_model")
    del state_dict
    barrier()
    if lora and not model_cfg.lora.save_merged:
        return PeftModel.from_pretrained(load(base), saved)
    return load(run_dir / "final_model")
