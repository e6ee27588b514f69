"""`python -m rlvr.eval` of a LoRA adapter with no run's initial_policy/ to put it on: refused in one
line before anything loads or is written, unless a base model is named (never the default tiny model,
which would be built afresh with random weights)."""

import json

import pytest
from omegaconf import OmegaConf

from eval_cli_errors import error_of
from rlvr import eval as rlvr_eval


def adapter(path, base=None):
    """An adapter dir as far as rlvr.eval reads one before loading it."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base}))
    return path


@pytest.mark.parametrize("named", [[], ["model.name_or_path=tiny"], ["model=qwen3_shape"]])
def test_an_adapter_outside_its_run_on_the_tiny_model_is_refused(tmp_path, capsys, named):
    path = adapter(tmp_path / "adapter")
    line = error_of(capsys, f"target={path}", *named, f"output_dir={tmp_path / 'out'}")
    assert line == (
        f"rlvr.eval: error: {path} is a LoRA adapter outside its run dir, with no base to put it on: "
        f"name its base model with model.name_or_path=PATH_OR_HUB_NAME; it is not merged onto the "
        f"built-in tiny model built afresh (random weights)"
    )
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_refusal_names_the_base_the_adapter_records(tmp_path, capsys):
    path = adapter(tmp_path / "adapter", base="Qwen/Qwen2.5-0.5B-Instruct")
    assert "model.name_or_path=PATH_OR_HUB_NAME (its adapter_config.json names Qwen/Qwen2.5-0.5B-Instruct);" in error_of(
        capsys, f"target={path}"
    )


def test_an_adapter_of_a_run_that_lost_its_initial_policy_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(rlvr_eval.compose([], None), resolve=True))
    path = adapter(run / "final_adapter")
    assert f"{path} is a LoRA adapter in a run dir without initial_policy/ ({run}), with no base" in error_of(capsys, f"target={path}")
