"""The `hardware` group: device, precision and threads, as TRL/transformers arguments."""

from __future__ import annotations

import os

from rlvr.errors import ConfigError


def export_device_environment(hw) -> None:
    """hardware.device=mps: PYTORCH_ENABLE_MPS_FALLBACK=1 (ops MPS lacks run on the CPU instead of
    failing). torch reads it when it is imported, so this runs before anything imports torch."""
    if hw.device == "mps":
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


def check_device(hw) -> None:
    """The device (one of config.CHOICES) exists and takes the precision: one line before anything loads."""
    import torch

    if hw.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but torch sees no GPU: use hardware=cpu")
    if hw.device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "hardware.device=mps but torch sees no Apple-silicon GPU (MPS needs a Mac with Apple silicon and macOS 12.3+): use hardware=cpu"
        )
    if hw.device != "cuda" and hw.precision != "fp32":
        raise ConfigError(f"hardware.precision={hw.precision} needs a CUDA GPU; on {hw.device} use precision=fp32")


def apply_threads(hw) -> None:
    """Set torch's intra-op threads (a 100k-parameter model runs faster on one thread than two)."""
    if hw.torch_threads:
        import torch

        torch.set_num_threads(hw.torch_threads)


def trainer_arguments(hw, shard: bool = True) -> dict:
    """Keyword arguments shared by every TRL config (GRPOConfig, SFTConfig, RewardConfig); `shard=False`:
    without `hardware.sharding` (the SFT warm-up runs data-parallel)."""
    check_device(hw)
    from rlvr.sharding import trainer_arguments as sharding_arguments

    return {
        "use_cpu": hw.device == "cpu",
        "bf16": hw.precision == "bf16",
        "fp16": hw.precision == "fp16",
        "tf32": hw.tf32 if hw.device == "cuda" else None,
        "activation_checkpointing": hw.activation_checkpointing,
    } | (sharding_arguments(hw) if shard else {})


def torch_device(hw) -> str:
    """This process's device: with several processes on a node, each its own GPU (LOCAL_RANK)."""
    if hw.device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return hw.device
