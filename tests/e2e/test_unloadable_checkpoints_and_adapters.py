"""What a user meets with a checkpoint that cannot be loaded, or an adapter without its run: a resume
falls back to the previous complete checkpoint, `rlvr.eval RUN_DIR` skips the corrupt one and
writes the curve of the others, and an adapter outside its run dir is refused unless its base is named."""

import json
import shutil

import pytest

from conftest import TINY_RUN, completed_run, garble, run_cli
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.slow
# A LoRA run (checkpoints 2 and 4 hold adapters; its base is the SFT-warmed tiny model, kept in
# initial_policy/ alone), warmed up enough that its eval's completions tell one model from another.
LORA_RUN = [*TINY_RUN, "model.warmup_sft_steps=100", "eval.before=false", "model.lora.enabled=true", "model.lora.r=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("trained") / "run", *LORA_RUN)


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, for a test to spoil."""
    return shutil.copytree(trained, tmp_path / "run")


def not_an_optimizer_state(file):
    import torch

    torch.save({"step": 4}, file)


def eval_error(result) -> str:
    """The one `rlvr.eval: error:` line of an eval that was refused: exit code 2, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("rlvr.eval: error:")]
    return line


def logged_steps(run_dir):
    return [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl") if "loss" in row]


@pytest.mark.parametrize(
    ("file", "spoil", "why"),
    [
        ("rng_state.pth", lambda f: garble(f, b"numpy"), "rng_state.pth does not load: UnicodeDecodeError: "),
        ("optimizer.pt", not_an_optimizer_state, "optimizer.pt is "),  # another size than COMPLETE lists: found first
    ],
)
def test_a_resume_falls_back_from_a_checkpoint_whose_state_cannot_be_loaded(run, file, spoil, why):
    newest = run / "checkpoints" / "checkpoint-4"
    spoil(newest / file)
    result = run_cli("rlvr.run", *LORA_RUN, "algorithm.max_steps=6", f"hydra.run.dir={run}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    log = (run / "run.log").read_text()
    [line] = [line for line in log.splitlines() if "is marked complete but is corrupt" in line]
    assert f"{newest} is marked complete but is corrupt ({why}" in line
    assert line.endswith("using the previous complete checkpoint, if any")
    assert f"resuming from {run / 'checkpoints' / 'checkpoint-2'}" in log
    assert logged_steps(run) == [1, 2, 3, 4, 5, 6]  # steps 3 and 4 trained again, once each
    assert (newest / "COMPLETE").exists() and (run / "metrics.json").exists()  # checkpoint-4 written anew


def test_eval_of_a_run_skips_a_corrupt_checkpoint_and_writes_the_curve_of_the_others(run):
    adapter = run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:1000])  # cut short: still marked COMPLETE
    result = run_cli("rlvr.eval", f"target={run}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if "checkpoint-2" in line]
    assert "checkpoint-2: skipped, corrupt (adapter_model.safetensors is 1000 bytes, " in line  # COMPLETE lists its size
    assert [row["step"] for row in read_jsonl(run / "eval" / "curve.jsonl")] == [4]
    assert (run / "plots" / "eval_checkpoints.png").stat().st_size > 1000
    assert not (run / "eval" / "checkpoint-2.json").exists()
    assert result.stdout.startswith("checkpoint-4: accuracy=")


def test_an_adapter_outside_its_run_is_refused_unless_its_base_is_named(trained, tmp_path):
    adapter = shutil.copytree(trained / "checkpoints" / "checkpoint-4", tmp_path / "adapter")
    line = eval_error(run_cli("rlvr.eval", f"target={adapter}"))
    assert line == (  # PEFT recorded its base: the policy as RL started, which the run saved
        f"rlvr.eval: error: {adapter} is a LoRA adapter outside its run dir, with no base to put it on: "
        f"name its base model with model.name_or_path=PATH_OR_HUB_NAME (its adapter_config.json names "
        f"{trained / 'initial_policy'}); it is not merged onto the built-in tiny model built afresh (random weights)"
    )
    assert not (adapter / "eval").exists()

    config = json.loads((adapter / "adapter_config.json").read_text())  # as PEFT records a base it knows by name
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "org/base-model"}))
    hinted = eval_error(run_cli("rlvr.eval", f"target={adapter}"))
    assert "model.name_or_path=PATH_OR_HUB_NAME (its adapter_config.json names org/base-model);" in hinted

    named = run_cli(
        "rlvr.eval",
        f"target={adapter}",
        f"model.name_or_path={trained / 'initial_policy'}",
        "dataset.max_eval_samples=16",
        f"output_dir={tmp_path / 'out'}",
    )
    assert named.returncode == 0, named.stderr[-3000:]
    rows = read_jsonl(tmp_path / "out" / "eval" / "adapter.jsonl")
    after = read_jsonl(trained / "eval" / "after.jsonl")  # the run's own eval of the same weights (step 4)
    assert [r["completion"] for r in rows] == [r["completion"] for r in after]
    assert sum(r["correct"] for r in rows) > 0
