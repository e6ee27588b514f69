"""`python -m rlvr.eval` on inputs it cannot use as they are: a model dir missing files or cut short,
a run config that does not parse, checkpoints incomplete, corrupt or deleted while a curve runs, a
data file rewritten after its result was saved, completions cut at the token limit. Each is one
line: a refusal, or a skipped checkpoint and the rest evaluated."""

import json
import logging
import os
import shutil

import pytest

import test_eval_corrupt_checkpoints as corrupt
from conftest import process_state_kept
from eval_cli_errors import error_of
from rlvr import eval as rlvr_eval
from rlvr.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny policy as save_pretrained writes it (config.json, model.safetensors), its tokenizer beside it."""
    from rlvr.models.loading import load_policy

    model, tokenizer = load_policy(rlvr_eval.compose([], None).model, seed=0)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def copy_without(source, target, *names):
    shutil.copytree(source, target)
    for name in names:
        (target / name).unlink()
    return target


def rlvr_eval_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rlvr.eval"]


def test_a_model_dir_without_a_tokenizer_is_refused_in_one_line(saved_model, tmp_path, capsys):
    """Its tokenizer loaded empty: every prompt was zero tokens, and generation failed with an IndexError."""
    model = copy_without(saved_model, tmp_path / "model", "tokenizer.json", "tokenizer_config.json")
    assert error_of(capsys, f"target={model}") == (
        f"rlvr.eval: error: model directory {model}: no tokenizer (tokenizer.json / tokenizer_config.json / a vocabulary file): "
        "save the tokenizer beside the model (tokenizer.save_pretrained)"
    )


def test_a_model_dir_with_its_weights_cut_short_is_refused_naming_the_file(saved_model, tmp_path, capsys):
    """It was a SafetensorError traceback from inside transformers."""
    model = shutil.copytree(saved_model, tmp_path / "model")
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    assert error_of(capsys, f"target={model}") == (
        f"rlvr.eval: error: model directory {model}: model.safetensors: {size // 2} bytes where its header maps {size}"
    )


def test_a_model_dir_whose_weights_lack_a_parameter_or_hold_one_too_many_is_refused_naming_them(saved_model, tmp_path, capsys, caplog):
    """transformers started a missing parameter random and dropped weights the config had no place for,
    with a table on stderr: the eval ran on that model and wrote its result. Now the one line alone (no table)."""
    transformers_log = logging.getLogger("transformers")  # it does not propagate: caplog's handler added to it
    transformers_log.addHandler(caplog.handler)
    try:
        refused_lacking_and_one_layer_short(saved_model, tmp_path, capsys)
    finally:
        transformers_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]


def refused_lacking_and_one_layer_short(saved_model, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = shutil.copytree(saved_model, tmp_path / "lacking")
    weights = load_file(model / "model.safetensors")
    del weights["model.layers.0.mlp.down_proj.weight"]
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    assert error_of(capsys, f"target={model}", f"output_dir={tmp_path / 'out'}") == (
        f"rlvr.eval: error: model '{model}' does not fit its weights: its weights lack 1 of its parameters "
        "(model.layers.0.mlp.down_proj.weight), which would start random"
    )
    model = shutil.copytree(saved_model, tmp_path / "one_layer")
    config = json.loads((model / "config.json").read_text())
    config |= {"num_hidden_layers": 1, "layer_types": config["layer_types"][:1]}
    second_layer = sum(name.startswith("model.layers.1.") for name in load_file(model / "model.safetensors"))
    (model / "config.json").write_text(json.dumps(config))
    assert error_of(capsys, f"target={model}", f"output_dir={tmp_path / 'out'}") == (
        f"rlvr.eval: error: model '{model}' does not fit its weights: its weights hold {second_layer} tensors its config has no place for "
        "(model.layers.1.input_layernorm.weight, model.layers.1.mlp.down_proj.weight, model.layers.1.mlp.gate_proj.weight, ...), "
        "which would be dropped"
    )
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*")) == []


def test_a_config_value_of_the_wrong_type_is_one_line_not_a_traceback(saved_model, tmp_path, capsys):
    model = shutil.copytree(saved_model, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"hidden_size": "64"}))
    assert error_of(capsys, f"target={model}") == (
        f"rlvr.eval: error: cannot load model '{model}': StrictDataclassFieldValidationError: Validation error for field "
        "'hidden_size': TypeError: Field 'hidden_size' expected int, got str (value: '64')"
    )


def adapter_checkpoint(checkpoint, weights: bool = True):
    """Turn a fixture checkpoint into a LoRA run's: an adapter, its config, no whole model, no tokenizer."""
    import torch
    from safetensors.torch import save_file

    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (checkpoint / name).unlink()
    (checkpoint / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    if weights:
        save_file({"a": torch.ones(2, 2)}, str(checkpoint / "adapter_model.safetensors"))


def test_a_checkpoint_missing_what_loading_needs_is_skipped_naming_what(tmp_path, caplog):
    """Only files present were checked: these passed, then failed to load, and the whole curve with them."""
    run = corrupt.run_dir(tmp_path / "run", 2, 4, 6, 8, 10, 12)
    checkpoints = run / "checkpoints"
    (checkpoints / "checkpoint-2" / "model.safetensors").unlink()
    (checkpoints / "checkpoint-4" / "config.json").unlink()
    (checkpoints / "checkpoint-6" / "tokenizer_config.json").unlink()
    adapter_checkpoint(checkpoints / "checkpoint-8")
    adapter_checkpoint(checkpoints / "checkpoint-10", weights=False)
    with caplog.at_level(logging.INFO, logger="rlvr.eval"):
        target = rlvr_eval.resolve_target(str(run))
    assert [label for label, _, _ in target.models] == ["checkpoint-8", "checkpoint-12"]
    assert rlvr_eval_lines(caplog) == [
        "checkpoint-2: skipped, corrupt (no weights (model.safetensors / model.safetensors.index.json / pytorch_model.bin / "
        "pytorch_model.bin.index.json))",
        "checkpoint-4: skipped, corrupt (no config (config.json, or a LoRA adapter's adapter_config.json))",
        "checkpoint-6: skipped, corrupt (no tokenizer (tokenizer.json / tokenizer_config.json / a vocabulary file))",
        "checkpoint-10: skipped, corrupt (no weights (adapter_model.safetensors / adapter_model.bin))",
    ]


def test_a_checkpoint_without_a_tokenizer_named_as_the_target_is_refused_in_one_line(tmp_path, capsys):
    run = corrupt.run_dir(tmp_path / "run", 2)
    (run / "checkpoints" / "checkpoint-2" / "tokenizer_config.json").unlink()
    assert error_of(capsys, f"target={run / 'checkpoints' / 'checkpoint-2'}").endswith(
        "checkpoint-2: the checkpoint is corrupt (no tokenizer (tokenizer.json / tokenizer_config.json / a vocabulary file))"
    )


def test_checkpoints_not_marked_complete_are_each_named_the_newest_of_a_training_run_as_being_written(tmp_path, caplog):
    """They were skipped without a word."""
    run = corrupt.run_dir(tmp_path / "run", 2, 4, 6)
    for step in (4, 6):
        (run / "checkpoints" / f"checkpoint-{step}" / "COMPLETE").unlink()
    with caplog.at_level(logging.INFO, logger="rlvr.eval"):
        rlvr_eval.resolve_target(str(run))
        (run / ".rlvr.lock").write_text("{}")  # a training holds the run dir
        rlvr_eval.resolve_target(str(run))
    cut_short = "skipped, not marked COMPLETE (cut short: its run stopped or crashed while saving it)"
    assert rlvr_eval_lines(caplog) == [
        f"checkpoint-4: {cut_short}",
        f"checkpoint-6: {cut_short}",
        f"checkpoint-4: {cut_short}",
        "checkpoint-6: skipped, not marked COMPLETE: still being written by the training in this run dir",
    ]


def test_checkpoints_rotated_away_while_a_curve_runs_are_skipped_and_the_rest_evaluated(tmp_path, monkeypatch, caplog):
    """A training's save_total_limit deletes checkpoints the curve has listed: one before its turn came
    (a FileNotFoundError traceback from its files' fingerprint), one while it was being loaded, and one
    caught half-deleted as it loaded (the whole eval ended, its error naming model.name_or_path)."""
    run = corrupt.run_dir(tmp_path / "run", 2, 4, 6, 8, 10)
    checkpoints = run / "checkpoints"

    def rotating_eval(cfg, label, model_dir, run_dir, out_dir):
        if label == "checkpoint-2":
            shutil.rmtree(checkpoints / "checkpoint-4")
        if label == "checkpoint-6":
            shutil.rmtree(model_dir)
            raise OSError(f"{model_dir / 'model.safetensors'}: no such file")
        if label == "checkpoint-8":
            (model_dir / "config.json").unlink()
            raise ConfigError(f"model directory {model_dir} has no config.json")
        return {f"eval_{label}_accuracy": 0.5}, 0

    monkeypatch.setattr(rlvr_eval, "evaluate_model", rotating_eval)
    target = rlvr_eval.resolve_target(str(run))
    cfg = rlvr_eval.compose([], None)
    with caplog.at_level(logging.WARNING, logger="rlvr.eval"):
        results = rlvr_eval.evaluate_target(target, cfg, run, rlvr_eval.eval_inputs(cfg))
    assert [r["label"] for r in results] == ["checkpoint-2", "checkpoint-10"]
    gone = "gone (removed by the running training's rotation), skipped"
    assert rlvr_eval_lines(caplog)[:2] == [f"checkpoint-4: {gone}", f"checkpoint-6: {gone}"]
    assert rlvr_eval_lines(caplog)[2].startswith("checkpoint-8: corrupt (") and rlvr_eval_lines(caplog)[2].endswith(
        ") while it was evaluated, skipped"
    )
    assert rlvr_eval.write_curve(results, run).exists()


def test_checkpoints_saved_while_a_curve_runs_join_it_and_a_curve_left_empty_is_an_error(tmp_path, monkeypatch):
    """With save_total_limit=1 the one checkpoint listed was gone at its turn: the eval printed that, made
    no curve and exited 0, though the training had saved a newer one meanwhile."""
    run = corrupt.run_dir(tmp_path / "run", 3)
    checkpoints = run / "checkpoints"

    def rotating_eval(cfg, label, model_dir, run_dir, out_dir):
        if label == "checkpoint-3":
            shutil.copytree(model_dir, checkpoints / "checkpoint-6")
            shutil.rmtree(model_dir)
            raise OSError(f"{model_dir / 'model.safetensors'}: no such file")
        return {f"eval_{label}_accuracy": 0.5}, 0

    monkeypatch.setattr(rlvr_eval, "evaluate_model", rotating_eval)
    cfg = rlvr_eval.compose([], None)
    results = rlvr_eval.evaluate_target(rlvr_eval.resolve_target(str(run)), cfg, run, rlvr_eval.eval_inputs(cfg))
    assert [r["label"] for r in results] == ["checkpoint-6"]

    def everything_gone(cfg, label, model_dir, run_dir, out_dir):
        shutil.rmtree(model_dir)
        raise OSError("no such file")

    monkeypatch.setattr(rlvr_eval, "evaluate_model", everything_gone)
    with pytest.raises(ConfigError, match=r"the running training's rotation removed every checkpoint before its turn"):
        rlvr_eval.run(str(corrupt.run_dir(tmp_path / "other", 3)), None, rlvr_eval.compose([], None), [])


def test_a_result_is_evaluated_again_when_its_data_file_was_written_anew(tmp_path, monkeypatch):
    """Only the settings and the model files were compared: other gold answers kept the stale accuracy."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1=", "answer": "2"}\n')
    evaluated = []
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: (evaluated.append(label) or {f"eval_{label}_accuracy": 1.0}, 0))
    target = rlvr_eval.resolve_target(str(model_dir))
    cfg = rlvr_eval.compose([f"dataset.source={data}"], None)
    for _ in range(2):
        rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
    assert evaluated == ["model"]
    data.write_text('{"question": "1+1=", "answer": "3"}\n')  # the same size: its modification time tells
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1))
    rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
    assert evaluated == ["model", "model"]


def test_a_malformed_run_config_is_refused_naming_the_file(tmp_path, capsys):
    """It was a yaml ParserError traceback."""
    run = corrupt.run_dir(tmp_path / "run", 2)
    (run / "config_resolved.yaml").write_text("model:\n  name_or_path: tiny\n dataset: [\n")
    assert error_of(capsys, f"target={run}") == (
        f"rlvr.eval: error: {run / 'config_resolved.yaml'}: not a readable YAML file (line 3, column 2: "
        "expected <block end>, but found '<block mapping start>')"
    )


@pytest.mark.parametrize("content", ["", "foo: 1\n"])
def test_a_run_config_that_is_no_runs_config_is_refused_before_anything_loads(tmp_path, capsys, content):
    """An emptied config_resolved.yaml was read as the tree's defaults: the checkpoint loaded, then 'no reward
    functions configured'."""
    run = corrupt.run_dir(tmp_path / "run", 2)
    (run / "config_resolved.yaml").write_text(content)
    assert error_of(capsys, f"target={run}") == (
        f"rlvr.eval: error: {run / 'config_resolved.yaml'}: not the config of a run (no "
        "algorithm, dataset, eval, hardware, logging, model, reward): rlvr.run writes it as a run starts; "
        "restore it from a copy of the run"
    )


def test_completions_cut_at_the_limit_are_warned_of_and_the_result_says_how_many_prompts(tmp_path, monkeypatch, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")

    def cut_short_eval(cfg, label, model_dir, run_dir, out_dir):
        (out_dir / "eval").mkdir(parents=True, exist_ok=True)
        (out_dir / "eval" / f"{label}.jsonl").write_text('{"index": 0}\n{"index": 1}\n{"index": 2}\n')
        return {f"eval_{label}_accuracy": 0.0, f"eval_{label}_truncated_frac": 0.75}, 0

    monkeypatch.setattr(rlvr_eval, "evaluate_model", cut_short_eval)
    with process_state_kept():
        rlvr_eval.main([f"target={model_dir}"])
    out, err = capsys.readouterr()
    assert "model: accuracy=0, truncated_frac=0.75 (3 prompts scored)" in out
    assert (
        "model: 75% of the greedy completions were cut at the limit of 6 new tokens, from algorithm.max_completion_length "
        "as eval.max_new_tokens is unset: raise eval.max_new_tokens"
    ) in err


def test_two_models_of_one_name_into_one_output_dir_are_refused_not_overwritten(tmp_path, monkeypatch, capsys):
    """Two runs' final_model/ (`-m target=A/final_model,B/final_model output_dir=X`): the second silently
    replaced the first's final_model.json."""
    models = []
    for run in ("a", "b"):
        (tmp_path / run / "final_model").mkdir(parents=True)
        (tmp_path / run / "final_model" / "config.json").write_text("{}")
        models.append(tmp_path / run / "final_model")
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: ({f"eval_{label}_accuracy": 1.0}, 0))
    with process_state_kept():
        rlvr_eval.main([f"target={models[0]}", f"output_dir={tmp_path / 'out'}"])
    assert error_of(capsys, f"target={models[1]}", f"output_dir={tmp_path / 'out'}") == (
        f"rlvr.eval: error: {tmp_path / 'out' / 'eval' / 'final_model.json'} holds the result of another model of the "
        f"same name ({models[0]}): give {models[1]} an output_dir of its own"
    )
    assert json.loads((tmp_path / "out" / "eval" / "final_model.json").read_text())["model"] == str(models[0])


def test_the_curve_keeps_the_points_of_checkpoints_rotated_away_since_their_eval(tmp_path, monkeypatch):
    """A curve taken while a run trains, taken again later: the checkpoints its rotation deleted meanwhile
    were evaluated with these settings; their points stay (the curve held the remaining ones alone)."""
    run = corrupt.run_dir(tmp_path / "run", 2, 4)
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: ({f"eval_{label}_accuracy": int(label.split("-")[1]) / 10}, 0))
    rlvr_eval.run(str(run), None, rlvr_eval.compose([], None), [])
    shutil.rmtree(run / "checkpoints" / "checkpoint-2")
    corrupt.run_dir(tmp_path / "later", 6)
    shutil.move(tmp_path / "later" / "checkpoints" / "checkpoint-6", run / "checkpoints")
    rlvr_eval.run(str(run), None, rlvr_eval.compose([], None), [])
    curve = [json.loads(line) for line in (run / "eval" / "curve.jsonl").read_text().splitlines()]
    assert [(row["step"], row["eval/accuracy"]) for row in curve] == [(2, 0.2), (4, 0.4), (6, 0.6)]
    other = ["eval.n=2", "eval.ks=[1,2]"]  # other settings: not its points
    rlvr_eval.run(str(run), None, rlvr_eval.compose(other, None), other)
    assert [json.loads(line)["step"] for line in (run / "eval" / "curve.jsonl").read_text().splitlines()] == [4, 6]


def test_one_checkpoint_evaluated_with_other_settings_than_its_point_on_the_curve_is_refused(tmp_path, monkeypatch, capsys):
    """It replaced eval/checkpoint-4.json while curve.jsonl and its plot kept the earlier settings' figures."""
    run = corrupt.run_dir(tmp_path / "run", 2, 4)
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: ({f"eval_{label}_accuracy": 0.5}, 0))
    with process_state_kept():
        rlvr_eval.main([f"target={run}"])
    result = (run / "eval" / "checkpoint-4.json").read_text()
    checkpoint = run / "checkpoints" / "checkpoint-4"
    assert error_of(capsys, f"target={checkpoint}", "eval.max_new_tokens=3") == (
        f"rlvr.eval: error: {run / 'eval' / 'curve.jsonl'} holds checkpoint-4 evaluated with other inputs "
        f"(settings.eval.max_new_tokens: None -> 3): evaluated alone it would disagree with the curve; evaluate the whole run "
        f"(target={run}) or give it an output_dir of its own"
    )
    assert (run / "eval" / "checkpoint-4.json").read_text() == result
    with process_state_kept():  # with the curve's settings, or into a dir of its own, it is evaluated
        rlvr_eval.main([f"target={checkpoint}"])
        rlvr_eval.main([f"target={checkpoint}", "eval.max_new_tokens=3", f"output_dir={tmp_path / 'out'}"])
    assert (tmp_path / "out" / "eval" / "checkpoint-4.json").exists()


def test_model_dirs_that_load_pass_the_check(saved_model, tmp_path):
    """What from_pretrained loads passes: a slow tokenizer's vocabulary without tokenizer_config.json,
    and a Hub snapshot holding both weight indexes with the safetensors shards alone."""
    from rlvr.models.loading import saved_model_problem

    vocabulary_only = copy_without(saved_model, tmp_path / "vocab", "tokenizer.json", "tokenizer_config.json")
    (vocabulary_only / "vocab.json").write_text("{}")
    assert saved_model_problem(vocabulary_only) is None
    sharded = shutil.copytree(saved_model, tmp_path / "sharded")
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00001.safetensors")
    for index, shard in (("model.safetensors.index.json", "model-00001-of-00001.safetensors"), ("pytorch_model.bin.index.json", "x.bin")):
        (sharded / index).write_text(json.dumps({"weight_map": {"w": shard}}))
    assert saved_model_problem(sharded) is None
    (sharded / "model-00001-of-00001.safetensors").unlink()
    assert saved_model_problem(sharded) == "model.safetensors.index.json names model-00001-of-00001.safetensors, which is not there"


@pytest.mark.parametrize("name", ["after", "step-4", "curve"])
def test_a_model_dir_named_as_a_runs_own_eval_file_is_refused_not_written_over_it(tmp_path, capsys, name):
    """A model dir named `after` evaluated into a run (output_dir) replaced the run's eval/after.jsonl (its
    eval after training); one named `curve`, the curve of its checkpoints."""
    model = tmp_path / name
    model.mkdir()
    (model / "config.json").write_text("{}")
    line = error_of(capsys, f"target={model}", f"output_dir={tmp_path / 'run'}")
    assert line.startswith(f"rlvr.eval: error: target {model}: a model dir named '{name}' would write its rows as eval/{name}.jsonl")
    assert line.endswith("rename (or copy) the dir") and not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", ["", '{"label": "final_model", "mod', "[1, 2]"])
def test_a_saved_result_that_cannot_be_read_is_evaluated_again_with_a_warning(tmp_path, monkeypatch, caplog, content):
    """An emptied or cut-short eval/<label>.json was a JSONDecodeError traceback."""
    model_dir = tmp_path / "final_model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (tmp_path / "out" / "eval").mkdir(parents=True)
    (tmp_path / "out" / "eval" / "final_model.json").write_text(content)
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: ({f"eval_{label}_accuracy": 1.0}, 0))
    rlvr_eval.run(str(model_dir), str(tmp_path / "out"), rlvr_eval.compose([], None), [])
    assert json.loads((tmp_path / "out" / "eval" / "final_model.json").read_text())["metrics"] == {"accuracy": 1.0}
    assert any("not a result rlvr.eval can read" in line and "evaluated again" in line for line in rlvr_eval_lines(caplog))
