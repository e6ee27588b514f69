"""Whole runs through `python -m rlvr.run`, as a user types them (offline, CPU)."""

import json
import os

import pytest

from rlvr.rewards.checks import ROW_FIELDS
from conftest import ROOT, TINY_RUN, TORCHRUN_TWO, completed_run, rank_weight_digests, run_cli

pytestmark = pytest.mark.slow


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return completed_run(tmp_path_factory.mktemp("run"), *TINY_RUN)


def test_run_writes_every_artefact(tiny_run):
    for name in [
        "config_resolved.yaml",
        ".hydra/config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "rollouts.jsonl",
        "eval/before.jsonl",
        "eval/after.jsonl",
        "plots/reward.png",
        "plots/accuracy.png",
        "final_model/model.safetensors",
        "final_model/tokenizer.json",
        "checkpoints/checkpoint-4",
    ]:
        assert (tiny_run / name).exists(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in [
        "eval_before_accuracy",
        "eval_after_accuracy",
        "eval_after_mean_new_tokens",
        "train_reward_first20",
        "train_reward_last20",
        "train_steps",
    ]:
        assert key in metrics, key
    assert metrics["train_steps"] == 4


def test_run_info_says_what_produced_the_run(tiny_run):
    import subprocess

    import trl

    info, end = read_jsonl(tiny_run / "run_info.jsonl")
    assert end["ended"] == "completed" and "continue" not in end
    assert info["command"][1:3] == ["-m", "rlvr.run"] and f"hydra.run.dir={tiny_run}" in info["command"]
    assert info["packages"]["trl"] == trl.__version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info["git"]["commit"] == head


def test_rollouts_record_each_completion(tiny_run):
    rows = read_jsonl(tiny_run / "rollouts.jsonl")
    assert len(rows) == 4 * 16  # steps x completions per step
    assert {r["step"] for r in rows} == {1, 2, 3, 4}  # metrics.jsonl's steps
    for row in rows:
        assert set(row) >= {"prompt_id", "prompt", "completion", "prediction", "gold", "rewards", "reward", "correct"}
        assert set(row) - {"prompt", "completion", "gold"} <= set(ROW_FIELDS)  # what rlvr.score passes no reward
        assert row["correct"] == (row["rewards"]["gsm8k_flexible"] == 1.0)
        a, b = row["prompt"].rstrip("=").split("+")
        assert int(row["gold"]) == int(a) + int(b)


def test_metrics_log_reward_stats_per_function(tiny_run):
    logged = [m for m in read_jsonl(tiny_run / "metrics.jsonl") if "reward" in m]
    assert [m["step"] for m in logged] == [1, 2, 3, 4]
    for key in [
        "rewards/gsm8k_flexible/mean",
        "rewards/gsm8k_flexible/std",
        "rewards/gsm8k_flexible/timeout_frac",
        "rewards/gsm8k_flexible/unparsable_frac",
    ]:
        assert key in logged[0], key


def test_eval_rows_match_the_eval_split(tiny_run):
    before = read_jsonl(tiny_run / "eval/before.jsonl")
    assert len(before) == 16
    accuracy = sum(bool(r["correct"]) for r in before) / len(before)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["eval_before_accuracy"] == pytest.approx(accuracy)


def test_final_model_reloads_and_generates(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_run / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(tiny_run / "final_model")
    ids = tokenizer("2+3=", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_per_prompt_plot_command(tiny_run):
    result = run_cli("rlvr.plots", str(tiny_run), "--per-prompt")
    assert result.returncode == 0, result.stderr
    assert (tiny_run / "plots" / "per_prompt_accuracy.png").stat().st_size > 1000


def test_local_launcher_trains_data_parallel_like_slurm(tmp_path):
    """hydra/launcher=local with 2 tasks: one gloo job of 2 ranks (not 2 runs sharing a dir), same
    weights on both ranks after LoRA is merged, one writer of the logs; the eval after training
    split across the ranks, each row evaluated once."""
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/launcher=local",
        "hardware.tasks_per_node=2",
        *TINY_RUN,
        "model.lora.enabled=true",
        "eval.before=false",
        "eval=pass_at_k",
        "eval.n=2",
        "eval.ks=[2]",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    digests = rank_weight_digests(tmp_path)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1]
    logged = [row for row in read_jsonl(tmp_path / "0" / "metrics.jsonl") if "loss" in row]
    assert [row["step"] for row in logged] == [1, 2, 3, 4]
    rollouts = read_jsonl(tmp_path / "0" / "rollouts.jsonl")  # every rank's completions: what the logged reward is the mean of
    for row in logged:
        scored = [r["reward"] for r in rollouts if r["step"] == row["step"]]
        assert len(scored) == 2 * 16 and sum(scored) / len(scored) == pytest.approx(row["reward"], abs=1e-6)
    rows = read_jsonl(tmp_path / "0" / "eval" / "after.jsonl")
    assert [row["index"] for row in rows] == list(range(16)) and all(len(row["samples"]) == 2 for row in rows)
    assert [row["rank"] for row in rows] == [0, 1] * 8  # rank r evaluates rows r, r + 2, ...
    for row in rows:  # what rlvr.score passes no reward, of an eval row and of its samples
        assert set(row) - {"prompt", "completion", "gold"} <= set(ROW_FIELDS)
        assert all(set(sample) - {"completion"} <= set(ROW_FIELDS) for sample in row["samples"]), row["samples"][0]
    assert "eval_after_pass@2" in json.loads((tmp_path / "0" / "metrics.json").read_text())


def test_the_processes_of_a_torchrun_launch_share_rank_zeros_run_dir(tmp_path):
    """Each process of a torchrun launch resolves hydra.run.dir itself, and `${now:...}` differs between
    processes started either side of a second's turn; here the dir differs by rank on purpose. The run
    trains in rank 0's dir and rank 1's empty one is removed (rank 1 used to wait there for ever)."""
    result = run_cli(
        *TORCHRUN_TWO,
        "-m",
        "rlvr.run",
        *TINY_RUN,
        "hardware.tasks_per_node=2",
        "eval.before=false",
        "eval.after=false",
        f"hydra.run.dir={tmp_path}/rank${{oc.env:RANK}}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [path.name for path in tmp_path.iterdir()] == ["rank0"]
    assert [row["step"] for row in read_jsonl(tmp_path / "rank0" / "metrics.jsonl") if "loss" in row] == [1, 2, 3, 4]
    # one console: rank 1 prints only its warnings; run.log keeps both ranks' lines, rank 1's tagged as its
    # (the final metrics: rank 0's only, the others hold no eval results)
    log = (tmp_path / "rank0" / "run.log").read_text().splitlines()
    assert result.stdout.count("- done: everything this run wrote") == 1 and result.stdout.count("- final metrics:") == 1
    done = [line for line in log if "- done: everything this run wrote" in line]
    assert len(done) == 2 and sum(line.startswith("[rank 1][") for line in done) == 1
    assert sum("- final metrics:" in line for line in log) == 1


RANK_ONE_FAILS = """import os

calls = [0]


def flaky(completions, **kwargs):
    calls[0] += 1
    if os.environ.get("RANK") == "1" and calls[0] >= 2:
        raise ValueError("boom on rank one")
    return [0.0] * len(completions)
"""


def test_a_reward_failing_on_one_rank_stops_every_rank_naming_that_rank_and_its_error(tmp_path):
    """Rank 0 (and run_info.jsonl) said only 'a reward failed on another rank: that rank's log names it'."""
    (tmp_path / "flaky_reward.py").write_text(RANK_ONE_FAILS)
    result = run_cli(
        *TORCHRUN_TWO,
        "-m",
        "rlvr.run",
        *TINY_RUN,
        "hardware.tasks_per_node=2",
        "eval.before=false",
        "+reward.functions.flaky={_target_: flaky_reward.flaky, weight: 0.5}",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))},
        timeout=300,
    )
    assert result.returncode != 0
    end = read_jsonl(tmp_path / "run" / "run_info.jsonl")[-1]
    assert end["error"].startswith("a reward failed on rank 1: reward 'flaky' raised ValueError: boom on rank one"), end


def test_several_tasks_without_a_launcher_say_so(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "hardware.tasks_per_node=2", "algorithm.max_steps=1", "eval.before=false", "eval.after=false")
    assert "hardware asks for 2 processes but this is one process" in (tmp_path / "run.log").read_text()


def test_reward_weights_reach_trl(tmp_path):
    completed_run(
        tmp_path,
        *TINY_RUN,
        "model.warmup_sft_steps=100",
        "reward=[gsm8k_flexible,think_format]",
        "reward.functions.gsm8k_flexible.weight=0.5",
    )
    rows = read_jsonl(tmp_path / "rollouts.jsonl")
    assert any(row["rewards"]["gsm8k_flexible"] == 1.0 for row in rows)
    for row in rows:
        expected = 0.5 * row["rewards"]["gsm8k_flexible"] + row["rewards"]["think_format"]
        assert row["reward"] == pytest.approx(expected)
    logged = [m for m in read_jsonl(tmp_path / "metrics.jsonl") if "reward" in m]
    step_one = [r for r in rows if r["step"] == 1]
    assert logged[0]["reward"] == pytest.approx(sum(r["reward"] for r in step_one) / len(step_one))  # TRL's mean


def test_lora_run_saves_a_merged_model_that_reproduces_its_eval(tmp_path):
    """The adapter's base here is the SFT-warmed tiny model, which exists only in the run: the
    adapter alone could not be loaded again, so final_model/ is the merged model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.evaluation.engine import generate_batch

    completed_run(tmp_path, *TINY_RUN, "model.lora.enabled=true", "model.lora.r=4", "algorithm.save_steps=0", "model.warmup_sft_steps=100")
    assert (tmp_path / "final_adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "final_model" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final_model")
    rows = read_jsonl(tmp_path / "eval" / "after.jsonl")
    max_new = max(row["new_tokens"] for row in rows)
    completions = generate_batch(model.eval(), tokenizer, [row["prompt"] for row in rows], max_new)[0]
    assert completions == [row["completion"] for row in rows]  # the saved model is the evaluated one
    assert sum(row["correct"] for row in rows) > 0  # and it is the trained one, not a blank model


def test_lora_run_can_keep_the_adapter_only(tmp_path):
    completed_run(
        tmp_path,
        *TINY_RUN,
        "model.lora.enabled=true",
        "model.lora.r=4",
        "algorithm.save_steps=0",
        "model.lora.save_merged=false",
        "eval.after=false",
    )
    assert (tmp_path / "final_adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "final_model").exists()


def test_default_run_learns(tmp_path):
    """The offline default (`make run`): the sampled reward and greedy accuracy rise."""
    completed_run(tmp_path, "logging=disabled", timeout=600)
    m = json.loads((tmp_path / "metrics.json").read_text())
    print({k: round(v, 3) for k, v in m.items()})
    assert m["train_reward_last20"] > m["train_reward_first20"] + 0.15
    assert m["eval_after_accuracy"] > m["eval_before_accuracy"] + 0.15


def test_an_eval_whose_completions_are_mostly_cut_at_the_limit_says_so_as_rlvr_eval_does(tmp_path):
    """rlvr.eval warned; the evals of a training run (truncated_frac 1.0) said nothing."""
    args = ["algorithm.max_completion_length=2", "model.warmup_sft_steps=0", "algorithm.max_steps=1", f"hydra.run.dir={tmp_path}"]
    result = run_cli("rlvr.run", *TINY_RUN, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "run.log").read_text()
    cut = "% of the greedy completions were cut at the limit of 2 new tokens, from algorithm.max_completion_length"
    assert f"eval before: 100{cut}" in log and f"eval after: 100{cut}" in log
