"""Bad input at the command line: one line on stderr naming the culprit, exit code 2, no traceback."""

import json

import pytest

from conftest import TINY_RUN, one_line_error, refused_in_process, run_cli

pytestmark = pytest.mark.slow


def test_dataset_path_that_does_not_exist(tmp_path):
    line = one_line_error(run_cli("rlvr.run", *TINY_RUN, "dataset.source=/nope/train.jsonl", f"hydra.run.dir={tmp_path}"))
    assert "dataset file not found: /nope/train.jsonl" in line


def test_row_missing_the_gold_column(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"question": "1+1=", "answer": "2"}\n{"question": "2+2="}\n')
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, f"dataset.source={data}", "dataset.eval_holdout=0", f"hydra.run.dir={tmp_path / 'run'}")
    )
    assert "line 2 has no value in column 'answer'" in line


def test_hub_model_while_offline(tmp_path):
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, "model=qwen2.5_0.5b_instruct", f"hydra.run.dir={tmp_path}", env={"HF_HOME": str(tmp_path / "hf")})
    )
    assert "model 'Qwen/Qwen2.5-0.5B-Instruct' is not a directory here, and as a Hub name it is not in the local cache" in line
    assert "pass a local path (model.name_or_path=/path/to/model)" in line


def test_hub_dataset_while_offline(tmp_path):
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, "dataset=gsm8k", f"hydra.run.dir={tmp_path}", env={"HF_HOME": str(tmp_path / "hf")})
    )
    assert "cannot load Hub dataset 'openai/gsm8k'" in line and "pass a local file" in line


def test_unknown_trl_passthrough_field(tmp_path):
    """A field rlvr sets as a key of its own is suggested as that key: algorithm.trl.temperature is refused too."""
    line = one_line_error(refused_in_process(*TINY_RUN, "+algorithm.trl.temprature=1", f"hydra.run.dir={tmp_path}"))
    assert line.endswith("algorithm.trl.temprature is not a GRPOConfig field (did you mean algorithm.temperature?)")
    line = one_line_error(refused_in_process(*TINY_RUN, "+algorithm.trl.top_entropy_quantil=1", f"hydra.run.dir={tmp_path}"))
    assert line.endswith("algorithm.trl.top_entropy_quantil is not a GRPOConfig field (did you mean 'top_entropy_quantile'?)")


def test_reasoning_vocabulary_on_a_reward_model(tmp_path):
    line = one_line_error(
        refused_in_process(
            "algorithm=reward_model", "model.reasoning_vocab_size=8", "logging=disabled", f"hydra.run.dir={tmp_path / 'run'}"
        )
    )
    assert "model.reasoning_vocab_size is for policies" in line
    assert list(tmp_path.iterdir()) == []  # refused by the start-up check


def test_reasoning_vocabulary_larger_than_the_copyable_tokens(tmp_path):
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, "model.reasoning_vocab_size=100000", "eval.before=false", f"hydra.run.dir={tmp_path}")
    )
    assert "model.reasoning_vocab_size=100000 is more than the 256 copyable tokens" in line


@pytest.mark.parametrize(
    "knob", ["algorithm.learning_rate=-1", "algorithm.max_completion_length=0", "algorithm.temperature=0", "eval.batch_size=0"]
)
def test_non_positive_knob_fails_before_anything_loads(tmp_path, knob):
    line = one_line_error(refused_in_process(*TINY_RUN, knob, f"hydra.run.dir={tmp_path}"))
    assert f"{knob} must be > 0" in line.replace("-1.0", "-1").replace("=0.0", "=0")
    assert not (tmp_path / "config_resolved.yaml").exists()  # failed before the run started


def test_model_directory_without_a_model_is_refused_before_the_run_dir_is_written(tmp_path):
    line = one_line_error(refused_in_process(*TINY_RUN, f"model.name_or_path={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert f"model directory {tmp_path} has no config.json" in line
    assert not (tmp_path / "run").exists()


def test_a_model_of_ones_own_under_the_built_in_models_warm_up_is_refused(tmp_path):
    """`model.name_or_path=/my/model` alone kept model=tiny's 100-step SFT warm-up (lr 1e-3, made for a random
    model): a pretrained model was fine-tuned before its first eval, with an INFO line. So did an experiment's
    (experiment=addition_chat_qwen: 150 steps)."""
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer

    from omegaconf import OmegaConf

    from rlvr.config import TinyModelConfig

    tokenizer = build_tiny_tokenizer()
    build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0).save_pretrained(tmp_path / "mine")
    tokenizer.save_pretrained(tmp_path / "mine")
    line = one_line_error(refused_in_process(f"model.name_or_path={tmp_path / 'mine'}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert line.startswith(f"rlvr: error: model.name_or_path={tmp_path / 'mine'} keeps the SFT warm-up the config sets")
    assert "(100 steps at lr 0.001), which would train your model first: set model.warmup_sft_steps (0: no warm-up)" in line
    line = one_line_error(
        refused_in_process("experiment=addition_chat_qwen", f"model.name_or_path={tmp_path / 'mine'}", f"hydra.run.dir={tmp_path / 'run'}")
    )
    assert "keeps the SFT warm-up the config sets for its built-in random model (150 steps" in line
    with pytest.raises(pytest.fail.Exception, match="refused_in_process is for refusals"):  # set on the command line: meant
        refused_in_process(f"model.name_or_path={tmp_path / 'mine'}", "model.warmup_sft_steps=3", f"hydra.run.dir={tmp_path / 'run'}")


def test_a_run_dir_or_an_adapter_as_the_model_names_what_to_pass(tmp_path):
    from rlvr.errors import ModelLoadError
    from rlvr.models.loading import check_reachable

    (tmp_path / "final_model").mkdir()
    (tmp_path / "final_model" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=f"a run dir: its model is model.name_or_path={tmp_path / 'final_model'}$"):
        check_reachable(str(tmp_path))
    adapter = tmp_path / "checkpoints" / "checkpoint-8"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="a LoRA adapter alone: name the run's merged final_model/"):
        check_reachable(str(adapter))


def test_lora_target_the_model_lacks(tmp_path):
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, "model.lora.enabled=true", "model.lora.target_modules=[qkv]", f"hydra.run.dir={tmp_path}")
    )
    assert "model.lora.target_modules: qkv not in Qwen2ForCausalLM; its linear layers are down_proj" in line


def test_chat_prompts_for_a_tokenizer_without_a_chat_template(tmp_path):
    from omegaconf import OmegaConf

    from rlvr.config import TinyModelConfig
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None  # a base model's tokenizer
    build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, f"model.name_or_path={tmp_path / 'base'}", "dataset.chat=true", f"hydra.run.dir={tmp_path / 'run'}")
    )
    assert "dataset.chat=true (chat-message prompts) but the tokenizer of" in line and "dataset.chat=false" in line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+algorithm.lerning_rate=0.5", "unknown config key 'algorithm.lerning_rate' (did you mean 'algorithm.learning_rate'?)"),
        ("+algorithm.trl.learning_rate=0.5", "'+algorithm.trl.learning_rate' repeats algorithm.learning_rate"),
        ("algorithm.epsilon=-1", "algorithm.epsilon=-1.0 must be > 0"),
        ("algorithm.num_generations=0", "algorithm.num_generations=0 must be >= 2"),
        ("algorithm.learning_rate=${oc.env:HOME}", "algorithm.learning_rate: While dereferencing interpolation"),
        ("algorithm.loss_type=ppo", "algorithm.loss_type='ppo' must be one of bnpo, cispo, dapo"),
        ("hardware.device=cpux", "hardware.device='cpux' must be one of cpu, cuda, mps (did you mean 'cpu'?)"),
    ],
)
def test_bad_values_fail_in_one_line_before_anything_loads(tmp_path, override, message):
    line = one_line_error(refused_in_process(*TINY_RUN, override, f"hydra.run.dir={tmp_path}"))
    assert message in line
    assert not (tmp_path / "config_resolved.yaml").exists()


def test_a_completion_length_beyond_the_context_is_one_line(tmp_path):
    line = one_line_error(
        run_cli("rlvr.run", *TINY_RUN, "algorithm.max_completion_length=100000", f"hydra.run.dir={tmp_path}", timeout=120)
    )
    assert "algorithm.max_completion_length=100000 leaves no room for a prompt in the model's 256-token context: lower it" in line
    assert not (tmp_path / "eval").exists()  # refused before the warm-up and the first eval


def test_a_5_mb_prompt_is_dropped_and_counted_and_the_run_finishes(tmp_path):
    import json

    rows = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(8) for b in range(8)]
    rows.insert(20, {"question": "7+" * 2_500_000 + "1=", "answer": "?"})
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_dir = tmp_path / "run"
    result = run_cli(
        "rlvr.run",
        *TINY_RUN,
        f"dataset.source={data}",
        "dataset.eval_holdout=16",
        "algorithm.max_steps=1",
        "model.warmup_sft_steps=0",
        "eval.before=false",
        "eval.after=false",
        "algorithm.save_steps=0",
        "logging.plots=false",
        f"hydra.run.dir={run_dir}",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_prompts_dropped_too_long"] + metrics["eval_prompts_dropped_too_long"] == 1
    assert "prompts longer than 250 tokens (the model's 256-token context minus algorithm.max_completion_length=6)" in result.stdout


def test_fewer_train_prompts_than_one_generation_takes_is_one_line(tmp_path):
    """3 prompts, 16 completions of 4 each a generation: TRL's sampler would yield no batch, 0 steps trained."""
    line = one_line_error(run_cli("rlvr.run", *TINY_RUN, "dataset.max_train_samples=3", f"hydra.run.dir={tmp_path}"))
    assert line == (
        "rlvr: error: 3 train prompts (after dataset limits and prompts too long for the context), fewer than the 4 that "
        "one generation of 16 completions takes at algorithm.num_generations=4: use more data or a smaller "
        "algorithm.per_device_train_batch_size"
    )
    assert not (tmp_path / "warmup.json").exists()  # refused before the SFT warm-up, not after it


def test_a_reward_model_that_diverges_is_a_failed_run_not_a_completed_one(tmp_path):
    """Its logged losses (transformers leaves non-finite ones out) and exit said "completed", its final model 87% NaN."""
    args = ["experiment=rm_hh", "logging=disabled", "algorithm.max_steps=4", "algorithm.eval_steps=2", "algorithm.learning_rate=1e30"]
    line = one_line_error(run_cli("rlvr.run", *args, "algorithm.max_grad_norm=0", f"hydra.run.dir={tmp_path}"))
    assert line.startswith("rlvr: error: training diverged: ") and "% of the model's parameters are NaN or infinite at step 4: " in line
    assert "start a new run dir with a lower algorithm.learning_rate" in line
    assert not (tmp_path / "final_model").exists() and not (tmp_path / "metrics.json").exists()
    end = json.loads((tmp_path / "run_info.jsonl").read_text().splitlines()[-1])
    assert (end["ended"], end["error"]) == ("failed", line.removeprefix("rlvr: error: "))  # why, where the run's history is


def test_an_sft_warm_up_that_diverges_is_one_line_not_a_loss_of_0(tmp_path):
    """warmup.json said a loss of 0.0 (transformers' loss leaves non-finite steps out) and RL went on."""
    args = ["model.warmup_sft_learning_rate=1e30", "model.warmup_sft_cache=false", f"hydra.run.dir={tmp_path}"]
    line = one_line_error(run_cli("rlvr.run", *TINY_RUN, *args))
    assert line.startswith("rlvr: error: the SFT warm-up diverged: ") and line.endswith(": lower model.warmup_sft_learning_rate")
    assert not (tmp_path / "warmup.json").exists()
