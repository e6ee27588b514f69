"""Checkpoints of a run that can stop and come back: marked `COMPLETE` once the Trainer has written
them (the marker lists each file and its size), checked before a resume (a corrupt one is marked
`CORRUPT` and the previous one used), rotated only after the new one is complete."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import zipfile
from pathlib import Path

from rlvr.hardware.distributed import is_main_process

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
CORRUPT = "CORRUPT"  # what a corrupt checkpoint's COMPLETE marker is renamed to


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def numbered_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Every `checkpoint-N` dir, lowest step first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted((p for p in checkpoint_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=checkpoint_step)


def latest_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` that carries the COMPLETE marker and passes `checkpoint_problem`
    (its files are whole) and `state_problem` (its training state loads); half-written ones are
    ignored, corrupt ones reported in one line naming why and marked CORRUPT (so that the step, when
    trained again, is not taken for complete while it is being rewritten), and the previous complete
    one is tried next. None when none is left: the run starts over, as after a crash before its first
    checkpoint. Every rank finds the same one; rank 0 alone renames."""
    for path in reversed([p for p in numbered_checkpoints(checkpoint_dir) if (p / COMPLETE).exists()]):
        problem = checkpoint_problem(path) or state_problem(path)
        if problem is None:
            return path
        log.warning("%s is marked complete but is corrupt (%s): using the previous complete checkpoint, if any", path, problem)
        if is_main_process():
            os.replace(path / COMPLETE, path / CORRUPT)
    return None


def mark_complete(checkpoint: Path, step: int) -> None:
    """Write `checkpoint`'s COMPLETE marker: its step, then the size of each file it holds, by path
    (`checkpoint_problem` holds the checkpoint to them: a file deleted or cut since is found). Written
    whole or not at all (a temporary file renamed)."""
    partial = checkpoint / f".{COMPLETE}.tmp"
    markers = {checkpoint / COMPLETE, checkpoint / CORRUPT, partial}
    files = {str(f.relative_to(checkpoint)): f.stat().st_size for f in sorted(checkpoint.rglob("*")) if f.is_file() and f not in markers}
    partial.write_text(f"{step}\n{json.dumps(files)}\n")
    os.replace(partial, checkpoint / COMPLETE)


def marked_files(checkpoint: Path) -> dict[str, int]:
    """{file: size} as `mark_complete` listed them (ValueError if the marker does not parse)."""
    lines = (checkpoint / COMPLETE).read_text().splitlines()
    files = json.loads(lines[1]) if len(lines) > 1 else {}
    if not (isinstance(files, dict) and all(isinstance(size, int) for size in files.values())):
        raise ValueError("not a list of files and sizes")
    return files


def checkpoint_problem(path: Path) -> str | None:
    """What makes a checkpoint unusable, found without reading a tensor: a file its COMPLETE marker
    lists that is gone or of another size, JSON files that do not parse, safetensors whose header or
    size is off, torch files cut before their zip directory; None if none."""
    if not (path / "trainer_state.json").is_file():
        return "no trainer_state.json"
    try:
        listed = marked_files(path) if (path / COMPLETE).exists() else {}
    except (OSError, ValueError) as exc:
        return f"{COMPLETE}: {exc}"
    for name, size in listed.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if (now := (path / name).stat().st_size) != size:
            return f"{name} is {now} bytes, {size} when the checkpoint was marked complete"
    for file in sorted(path.rglob("*")):
        name = file.relative_to(path)
        try:
            if file.suffix == ".json":
                json.loads(file.read_bytes())
            elif file.suffix == ".safetensors":
                problem = safetensors_problem(file)
                if problem:
                    return f"{name}: {problem}"
            elif file.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(file).close()  # torch.save's format: the directory is at the end
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return f"{name}: {exc}"
    return None


def state_problem(checkpoint: Path) -> str | None:
    """What of `checkpoint`'s training state a resume could not load, found by loading each file as the
    Trainer does (`torch.load(weights_only=True)`, `TrainerState.load_from_json`) and checking that
    it holds what the Trainer takes from it, without reading tensor data (mmap) or touching the
    process's random generators; None if all of it loads. Files a checkpoint lacks are not checked:
    the Trainer skips them too (an FSDP or DeepSpeed optimizer is saved elsewhere)."""
    checks = {
        "trainer_state.json": trainer_state_problem,
        "optimizer.pt": optimizer_state_problem,
        "scheduler.pt": scheduler_state_problem,
        "scaler.pt": scaler_state_problem,
    }
    files = [(checkpoint / name, check) for name, check in checks.items()]
    files += [(file, rng_state_problem) for file in sorted(checkpoint.glob("rng_state*.pth"))]
    for file, check in files:
        if not file.is_file():
            continue
        try:
            problem = check(file)
        except Exception as exc:  # noqa: BLE001  whatever the Trainer's own load would have raised
            return f"{file.name} does not load: {one_line(exc)}"
        if problem:
            return f"{file.name}: {problem}"
    return None


def one_line(exc: Exception) -> str:
    """An exception as one short line: its type and first line, its first sentence if that line runs on."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text.split('. ')[0] if len(text) > 200 else text}"


def load_torch_state(file: Path):
    """`file` as the Trainer loads it (weights_only, numpy's types allowed), its tensors left on disk."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def trainer_state_problem(file: Path) -> str | None:
    from transformers import TrainerState

    step = TrainerState.load_from_json(str(file)).global_step
    return None if isinstance(step, int) and step >= 0 else f"global_step {step!r} is not a step count"


def optimizer_state_problem(file: Path) -> str | None:
    state = load_torch_state(file)
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not (
        isinstance(groups, list)
        and isinstance(state.get("state"), dict)
        and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups)
    ):
        return "not an optimizer's state_dict (state, param_groups)"
    return None


def scheduler_state_problem(file: Path) -> str | None:
    state = load_torch_state(file)
    return None if isinstance(state, dict) and "last_epoch" in state else "not a scheduler's state_dict (last_epoch)"


def scaler_state_problem(file: Path) -> str | None:
    return None if isinstance(load_torch_state(file), dict) else "not a gradient scaler's state_dict"


def rng_state_problem(file: Path) -> str | None:
    """The python, numpy and CPU torch states, each set on a generator of its own (device states are
    not checked: the Trainer only warns when it cannot set them)."""
    import random

    import numpy as np
    import torch

    state = load_torch_state(file)
    if not (isinstance(state, dict) and {"python", "numpy", "cpu"} <= state.keys()):
        return "not an RNG state (python, numpy, cpu)"
    random.Random().setstate(state["python"])
    np.random.RandomState().set_state(state["numpy"])
    torch.Generator().set_state(state["cpu"])
    return None


def safetensors_problem(file: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then exactly the bytes it maps."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        if size < 8:
            return f"{size} bytes, shorter than a header"
        (length,) = struct.unpack("<Q", handle.read(8))
        if 8 + length > size:
            return f"{size} bytes, shorter than its {length}-byte header"
        header = json.loads(handle.read(length))
    try:
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError):
        return "a header that maps no tensors"
    return None if size == 8 + length + end else f"{size} bytes where its header maps {8 + length + end}"


def rotate_checkpoints(checkpoint_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints; delete older ones and unmarked ones below the newest.
    Called after the newest is marked complete, so a crash at any moment leaves one to resume from."""
    if not keep or keep <= 0:
        return
    checkpoints = numbered_checkpoints(checkpoint_dir)
    complete = [p for p in checkpoints if (p / COMPLETE).exists()]
    if not complete:
        return
    kept = set(complete[-keep:])
    newest = checkpoint_step(complete[-1])
    for path in checkpoints:
        if path not in kept and checkpoint_step(path) < newest:
            shutil.rmtree(path, ignore_errors=True)
