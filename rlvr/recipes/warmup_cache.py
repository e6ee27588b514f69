"""The SFT warm-up's result, kept once per machine (`rlvr.models.machine_cache`, kind `warmups`).

A run that would train a warm-up this machine has trained before (the same initial weights, tokenizer,
pairs and SFT settings, the same processes, threads, device and library versions: `warmup_key`) loads
what the first one left instead: most of a built-in model's run on a CPU is its warm-up, and sweeps and
reruns repeat it. Its final loss and the number of pairs it cut are kept with the weights. The warm-up's
other traces on the model are removed after training (`forget_trainer_state`), so a trained and a
loaded warm-up leave the same model; the random draws it made leave none, as the RL trainer seeds every
generator as it starts, before it draws anything (TRL's GRPOTrainer: before it adds a LoRA adapter).

Written by the job's first process (every process ends a data-parallel warm-up with the same weights);
loaded only when every process finds it. `model.warmup_sft_cache=false` trains the warm-up whatever the
cache holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from rlvr.errors import RlvrError
from rlvr.models.machine_cache import built_once, cache_dir

log = logging.getLogger(__name__)

KIND, MARKER, WEIGHTS = "warmups", "warmup.json", "model.safetensors"
# A bigger model's warm-up is trained each time: its copy (GBs) would cost more disk than the time it saves.
MAX_PARAMETERS = 100_000_000


def warmup_key(model, tokenizer, pairs, args) -> str | None:
    """A digest of everything a warm-up's result depends on; None where it is not kept: a model over
    MAX_PARAMETERS, a quantized one, one on a device other than CPU or CUDA, or a tokenizer that is not
    a fast one or has no pad token (TRL then sets one on the tokenizer, a change the copy would lack)."""
    import transformers
    import trl

    if (
        sum(p.numel() for p in model.parameters()) > MAX_PARAMETERS
        or getattr(model, "is_quantized", False)
        or model.device.type not in ("cpu", "cuda")
        or not getattr(tokenizer, "is_fast", False)
        or tokenizer.pad_token is None
    ):
        return None
    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(part if isinstance(part, bytes) else str(part).encode())
            digest.update(b"\0")

    settings = {k: v for k, v in args.to_dict().items() if k != "output_dir"}
    add(torch.__version__, transformers.__version__, trl.__version__, model.device, torch.get_num_threads(), args.world_size)
    add(json.dumps(settings, sort_keys=True, default=str), model.config.to_json_string(), type(model).__name__)
    for name, tensor in model.state_dict().items():
        add(name, tensor.dtype, tuple(tensor.shape), tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    add(tokenizer.backend_tokenizer.to_str(), tokenizer.chat_template, tokenizer.special_tokens_map, tokenizer.padding_side)
    add(tokenizer.truncation_side, tokenizer.model_max_length)
    for row in pairs:
        add(json.dumps(row, sort_keys=True))
    return digest.hexdigest()[:32]


def _every_process(value) -> list:
    """`value` of each process of the job (this one's alone outside torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def kept_warmup(key: str | None) -> Path | None:
    """The kept warm-up of `key` where every process of the job finds it, else None (every process trains)."""
    path = cache_dir(KIND) / key if key is not None else None
    found = path is not None and (path / MARKER).is_file()
    return path if all(_every_process(found)) else None


def load_warmup(model, path: Path) -> dict:
    """Load a kept warm-up into `model` and the generators; returns its record (`loss`, `cut`, `pairs`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        record = json.loads((path / MARKER).read_text())
        load_model(model, path / WEIGHTS, strict=True, device=str(model.device))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise RlvrError(
            f"the machine cache's copy of this SFT warm-up ({path}) cannot be read ({exc}): delete it, or set model.warmup_sft_cache=false"
        ) from exc
    return record


def keep_warmup(key: str, model, loss: float, cut: int, pairs: int) -> None:
    """Keep the warm-up just trained under `key` (the job's first process); a cache that cannot be
    written is a warning, not a failure."""
    from safetensors.torch import save_model

    from rlvr.hardware.distributed import is_main_process

    if not is_main_process():
        return

    def write(directory: Path) -> None:
        save_model(model, str(directory / WEIGHTS))
        (directory / MARKER).write_text(json.dumps({"loss": loss, "cut": cut, "pairs": pairs}))

    try:
        built_once(KIND, key, MARKER, write)
    except OSError as exc:
        log.warning("SFT warm-up: not kept in the machine cache (%s): the next run trains it again", exc)


def forget_trainer_state(model, attributes: set[str], use_cache) -> None:
    """Undo what the SFT trainer leaves on `model` besides its weights (found by comparing a model
    before and after a warm-up): accelerate's mark that the model is prepared (the RL trainer's
    accelerator then skipped preparing it), the bound `forward` it unwraps back, TRL's model tags, and
    `config.use_cache`. `attributes` are the model's own attributes before the warm-up."""
    for name in set(vars(model)) - attributes:
        delattr(model, name)
    model.config.use_cache = use_cache
