"""The SFT warm-up's result, kept once per machine (`rlvr.models.machine_cache`, kind `warmups`).

A run that would train a warm-up this machine has trained before (the same initial weights, tokenizer
and chat-template settings, pairs and SFT settings, the same processes, threads, device and library
versions: `warmup_key`) loads what the first one left instead: most of a built-in model's run on a
CPU is its warm-up, and sweeps and reruns repeat it. What a warm-up leaves besides the weights is kept
with them, so that a run that loads it goes on as one that trained it: its final loss, how many pairs
it cut, and the states of the random number generators (python's, numpy's, torch's), which decide
what is drawn next (the hybrid reward's calibration samples before the RL trainer seeds anything).
The SFT trainer's other traces on the model are removed after training (`forget_trainer_state`), so
a trained and a loaded warm-up leave the same model.

Written by the job's first process, where every process ends the warm-up with the same generator
states (their weights are the same by data parallelism); loaded only where every process finds it.
A cache that cannot be written is a warning. `model.warmup_sft_cache=false` trains the warm-up
whatever the cache holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlvr.errors import RlvrError
from rlvr.models.machine_cache import built_once, cache_dir

log = logging.getLogger(__name__)

KIND, RECORD, WEIGHTS, GENERATORS = "warmups", "record.json", "model.safetensors", "generators.safetensors"
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
    add(torch.__version__, transformers.__version__, trl.__version__, model.device.type, torch.get_num_threads(), args.world_size)
    add(json.dumps(settings, sort_keys=True, default=str), model.config.to_json_string(), type(model).__name__)
    for name, tensor in model.state_dict().items():
        add(name, tensor.dtype, tuple(tensor.shape), tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    add(tokenizer.backend_tokenizer.to_str(), tokenizer.chat_template, tokenizer.special_tokens_map, tokenizer.padding_side)
    add(tokenizer.truncation_side, tokenizer.model_max_length)
    # the chat template's settings (algorithm.trl.chat_template_kwargs), bound to the tokenizer before the warm-up renders its pairs
    add(json.dumps(getattr(tokenizer.apply_chat_template, "keywords", None), sort_keys=True, default=str))
    for row in pairs:
        add(json.dumps(row, sort_keys=True))
    return digest.hexdigest()[:32]


def kept_warmup(key: str | None) -> Path | None:
    """The kept warm-up of `key` where every process of the job finds it, else None (every process trains)."""
    from accelerate.utils import gather_object  # each process's list, joined (this one's alone in one process)

    path = cache_dir(KIND) / key if key is not None else None
    found = path is not None and (path / RECORD).is_file()
    return path if all(gather_object([found])) else None


@dataclass(frozen=True)
class KeptWarmup:
    loss: float
    cut: int  # pairs cut to the context, or dropped
    pairs: int


def load_warmup(model, path: Path) -> KeptWarmup:
    """Load the kept warm-up at `path` into `model` and the random number generators; a copy that cannot
    be read (damaged, or of another rlvr) is one line naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    try:
        record = json.loads((path / RECORD).read_text())
        kept = KeptWarmup(float(record["loss"]), int(record["cut"]), int(record["pairs"]))
        load_model(model, path / WEIGHTS, strict=True, device=str(model.device))
        set_generator_states(record["generators"], load_file(path / GENERATORS))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as exc:
        raise RlvrError(
            f"the machine cache's copy of this SFT warm-up ({path}) cannot be read ({exc!r}): "
            "delete it, or set model.warmup_sft_cache=false"
        ) from exc
    return kept


def keep_warmup(key: str, model, kept: KeptWarmup) -> None:
    """Keep the warm-up just trained under `key`, from the job's first process, where every process
    ends it with the same generator states; a cache that cannot be written is a warning."""
    from accelerate.utils import gather_object
    from safetensors import SafetensorError
    from safetensors.torch import save_file, save_model

    from rlvr.hardware.distributed import is_main_process

    generators, tensors = generator_states()
    states = hashlib.sha256(json.dumps(generators).encode() + b"".join(t.numpy().tobytes() for t in tensors.values())).hexdigest()
    if len(set(gather_object([states]))) > 1:
        log.info("SFT warm-up: not kept in the machine cache (its processes end it with different random states)")
        return
    if not is_main_process():
        return

    def write(directory: Path) -> None:
        save_model(model, str(directory / WEIGHTS))
        save_file(tensors, str(directory / GENERATORS))
        (directory / RECORD).write_text(json.dumps({"loss": kept.loss, "cut": kept.cut, "pairs": kept.pairs, "generators": generators}))

    try:
        built_once(KIND, key, RECORD, write)
    except (OSError, SafetensorError) as exc:  # safetensors reports a failed write (disk full) as its own error
        log.warning("SFT warm-up: not kept in the machine cache (%s): the next run trains it again", exc)


def generator_states() -> tuple[dict, dict[str, torch.Tensor]]:
    """The states `transformers.set_seed` sets: python's and numpy's (as JSON), torch's (tensors; CUDA's too once started)."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    generators = {"python": [version, list(state), gauss], "numpy": [name, keys.tolist(), position, has_gauss, cached]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        tensors |= {f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    return generators, tensors


def set_generator_states(generators: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Set the states `generator_states` returned."""
    version, state, gauss = generators["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = generators["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    for name, state in tensors.items():
        if name.startswith("cuda."):
            torch.cuda.set_rng_state(state, int(name.split(".")[1]))


def forget_trainer_state(model, attributes: set[str], use_cache) -> None:
    """Undo what the SFT trainer leaves on `model` besides its weights (found by comparing a model
    before and after a warm-up): accelerate's mark that the model is prepared (the RL trainer's
    accelerator then skipped preparing it), the bound `forward` it unwraps back, TRL's model tags, and
    `config.use_cache`. `attributes` are the model's own attributes before the warm-up."""
    for name in set(vars(model)) - attributes:
        delattr(model, name)
    model.config.use_cache = use_cache
