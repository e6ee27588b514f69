"""`python -m rlvr.eval` of a saved model with `model` overrides: a saved model loads with its own shape,
tokenizer, vocabulary and training, so an override of those is refused in one line naming it (it was
ignored and recorded as applied); the keys its loading reads (dtype, ...) apply, and a result records
the model settings that ran."""

import json

import pytest

from conftest import process_state_kept
from eval_cli_errors import error_of
from rlvr import eval as rlvr_eval
from test_eval_adapter_base import adapter
from test_eval_cli import fake_run_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TAIL = (
    ": it loads as it was saved, with its own shape, tokenizer, vocabulary and training; leave the override out "
    "(of model.*, only model.dtype, model.attn_implementation, model.trust_remote_code apply to a saved model) "
    "or evaluate another model as the target"
)


def model_dir(path):
    """A whole model's dir, as far as rlvr.eval reads one before loading it."""
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def evaluated(monkeypatch):
    """The model settings each evaluation ran with (no model loads)."""
    models = []

    def fake_eval(cfg, label, *_):
        models.append(cfg.model)
        return {f"eval_{label}_accuracy": 0.5}, 0

    monkeypatch.setattr(rlvr_eval, "evaluate_model", fake_eval)
    return models


def recorded_model(out, label):
    return json.loads((out / "eval" / f"{label}.json").read_text())["settings"]["model"]


@pytest.mark.parametrize(
    ("override", "refusal"),
    [
        (
            "model=qwen2.5_shape",
            "model=qwen2.5_shape sets model.tiny.tokenizer=qwen2.5, which the saved model {} fixes (its run's value: bytes)",
        ),
        ("model.tiny.hidden_size=128", "model.tiny.hidden_size=128: the saved model {} fixes model.tiny.hidden_size (its run's value: 64)"),
        (
            "model.reasoning_vocab_size=4",
            "model.reasoning_vocab_size=4: the saved model {} fixes model.reasoning_vocab_size (its run's value: 0)",
        ),
        ("model.warmup_sft_steps=50", "model.warmup_sft_steps=50: the saved model {} fixes model.warmup_sft_steps (its run's value: 1)"),
        (
            "model=qwen2.5_0.5b_instruct",
            "model=qwen2.5_0.5b_instruct sets model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct, which the saved model {} fixes "
            "(its run's value: tiny)",
        ),
    ],
)
def test_an_override_a_runs_saved_model_fixes_is_refused_naming_it(tmp_path, capsys, evaluated, override, refusal):
    """It was evaluated as saved (the byte-level tiny model) and recorded with the override's tokenizer and shape."""
    run = fake_run_dir(tmp_path / "run", "model.warmup_sft_steps=1")
    final = model_dir(run / "final_model")
    line = error_of(capsys, f"target={final}", override, f"output_dir={tmp_path / 'out'}")
    assert line == "rlvr.eval: error: " + refusal.format(final) + TAIL
    assert not evaluated and not (tmp_path / "out").exists()  # refused before anything loads or is written


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (["model=qwen2.5_shape"], "model=qwen2.5_shape sets model.tiny.tokenizer=qwen2.5, which the saved model {} fixes"),
        (["model.tiny.hidden_size=128"], "model.tiny.hidden_size=128: the saved model {} fixes model.tiny.hidden_size"),
        (["model=qwen2.5_0.5b_instruct", "model.name_or_path=/elsewhere"], "model.name_or_path=/elsewhere: the saved model {} fixes"),
    ],
)
def test_an_override_a_bare_saved_model_fixes_is_refused_naming_it(tmp_path, capsys, evaluated, overrides, refusal):
    model = model_dir(tmp_path / "model")
    line = error_of(capsys, f"target={model}", *overrides, f"output_dir={tmp_path / 'out'}")
    assert line.startswith("rlvr.eval: error: " + refusal.format(model)) and line.endswith(TAIL)
    assert not evaluated


def run_eval(*argv):
    with process_state_kept():
        rlvr_eval.main(list(argv))


def test_a_runs_saved_model_is_recorded_as_it_ran_with_the_overrides_that_apply(tmp_path, evaluated):
    """The run's group chosen again (model=tiny, whose warm-up differs: training, not what loads) and a
    dtype: the run's model settings with that dtype, in the config evaluated and the result."""
    run = fake_run_dir(tmp_path / "run", "model.warmup_sft_steps=1")
    final = model_dir(run / "final_model")
    run_eval(f"target={final}", "model=tiny", "model.dtype=bfloat16", "model.attn_implementation=eager", f"output_dir={tmp_path / 'out'}")
    [ran] = evaluated
    recorded = recorded_model(tmp_path / "out", "final_model")
    assert (ran.warmup_sft_steps, ran.dtype, ran.attn_implementation) == (1, "bfloat16", "eager")
    assert (recorded["warmup_sft_steps"], recorded["dtype"], recorded["attn_implementation"]) == (1, "bfloat16", "eager")


def test_a_bare_saved_model_is_recorded_as_the_dir_that_loads(tmp_path, evaluated):
    """Outside a run a model group's dtype applies and its name_or_path gives way to the target: the
    result named the Hub model (or the built-in tiny one, with its warm-up) while the directory ran."""
    model = model_dir(tmp_path / "Qwen2.5-0.5B-Instruct")
    run_eval(f"target={model}", "model=qwen2.5_0.5b_instruct", f"output_dir={tmp_path / 'out'}")
    recorded = recorded_model(tmp_path / "out", model.name)
    assert (recorded["name_or_path"], recorded["dtype"], recorded["warmup_sft_steps"]) == (str(model), "auto", 0)
    assert evaluated[0].name_or_path == str(model)


def test_an_experiment_is_taken_for_its_other_groups_its_model_keys_being_the_saved_models(tmp_path, evaluated):
    """experiment=vocab_reasoning sets model.reasoning_vocab_size, which the user never named: it was refused."""
    model = model_dir(tmp_path / "model")
    run_eval(f"target={model}", "experiment=vocab_reasoning", f"output_dir={tmp_path / 'out'}")
    assert evaluated[0].reasoning_vocab_size == 0 and recorded_model(tmp_path / "out", "model")["reasoning_vocab_size"] == 0


def test_a_lora_adapter_outside_a_run_takes_its_base_from_the_model_group(tmp_path, capsys, evaluated):
    """Its base is loaded from model.name_or_path (a Hub name here): that applies, and is recorded;
    a vocabulary expansion does not happen on it, and is refused."""
    path = adapter(tmp_path / "adapter")
    run_eval(f"target={path}", "model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct", "model.dtype=auto", f"output_dir={tmp_path / 'out'}")
    recorded = recorded_model(tmp_path / "out", "adapter")
    assert (recorded["name_or_path"], recorded["dtype"]) == ("Qwen/Qwen2.5-0.5B-Instruct", "auto")
    line = error_of(capsys, f"target={path}", "model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct", "model.reasoning_vocab_size=4")
    assert line.startswith(f"rlvr.eval: error: model.reasoning_vocab_size=4: the saved model {path} fixes model.reasoning_vocab_size: ")
    assert "(of model.*, only model.dtype, model.attn_implementation, model.trust_remote_code, model.name_or_path," in line
