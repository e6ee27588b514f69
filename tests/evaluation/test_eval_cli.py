"""`python -m rlvr.eval`: targets, config from the run, results per model, skipping what is done, the curve."""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from conftest import TINY_RUN, TORCHRUN_TWO, completed_run, process_state_kept, run_cli
from eval_cli_errors import error_of
from rlvr import eval as rlvr_eval
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def fake_run_dir(path, *overrides):
    """A run dir as far as rlvr.eval reads it before loading anything: its config_resolved.yaml."""
    cfg = rlvr_eval.compose(list(overrides), None)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def test_a_reward_model_run_is_refused_naming_where_its_eval_is(tmp_path, capsys):
    """It was refused for having no checkpoint, with a hint at final_model/ that failed on missing columns."""
    rm = fake_run_dir(tmp_path / "rm", "algorithm=reward_model")
    (rm / "final_model").mkdir()
    (rm / "final_model" / "config.json").write_text("{}")
    for target in (rm, rm / "final_model"):
        assert error_of(capsys, f"target={target}") == (
            f"rlvr.eval: error: target {target}: a reward model (algorithm=reward_model): rlvr.eval evaluates policies "
            f"by what they generate; a reward model's eval is its pair accuracy, eval_pair_accuracy in {rm / 'metrics.json'}"
        )


def test_targets_that_cannot_be_evaluated_fail_in_one_line(tmp_path, capsys):
    assert "no such directory" in error_of(capsys, f"target={tmp_path / 'missing'}")
    (tmp_path / "model.safetensors").write_text("")
    assert "model.safetensors: a file, not a directory: target= names a run dir" in error_of(
        capsys, f"target={tmp_path / 'model.safetensors'}"
    )
    (tmp_path / "empty").mkdir()
    assert "no model there" in error_of(capsys, f"target={tmp_path / 'empty'}")
    jobs = [fake_run_dir(tmp_path / "sweep" / job) for job in ("0", "1")]
    assert f"(a -m run's sweep dir: python -m rlvr.eval -m target={jobs[0]},{jobs[1]})" in error_of(capsys, f"target={tmp_path / 'sweep'}")
    run = fake_run_dir(tmp_path / "run")
    assert "the run dir has no complete checkpoint" in error_of(capsys, f"target={run}")
    (run / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-3" / "config.json").write_text("{}")  # being written: no COMPLETE
    assert "no complete checkpoint" in error_of(capsys, f"target={run}")
    assert "not marked COMPLETE" in error_of(capsys, f"target={run / 'checkpoints' / 'checkpoint-3'}")
    assert "no target" in error_of(capsys, "eval=pass_at_k")
    assert "no target" in error_of(capsys, "target=")  # not the current directory
    assert f"name what to evaluate as target={run}" in error_of(capsys, str(run))
    for name in ("trainer_state.json", "tokenizer_config.json", "COMPLETE"):
        (run / "checkpoints" / "checkpoint-3" / name).write_text("{}")
    save_file({"w": torch.ones(1)}, str(run / "checkpoints" / "checkpoint-3" / "model.safetensors"))
    assert "eval.n=0 samples no completion, and eval.ks=[16] takes k of the n samples" in error_of(capsys, f"target={run}", "eval.ks=[16]")
    (tmp_path / "a_file").write_text("")
    assert f"output_dir={tmp_path / 'a_file'}: {tmp_path / 'a_file'} is a file, not a directory" in error_of(
        capsys, f"target={run}", f"output_dir={tmp_path / 'a_file'}"
    )
    out = tmp_path / "out"  # what the eval writes inside it: eval/ a file, then a result's name taken by a directory
    out.mkdir()
    (out / "eval").write_text("")
    assert f"output_dir={out}: {out / 'eval'} is a file, not a directory" in error_of(capsys, f"target={run}", f"output_dir={out}")
    (out / "eval").unlink()
    (out / "eval" / "checkpoint-3.json").mkdir(parents=True)
    assert f"output_dir={out}: {out / 'eval' / 'checkpoint-3.json'} is a directory, where the eval writes its result" in error_of(
        capsys, f"target={run}", f"output_dir={out}"
    )


def test_unknown_key_fails_before_anything_loads(tmp_path, capsys):
    with process_state_kept(), pytest.raises(SystemExit) as info:
        rlvr_eval.main([f"target={tmp_path}", "eval.nn=3"])
    assert info.value.code == 2
    assert "unknown config key 'eval.nn' (did you mean 'eval.n'?)" in capsys.readouterr().err


def test_the_run_config_is_taken_and_the_command_line_replaces_parts_of_it(tmp_path):
    run = fake_run_dir(tmp_path / "run", "dataset.max_eval_samples=16", "algorithm.max_completion_length=12", "reward=math_verify")
    cfg = rlvr_eval.compose(["dataset.max_eval_samples=4", "eval=pass_at_k"], run)
    assert cfg.dataset.max_eval_samples == 4  # the key named
    assert cfg.eval.n == 8 and list(cfg.eval.ks) == [1, 2, 4, 8]  # the group chosen
    assert cfg.algorithm.max_completion_length == 12 and list(cfg.reward.functions) == ["math_verify"]  # the run's
    assert rlvr_eval.compose([], None).reward.functions.keys() != cfg.reward.functions.keys()  # not the defaults'


def test_a_run_written_by_an_earlier_rlvr_is_read_without_its_retired_keys(tmp_path, caplog):
    run = fake_run_dir(tmp_path / "run", "dataset.max_eval_samples=16")
    saved = OmegaConf.load(run / "config_resolved.yaml")
    saved.algorithm.fine_grained.toy = False  # schema keys an earlier rlvr wrote into every run dir
    saved.algorithm.fine_grained.toy_steps = 20
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(saved))
    cfg = rlvr_eval.compose([], run)
    assert cfg.dataset.max_eval_samples == 16
    assert "ignoring algorithm.fine_grained.toy, algorithm.fine_grained.toy_steps" in caplog.text


def test_a_result_is_reused_only_with_the_same_settings(tmp_path, monkeypatch):
    model_dir = tmp_path / "final_model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    evaluated = []

    def fake_eval(cfg, label, model_dir, run_dir, out_dir):
        evaluated.append(overrides)
        return {f"eval_{label}_accuracy": 0.5}, 0

    monkeypatch.setattr(rlvr_eval, "evaluate_model", fake_eval)
    target = rlvr_eval.resolve_target(str(model_dir))
    # outside the groups too: the default eval length, a built-in dataset's rows (seed), the recipe's rewards
    for overrides in (
        [],
        [],
        ["algorithm.max_completion_length=1"],
        ["seed=5"],
        ["algorithm=fgrpo"],
        ["+algorithm.trl.chat_template_kwargs={enable_thinking: false}"],
        ["algorithm.vllm.dtype=float32"],  # eval.engine=vllm's weights: a bf16 result stood for an fp32 one
        ["eval=pass_at_k"],
        ["eval=pass_at_k"],
    ):
        cfg = rlvr_eval.compose(overrides, None)
        [result] = rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
        assert result["metrics"] == {"accuracy": 0.5}
    assert evaluated == [
        [],
        ["algorithm.max_completion_length=1"],
        ["seed=5"],
        ["algorithm=fgrpo"],
        ["+algorithm.trl.chat_template_kwargs={enable_thinking: false}"],
        ["algorithm.vllm.dtype=float32"],
        ["eval=pass_at_k"],
    ]
    assert json.loads((tmp_path / "out" / "eval" / "final_model.json").read_text())["settings"]["eval"]["n"] == 8


def test_the_prompts_dropped_for_the_context_are_recorded_and_printed(tmp_path, monkeypatch, capsys):
    """Two evals of one model at other token limits score other prompts: `<label>.json` said how many
    were scored, not how many were dropped (rlvr.run's metrics.json says it)."""
    (tmp_path / "config.json").write_text("{}")

    def fake_eval(cfg, label, model_dir, run_dir, out_dir):
        (out_dir / "eval").mkdir(parents=True, exist_ok=True)
        (out_dir / "eval" / f"{label}.jsonl").write_text('{"index": 0}\n{"index": 1}\n')
        return {f"eval_{label}_accuracy": 0.5}, 3

    monkeypatch.setattr(rlvr_eval, "evaluate_model", fake_eval)
    with process_state_kept():
        rlvr_eval.main([f"target={tmp_path}"])
    result = json.loads((tmp_path / "eval" / f"{tmp_path.name}.json").read_text())
    assert (result["prompts"], result["prompts_dropped_too_long"]) == (2, 3)
    assert "(2 prompts scored, 3 dropped: too long for the context)" in capsys.readouterr().out


def test_a_sweep_over_targets_evaluates_each_and_reports_the_one_that_failed(tmp_path, monkeypatch, capsys):
    """`-m target=A,B,C`: one job per target (Hydra's launcher, here the basic one in this process);
    a target that cannot be evaluated fails its job in one line and the others still run."""
    models = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        models.append(tmp_path / name)
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: ({f"eval_{label}_accuracy": cfg.eval.n / 10}, 0))
    targets = ",".join(str(p) for p in (models[0], tmp_path / "missing", models[1]))
    with process_state_kept(), pytest.raises(SystemExit) as ended:
        rlvr_eval.main(["-m", f"target={targets}", "eval=pass_at_k", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert ended.value.code == 2
    for model in models:
        assert json.loads((model / "eval" / f"{model.name}.json").read_text())["metrics"] == {"accuracy": 0.8}
    out, err = capsys.readouterr()
    assert "a: accuracy=0.8" in out and "b: accuracy=0.8" in out
    assert f"rlvr.eval: error: target {tmp_path / 'missing'}: no such directory" in err
    assert f"rlvr.eval: job 1 (target={tmp_path / 'missing'} eval=pass_at_k) failed" in err


def eval_after(run):
    return {
        k.removeprefix("eval_after_"): v for k, v in json.loads((run / "metrics.json").read_text()).items() if k.startswith("eval_after_")
    }


@pytest.mark.slow
def test_every_checkpoint_of_a_lora_run_gives_a_curve_and_the_last_equals_the_eval_after_training(tmp_path):
    """Each checkpoint holds an adapter whose base is the SFT-warmed tiny model, which only the run's
    initial_policy/ holds; checkpoint-4 is the end of training (max_steps=4, save_steps=2)."""
    run = completed_run(
        tmp_path / "run",
        *TINY_RUN,
        "model.warmup_sft_steps=100",
        "eval.before=false",
        "model.lora.enabled=true",
        "model.lora.r=4",
        "eval=pass_at_k",
        "eval.n=4",
        "eval.ks=[1,2,4]",
    )
    assert (run / "checkpoints" / "checkpoint-4" / "adapter_config.json").exists()
    result = run_cli("rlvr.eval", f"target={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run / "eval").glob("checkpoint-*.json")) == ["checkpoint-2.json", "checkpoint-4.json"]
    assert len(read_jsonl(run / "eval" / "checkpoint-4.jsonl")) == 16  # the run's dataset.max_eval_samples
    curve = read_jsonl(run / "eval" / "curve.jsonl")
    assert [row["step"] for row in curve] == [2, 4] and "eval/pass@4" in curve[0] and "eval/maj@4_ci_low" in curve[0]
    assert (run / "plots" / "eval_checkpoints.png").stat().st_size > 1000
    # eval-only on the last checkpoint gives the in-training eval's numbers, every one of them
    after = eval_after(run)
    assert json.loads((run / "eval" / "checkpoint-4.json").read_text())["metrics"] == after
    assert after["accuracy"] > 0 and "maj@4" in after

    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "eval").glob("checkpoint-*")}
    again = run_cli("rlvr.eval", f"target={run}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") == 2
    assert {p.name: p.stat().st_mtime_ns for p in (run / "eval").glob("checkpoint-*")} == stamps
    # a checkpoint written again (a continued run rebuilds it) is evaluated again, not read back
    rewritten = run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    os.utime(rewritten, ns=(rewritten.stat().st_atime_ns, rewritten.stat().st_mtime_ns + 1))
    third = run_cli("rlvr.eval", f"target={run}")
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stderr.count("skipped") == 1 and "checkpoint-4: evaluating" in third.stderr

    # the merged final model, a whole-model dir, evaluated into another dir: the same numbers again
    final = run_cli("rlvr.eval", f"target={run / 'final_model'}", f"output_dir={tmp_path / 'out'}")
    assert final.returncode == 0, final.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "eval" / "final_model.json").read_text())["metrics"] == after

    # with two processes: each evaluates its share of the rows, rank 0 writes them; the same numbers
    two = run_cli(*TORCHRUN_TWO, "-m", "rlvr.eval", f"target={run / 'final_model'}", f"output_dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "eval" / "final_model.json").read_text())["metrics"] == after
    assert [row["index"] for row in read_jsonl(tmp_path / "two" / "eval" / "final_model.jsonl")] == list(range(16))


def test_a_vllm_eval_that_cannot_run_here_fails_in_one_line(tmp_path, capsys):
    """Read from the model's config.json before anything loads: a head size vLLM's CPU attention
    lacks, then (in this venv) vLLM missing."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    refusal = error_of(capsys, f"target={model}", "eval.engine=vllm")
    assert "eval.engine=vllm: vLLM's CPU attention takes head_dim 32, 64" in refusal
    assert refusal.endswith("this model's is 16 (saved weights keep their shape: eval.engine=hf evaluates them)")
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 2}))
    assert "eval.engine=vllm: vLLM is not installed" in error_of(capsys, f"target={model}", "eval.engine=vllm")
    assert "eval.engine='vlm' must be one of hf, vllm (did you mean 'vllm'?)" in error_of(capsys, f"target={model}", "eval.engine=vlm")
    # the rollout engines' knobs, which it ignored: mode=server evaluated here all the same
    assert error_of(capsys, f"target={model}", "eval.engine=vllm", "algorithm.vllm.mode=server").startswith(
        "rlvr.eval: error: algorithm.vllm.mode=server: rlvr.eval starts no rollout engine"
    )


@pytest.mark.slow
def test_an_fgrpo_model_is_evaluated_through_its_span_rewards(tmp_path):
    """Span functions return spans, which the recipe's adapter makes rewards of (in training, and here);
    the accuracy span's text is the answer maj@k votes on."""
    from rlvr.rewards.spans import answer_spans

    run = completed_run(tmp_path, *TINY_RUN, "algorithm=fgrpo", "algorithm.max_steps=2", "eval.before=false", "eval.after=false")
    result = run_cli("rlvr.eval", f"target={run / 'final_model'}", "eval=pass_at_k", "eval.limit=8")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "eval" / "final_model.json").read_text())["metrics"]
    assert {"accuracy", "mean@8", "pass@8", "maj@8"} <= metrics.keys()
    rows = [json.loads(line) for line in (run / "eval" / "final_model.jsonl").read_text().splitlines()]
    # every sample that holds a number has it as its prediction (one with none is `missing`: no vote)
    samples = [sample for row in rows for sample in row["samples"]]
    assert all((sample["prediction"] is None) == answer_spans.finds_no_answer(sample["completion"]) for sample in samples)
    assert any(sample["prediction"] is not None for sample in samples)


def test_a_runs_relative_paths_are_read_from_where_it_started(tmp_path, monkeypatch):
    """An eval run from any directory reads the data and reward model the run read (their paths
    relative to the run's start dir, also where the same path names another file from here), and
    leaves Hub names as they are."""
    started_in = tmp_path / "project"
    (started_in / "data").mkdir(parents=True)
    (started_in / "data" / "own.jsonl").write_text('{"question": "1+1=", "answer": "2"}\n')
    (started_in / "runs" / "rm").mkdir(parents=True)
    run = fake_run_dir(
        tmp_path / "run",
        "dataset.source=data/own.jsonl",
        "reward=hybrid",
        "reward.functions.hybrid.reward_model=runs/rm",
        "model.name_or_path=Qwen/Qwen2.5-0.5B",
    )
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"runtime": {"cwd": str(started_in)}}}))
    monkeypatch.chdir(tmp_path)
    cfg = rlvr_eval.compose([], run)
    assert cfg.dataset.source == str(started_in / "data" / "own.jsonl")
    assert cfg.reward.functions.hybrid.reward_model == str(started_in / "runs" / "rm")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-0.5B"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "own.jsonl").write_text("")  # another file under the same relative path
    assert rlvr_eval.compose([], run).dataset.source == str(started_in / "data" / "own.jsonl")
