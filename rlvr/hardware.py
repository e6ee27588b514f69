"""The `hardware` group: device, precision and threads, as TRL/transformers arguments."""

from __future__ import annotations

from rlvr.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")


def apply_threads(hw) -> None:
    """Set torch's intra-op threads (a 100k-parameter model runs faster on one thread than two)."""
    if hw.torch_threads:
        import torch

        torch.set_num_threads(hw.torch_threads)


def trainer_arguments(hw) -> dict:
    """Keyword arguments shared by every TRL config (GRPOConfig, SFTConfig, RewardConfig)."""
    if hw.device not in ("cpu", "cuda"):
        raise ConfigError(f"hardware.device={hw.device!r} must be 'cpu' or 'cuda'")
    if hw.precision not in PRECISIONS:
        raise ConfigError(f"hardware.precision={hw.precision!r} must be one of {', '.join(PRECISIONS)}")
    if hw.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("hardware.device=cuda but torch sees no GPU: use hardware=cpu")
    elif hw.precision != "fp32":
        raise ConfigError(f"hardware.precision={hw.precision} needs a GPU; on CPU use precision=fp32")
    return {
        "use_cpu": hw.device == "cpu",
        "bf16": hw.precision == "bf16",
        "fp16": hw.precision == "fp16",
        "tf32": hw.tf32 if hw.device == "cuda" else None,
        "activation_checkpointing": hw.activation_checkpointing,
    }


def torch_device(hw) -> str:
    """This process's device: with several processes on a node, each its own GPU (LOCAL_RANK)."""
    import os

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if hw.device == "cuda" else "cpu"
