"""`algorithm=reward_model` end to end, the trained RM reloaded, then used by `reward=hybrid` in GRPO."""

import json
import shutil

import pytest

from conftest import TINY_RUN, completed_run, one_line_error, refused_in_process, run_cli
from rlvr.tracking.outputs import read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("rm"), "algorithm=reward_model", "logging=disabled", "algorithm.max_steps=300")


def test_reward_model_run_writes_metrics_plots_and_model(rm_run):
    metrics = json.loads((rm_run / "metrics.json").read_text())
    for key in [
        "eval_accuracy",
        "eval_pair_accuracy",
        "eval_pair_margin",
        "eval_loss",
        "eval_chosen_reward",
        "eval_rejected_reward",
        "eval_margin",
        "train_kept",
        "train_dropped_too_long",
        "eval_kept",
    ]:
        assert key in metrics, key
    assert metrics["eval_pair_accuracy"] > 0.75  # the built-in pairs are learnable: right sum vs wrong sum
    logged = [json.loads(line) for line in (rm_run / "metrics.jsonl").read_text().splitlines()]
    assert any("learning_rate" in row and "accuracy" in row for row in logged)
    evals = [row["step"] for row in logged if "eval_accuracy" in row]  # every 100 steps; the last step's once: the final eval's
    assert evals == [100, 200, 300], evals
    assert (rm_run / "plots" / "token_lengths.png").stat().st_size > 1000
    assert (rm_run / "plots" / "rm_accuracy.png").stat().st_size > 1000
    assert (rm_run / "final_model" / "config.json").exists()


def test_a_second_run_in_the_same_dir_is_refused(rm_run):
    again = refused_in_process("algorithm=reward_model", "logging=disabled", "algorithm.max_steps=300", f"hydra.run.dir={rm_run}")
    assert "already holds a finished reward-model run: pick a new hydra.run.dir" in one_line_error(again)


def test_a_reward_model_run_stopped_in_training_continues_from_its_checkpoint_as_if_never_stopped(rm_run, tmp_path):
    """It started over (its checkpoints dropped), though the stop's line said the same command continues
    it. Stopped after checkpoint-250, or after the last one (training's end), before the final model."""
    from safetensors.torch import load_file

    run = shutil.copytree(rm_run, tmp_path / "run")
    for name in ("metrics.json", "train_result.json"):
        (run / name).unlink()
    shutil.rmtree(run / "final_model")
    finished_training = shutil.copytree(run, tmp_path / "finished_training")
    shutil.rmtree(run / "checkpoints" / "checkpoint-300")
    completed_run(run, "algorithm=reward_model", "logging=disabled", "algorithm.max_steps=300")
    assert "resume from checkpoint-250)" in [line for line in (run / "run.log").read_text().splitlines() if "] - run dir " in line][-1]
    steps = [row["step"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert steps == sorted(set(steps)) and steps[-1] == 300
    completed_run(finished_training, "algorithm=reward_model", "logging=disabled", "algorithm.max_steps=300")
    assert "checkpoint-300 is the end of training: restoring it" in (finished_training / "run.log").read_text()
    whole = load_file(rm_run / "final_model" / "model.safetensors")
    for resumed in (load_file(r / "final_model" / "model.safetensors") for r in (run, finished_training)):
        assert all((resumed[name] == whole[name]).all() for name in whole)
    assert json.loads((run / "metrics.json").read_text())["train_loss"] == json.loads((rm_run / "metrics.json").read_text())["train_loss"]
    # TRL counts num_tokens where no checkpoint held it: the resumed count started again from 0
    [tokens, whole_tokens] = [
        [row for row in read_jsonl(r / "metrics.jsonl") if "num_tokens" in row][-1]["num_tokens"] for r in (run, rm_run)
    ]
    assert tokens == whole_tokens > 0
    # the final eval logs the count too: 0 where the checkpoint was restored, not trained from
    [whole_eval, *resumed_evals] = [
        json.loads((r / "metrics.json").read_text())["eval_num_tokens"] for r in (rm_run, run, finished_training)
    ]
    assert resumed_evals == [whole_eval, whole_eval] and whole_eval == whole_tokens


def test_reloaded_reward_model_scores_pairs_like_training_eval(rm_run):
    from rlvr.data.arithmetic import generate_preferences
    from rlvr.rewards.hybrid import RewardModelScorer, as_messages

    scorer = RewardModelScorer.from_path(str(rm_run), batch_size=16)
    pairs = generate_preferences(num_train=4000, num_eval=200, seed=0)["test"]  # the run's eval split (conf)
    chosen = scorer.score([as_messages(p["prompt"], p["chosen"]) for p in pairs])
    rejected = scorer.score([as_messages(p["prompt"], p["rejected"]) for p in pairs])
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)
    trained = json.loads((rm_run / "metrics.json").read_text())
    assert accuracy == pytest.approx(trained["eval_pair_accuracy"], abs=1e-9)  # the saved model scores as the trained one did
    assert margin == pytest.approx(trained["eval_pair_margin"], abs=1e-4)
    one_by_one = [scorer.score([as_messages(pairs[0]["prompt"], pairs[0]["chosen"])])[0]]
    assert one_by_one[0] == pytest.approx(chosen[0], abs=1e-4)  # padding does not change a score


def test_grpo_with_hybrid_reward_uses_the_trained_model(rm_run, tmp_path):
    completed_run(
        tmp_path,
        *TINY_RUN,
        "reward=hybrid",
        f"reward.functions.hybrid.reward_model={rm_run}",
        "reward.functions.hybrid.calibration_prompts=8",
    )
    calibration = json.loads((tmp_path / "hybrid_calibration.json").read_text())
    assert calibration["prompts"] == 8 and calibration["r_min"] <= calibration["r_max"]
    rows = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    for row in rows:
        value = row["rewards"]["hybrid"]
        assert (0.5 <= value <= 1.5) if row["correct"] else (-0.5 <= value <= 0.5)


def test_a_bare_models_hybrid_eval_keeps_its_calibration_beside_its_results(rm_run, tmp_path):
    """In the model dir itself it would change the dir's files, and the next eval would run again."""
    run = completed_run(tmp_path / "run", *TINY_RUN, "algorithm.max_steps=2", "eval.before=false", "eval.after=false", "eval.limit=5")
    assert "train / 16 eval prompts (5 evaluated: eval.limit)" in (run / "run.log").read_text()  # it said 16 alone
    model_dir = shutil.copytree(run / "final_model", tmp_path / "bare_model")  # a model dir outside any run
    hybrid = ["reward=hybrid", f"reward.functions.hybrid.reward_model={rm_run}", "reward.functions.hybrid.calibration_prompts=4"]
    first = run_cli("rlvr.eval", f"target={model_dir}", *hybrid, "eval.limit=8")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((model_dir / "eval" / "hybrid_calibration.json").read_text())["prompts"] == 4
    assert not (model_dir / "hybrid_calibration.json").exists()
    again = run_cli("rlvr.eval", f"target={model_dir}", *hybrid, "eval.limit=8")
    assert "bare_model: done" in again.stderr and "evaluating" not in again.stderr, again.stderr[-3000:]


def test_hybrid_without_a_reward_model_is_one_line(tmp_path):
    result = run_cli("rlvr.run", *TINY_RUN, "reward=hybrid", f"hydra.run.dir={tmp_path}")
    assert "rlvr: error: reward.functions.hybrid.reward_model must be set" in one_line_error(result)


def test_hh_sanity_check_run(tmp_path):
    completed_run(
        tmp_path,
        "experiment=rm_hh",
        "logging=disabled",
        "dataset.preference.sanity_check=true",
        "algorithm.max_steps=3",
        "algorithm.eval_steps=null",
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_kept"] + metrics["train_dropped_too_long"] + metrics["train_dropped_prompt_too_long"] == 100


def test_lora_reward_model_trains_its_score_head(tmp_path):
    """LoRA alone would leave the randomly initialised score head as it was (and peft's causal-LM
    wrapper cannot even hold a classifier): the head must train, and final_model/ load alone."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForSequenceClassification

    from rlvr.config import ModelConfig
    from rlvr.models.loading import load_reward_model

    completed_run(tmp_path, "algorithm=reward_model", "logging=disabled", "algorithm.max_steps=300", "model.lora.enabled=true")
    assert json.loads((tmp_path / "metrics.json").read_text())["eval_pair_accuracy"] > 0.75
    assert (tmp_path / "final_adapter" / "adapter_config.json").exists()
    initial, _ = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)  # the run's seed (conf/config.yaml)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final_model")
    assert not torch.allclose(saved.score.weight, initial.score.weight)


def test_a_reward_model_run_stopped_in_its_eval_is_finished_without_training(tmp_path):
    args = ["algorithm=reward_model", "logging=disabled", "algorithm.max_steps=20"]
    completed_run(tmp_path, *args)
    expected = json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "metrics.json").unlink()  # stopped while evaluating the saved model
    steps = (tmp_path / "metrics.jsonl").read_text()
    completed_run(tmp_path, *args)
    assert "training ended and its final model is saved: evaluating it" in (tmp_path / "run.log").read_text()
    assert (tmp_path / "metrics.jsonl").read_text().startswith(steps)  # no step trained again
    finished = json.loads((tmp_path / "metrics.json").read_text())
    assert finished["train_steps"] == 20 and finished["train_loss"] == expected["train_loss"]
    assert finished["eval_pair_accuracy"] == expected["eval_pair_accuracy"]
    assert finished["eval_num_tokens"] == expected["eval_num_tokens"] > 0  # it was 0: the count a stop lost
    # the final eval at the step and epoch training ended, as the first start logged it (not at step 0, epoch 0.0)
    assert finished["epoch"] == expected["epoch"] > 0
    evals = [row for row in read_jsonl(tmp_path / "metrics.jsonl") if "eval_loss" in row]
    assert [row["step"] for row in evals] == [20, 20] and evals[0]["epoch"] == evals[1]["epoch"]
