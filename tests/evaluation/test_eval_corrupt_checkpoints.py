"""`python -m rlvr.eval` and corrupt checkpoints, found before any model loads: a run's are skipped
with a line each, one named as the target is refused in one line."""

import json
import logging

from omegaconf import OmegaConf

from eval_cli_errors import error_of
from rlvr import eval as rlvr_eval


def run_dir(path, *steps):
    """A run dir with complete checkpoints at `steps`, as far as rlvr.eval reads one before loading it."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "config_resolved.yaml").write_text(OmegaConf.to_yaml(rlvr_eval.compose([], None), resolve=True))
    for step in steps:
        checkpoint = path / "checkpoints" / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "config.json").write_text("{}")
        save_file({"w": torch.ones(4, 4)}, str(checkpoint / "model.safetensors"))
        (checkpoint / "tokenizer_config.json").write_text("{}")
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (checkpoint / "COMPLETE").write_text(f"{step}\n")
    return path


def test_a_runs_corrupt_checkpoints_are_skipped_each_named_in_one_line(tmp_path, caplog):
    run = run_dir(tmp_path / "run", 2, 4, 6)
    (run / "checkpoints" / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 4)
    (run / "checkpoints" / "checkpoint-4" / "COMPLETE").rename(run / "checkpoints" / "checkpoint-4" / "CORRUPT")
    with caplog.at_level(logging.WARNING, logger="rlvr.eval"):
        target = rlvr_eval.resolve_target(str(run))
    assert [label for label, _, _ in target.models] == ["checkpoint-6"]
    assert [r.getMessage() for r in caplog.records if r.name == "rlvr.eval"] == [
        "checkpoint-2: skipped, corrupt (model.safetensors: 4 bytes, shorter than a header)",
        "checkpoint-4: skipped, marked CORRUPT by a resume that could not load it",
    ]


def test_a_corrupt_checkpoint_named_as_the_target_is_refused_in_one_line(tmp_path, capsys):
    run = run_dir(tmp_path / "run", 2, 4)
    (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": ')
    assert "checkpoint-2: the checkpoint is corrupt (trainer_state.json: Expecting value" in error_of(
        capsys, f"target={run / 'checkpoints' / 'checkpoint-2'}"
    )
    (run / "checkpoints" / "checkpoint-4" / "COMPLETE").rename(run / "checkpoints" / "checkpoint-4" / "CORRUPT")
    assert "checkpoint-4: the checkpoint is not marked COMPLETE (a resume found it corrupt)" in error_of(
        capsys, f"target={run / 'checkpoints' / 'checkpoint-4'}"
    )
    assert "the run dir has no complete checkpoint that rlvr.eval can read" in error_of(capsys, f"target={run}")
