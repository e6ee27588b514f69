"""`hardware.sharding`: the model's parameters, gradients and optimizer state split across processes.

rlvr only chooses and checks; the sharding is torch's FSDP2 (`fully_shard`) as transformers and
accelerate apply it from the Trainer's own `fsdp` / `fsdp_config` fields. Each block wraps the
model's decoder-layer class (transformers' `_no_split_modules`, accelerate's default), so no
model needs its class named in a config.

Checkpoints are sharded (each process writes its own shard: no process ever holds the whole
optimizer state); `final_model/` is gathered into one Hugging Face directory that loads alone.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from transformers import TrainerCallback

from rlvr.errors import ConfigError

log = logging.getLogger(__name__)
SHARDING = ("none", "fsdp")


def trainer_arguments(hw) -> dict:
    """The TrainingArguments fields of `hardware.sharding` (none: nothing, DDP as before)."""
    if hw.sharding not in SHARDING:
        raise ConfigError(f"hardware.sharding={hw.sharding!r} must be one of {', '.join(SHARDING)}")
    if hw.sharding == "none":
        return {}
    if hw.nodes * hw.tasks_per_node < 2:
        raise ConfigError(f"hardware.sharding={hw.sharding} splits the model across processes, but the hardware asks "
                          f"for one (hardware.nodes x hardware.tasks_per_node = 1): ask for 2 or more, or sharding=none")
    # Fully sharded, each decoder layer its own FSDP unit (transformers' defaults); activation
    # checkpointing by FSDP itself (the Trainer's own would all-gather each layer once more in backward).
    return {"fsdp": True, "activation_checkpointing": False,
            "fsdp_config": {"version": 2, "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT",
                            "activation_checkpointing": hw.activation_checkpointing}}


class ShardedTrainerMixin:
    """For every rlvr trainer: FSDP on CPU, and a stop in one line if the asked sharding is not the one running."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(MemoryReport())
        if self.args.fsdp_plugin_args is not None:
            self.add_callback(ShardingCheck(self))

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    def _generate(self, prompts):  # GRPO-family trainers: the rollouts
        with gathered_for_generation(self.model if self.is_fsdp_enabled else None):
            return super()._generate(prompts)


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


def enable_fsdp_on_cpu(trainer) -> None:
    """accelerate 1.15 turns an FSDP plugin into `DistributedType.FSDP` for GPU-like devices only: on
    CPU (MULTI_CPU, gloo) it drops the plugin without a word and trains plain DDP. FSDP2 itself works
    on CPU with gloo, so set the state accelerate sets on a GPU. Applied only on CPU and only when
    FSDP is asked; tests/sharding fails the day accelerate does this itself (then remove this)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    log.info("FSDP on CPU: accelerate would have trained plain DDP here; rlvr turned its FSDP2 on")


def local_part(tensor):
    """This process's part of a tensor: an FSDP2 (DTensor) parameter's or state's local shard, else the
    tensor itself. By its method, not its class: DTensor's import path moved between torch 2.4 and 2.5,
    and every run (MemoryReport) asks."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def held_size(tensor) -> int:
    local = local_part(tensor)
    return local.numel() * local.element_size()


def sharded_fraction(model) -> float:
    """Parameters this process holds / the model's parameters (1.0: not sharded)."""
    params = list(model.parameters())
    return sum(local_part(p).numel() for p in params) / max(sum(p.numel() for p in params), 1)


def check_running(accelerator, model) -> float:
    """Raise in one line unless FSDP is what runs and this process holds only part of the model;
    returns the part it holds. Asked is never assumed: a flag can be dropped on the way (above)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        raise ConfigError(f"hardware.sharding=fsdp was asked, but accelerate runs {accelerator.distributed_type.value} "
                          f"with {accelerator.num_processes} process(es): the model is not sharded")
    fraction = sharded_fraction(model)
    if fraction >= 1.0:
        raise ConfigError(f"hardware.sharding=fsdp: process {accelerator.process_index} holds the whole model "
                          f"after FSDP wrapped it (nothing was sharded)")
    return fraction


class ShardingCheck(TrainerCallback):
    """At the start of training, once the trainer has wrapped the model: check_running, and log what each process holds."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        fraction = check_running(self.trainer.accelerator, self.trainer.model)
        log.info("sharding: process %d holds %.1f%% of the parameters", self.trainer.accelerator.process_index,
                 100 * fraction)


def held_bytes(model, optimizer) -> dict[str, int]:
    """Bytes of parameters, gradients (one per trainable parameter, as allocated in backward) and
    optimizer state that this process holds: its shards under FSDP, everything under DDP."""
    import torch

    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {"parameters": sum(map(held_size, params)),
            "gradients": sum(held_size(p) for p in params if p.requires_grad),
            "optimizer_state": sum(map(held_size, state))}


class MemoryReport(TrainerCallback):
    """One log line per process after the first optimizer step (state is allocated by then): what
    it holds of parameters, gradients and optimizer state; and its peak resident memory at the end.
    Tells a user what sharding saved, and `make bench` reads them."""

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step == 1 and model is not None and optimizer is not None:
            held = held_bytes(model, optimizer)
            log.info("memory: process %d holds %s bytes (parameters %d, gradients %d, optimizer state %d)",
                     args.process_index, sum(held.values()), held["parameters"], held["gradients"],
                     held["optimizer_state"])

    def on_train_end(self, args, state, control, **kwargs):
        import resource

        log.info("memory: process %d peak RSS %d kB", args.process_index,
                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def save_gathered(trainer, tokenizer, model_cfg, run_dir: Path):
    """final_model/ (and a LoRA run's final_adapter/) of a sharded run, gathered into one Hugging Face
    directory by process 0; returns the model loaded back from it, whole, on every process (the
    evals after training run data-parallel on plain copies, not through the shards' collectives)."""
    from peft import PeftModel

    from rlvr.distributed import barrier, is_main_process

    state_dict = trainer.accelerator.get_state_dict(trainer.model)  # whole on process 0, empty elsewhere
    model = trainer.accelerator.unwrap_model(trainer.model)
    lora = isinstance(model, PeftModel)
    model_class = type(model.get_base_model() if lora else model)  # a causal LM, or a reward model's classifier
    saved = run_dir / ("final_adapter" if lora else "final_model")
    base = model.get_base_model().config.name_or_path if lora else None  # initial_policy/ or a Hub name
    load = lambda path: model_class.from_pretrained(path, dtype=model.dtype)  # noqa: E731  whole, in the trained dtype
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
