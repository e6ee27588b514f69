"""A complete-marked checkpoint whose training state cannot be loaded (optimizer, scheduler, RNG or
trainer state) is found before the resume loads it: reported in one line, marked CORRUPT, and the
previous complete checkpoint used; with none left, the run starts over."""

import json
import logging

import pytest

from conftest import garble
from rlvr.hardware.checkpoints import COMPLETE, CORRUPT, checkpoint_problem, latest_complete_checkpoint


def checkpoint(checkpoint_dir, step, ranks=1):
    """A checkpoint as the Trainer writes one: weights, optimizer, scheduler, RNG and trainer state."""
    import random

    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import TrainerState

    path = checkpoint_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    weight = torch.nn.Parameter(torch.ones(8, 8))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.ones(8, 8)
    optimizer.step()
    save_file({"w": weight.detach()}, str(path / "model.safetensors"))
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    torch.save(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0).state_dict(), path / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    for name in ["rng_state.pth"] if ranks == 1 else [f"rng_state_{r}.pth" for r in range(ranks)]:
        torch.save(rng, path / name)
    TrainerState(global_step=step).save_to_json(str(path / "trainer_state.json"))
    (path / COMPLETE).write_text(f"{step}\n")
    return path


def reported(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rlvr.hardware.checkpoints"]


def not_an_optimizer_state(file):
    import torch

    torch.save({"param_groups": "?"}, file)


@pytest.mark.parametrize(
    ("file", "spoil", "why"),
    [
        ("optimizer.pt", lambda f: garble(f, b"param_groups"), "optimizer.pt does not load: UnicodeDecodeError: "),
        ("optimizer.pt", not_an_optimizer_state, "optimizer.pt: not an optimizer's state_dict"),
        ("scheduler.pt", lambda f: garble(f, b"last_epoch"), "scheduler.pt does not load: "),
        ("rng_state.pth", lambda f: garble(f, b"numpy"), "rng_state.pth does not load: "),
        (
            "trainer_state.json",
            lambda f: f.write_text(json.dumps({"global_step": "4"})),
            "trainer_state.json: global_step '4' is not a step count",
        ),
        (
            "trainer_state.json",
            lambda f: f.write_text(json.dumps({"global_step": 4, "steps_taken": 4})),
            "trainer_state.json does not load: TypeError: TrainerState.__init__() got an unexpected keyword argument",
        ),
    ],
)
def test_a_checkpoint_whose_training_state_cannot_be_loaded_is_marked_corrupt(tmp_path, caplog, file, spoil, why):
    older, newest = checkpoint(tmp_path, 2), checkpoint(tmp_path, 4)
    spoil(newest / file)
    assert checkpoint_problem(newest) is None  # its files are whole: only loading them shows the problem
    with caplog.at_level(logging.WARNING):
        assert latest_complete_checkpoint(tmp_path) == older
    [line] = reported(caplog)
    assert line.startswith(f"{newest} is marked complete but is corrupt ({why}") and "\n" not in line
    assert line.endswith("using the previous complete checkpoint, if any")
    assert not (newest / COMPLETE).exists() and (newest / CORRUPT).exists()
    assert latest_complete_checkpoint(tmp_path) == older and len(reported(caplog)) == 1  # reported once


def test_every_rank_rng_state_is_checked(tmp_path, caplog):
    older, newest = checkpoint(tmp_path, 2, ranks=2), checkpoint(tmp_path, 4, ranks=2)
    garble(newest / "rng_state_1.pth", b"numpy")
    assert latest_complete_checkpoint(tmp_path) == older
    assert "(rng_state_1.pth does not load: " in caplog.text


def test_sound_checkpoints_are_used_and_with_none_left_the_run_starts_over(tmp_path, caplog):
    older, newest = checkpoint(tmp_path, 2), checkpoint(tmp_path, 4)
    assert latest_complete_checkpoint(tmp_path) == newest and not reported(caplog)
    garble(newest / "rng_state.pth", b"numpy")
    not_an_optimizer_state(older / "optimizer.pt")
    assert latest_complete_checkpoint(tmp_path) is None
    assert [p.name for p in tmp_path.glob(f"*/{CORRUPT}")] and not list(tmp_path.glob(f"*/{COMPLETE}"))


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda path: (path / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda path: (path / "rng_state.pth").unlink(), "rng_state.pth is missing"),
        (lambda path: (path / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda path: (path / "scheduler.pt").write_bytes(b""), "scheduler.pt is 0 bytes, "),
    ],
)
def test_a_file_gone_or_cut_since_the_checkpoint_was_marked_complete_is_found(tmp_path, caplog, spoil, why):
    """Without optimizer.pt or rng_state.pth the resume went on silently with a fresh optimizer or RNG (other
    weights than the uninterrupted run's); without the weights every rerun died in the Trainer's traceback."""
    from rlvr.hardware.checkpoints import mark_complete

    older, newest = checkpoint(tmp_path, 2), checkpoint(tmp_path, 4)
    mark_complete(newest, 4)
    assert checkpoint_problem(newest) is None
    spoil(newest)
    with caplog.at_level(logging.WARNING):
        assert latest_complete_checkpoint(tmp_path) == older
    [line] = reported(caplog)
    assert line.startswith(f"{newest} is marked complete but is corrupt ({why}")
