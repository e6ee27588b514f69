"""rlvr/evaluation/engine.py on the tiny model: reproducible samples, batching that changes nothing, the
per-example file and its metrics, and two ranks that give what one gives."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from evaluation_setup import EVAL, MAX_NEW, TinySetup
from omegaconf import OmegaConf

from rlvr.evaluation.metrics import pass_at_k
from rlvr.evaluation.engine import answer_equivalence, evaluate_rows, run_eval, summarise
from rlvr.tracking.outputs import read_jsonl

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tiny():
    return TinySetup()


def with_eval(**changes):
    return OmegaConf.merge(EVAL, changes)


def sample_texts(row):
    return [s["completion"] for s in row["samples"]]


def test_a_rows_samples_depend_on_the_seed_only_not_on_its_batch(tiny):
    alone = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, [3], tiny.rewards, EVAL, MAX_NEW, 0, "t")[0]
    crowded = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, [7, 3, 1, 5], tiny.rewards, with_eval(batch_size=8), MAX_NEW, 0, "t")[
        1
    ]
    assert crowded["index"] == 3 and sample_texts(crowded) == sample_texts(alone)
    assert len(set(sample_texts(alone))) == EVAL.n  # n different draws, not one repeated
    other_seed = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, [3], tiny.rewards, EVAL, MAX_NEW, 1, "t")[0]
    assert sample_texts(other_seed) != sample_texts(alone)


def test_more_samples_than_a_batch_holds_are_split_over_calls_and_draw_the_same(tiny, monkeypatch):
    """A prompt's n samples were one generate call whatever eval.batch_size said: eval.n=100000 one
    call of 100,000 sequences, its memory never bounded."""
    from rlvr.evaluation import engine

    whole = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, [3, 5], tiny.rewards, with_eval(n=5, ks=[1]), MAX_NEW, 0, "t")
    calls = []
    generate = engine.generate_batch
    monkeypatch.setattr(engine, "generate_batch", lambda *a, **k: calls.append(len(a[2]) * a[4]) or generate(*a, **k))
    small_batches = with_eval(n=5, ks=[1], batch_size=2)
    split = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, [3, 5], tiny.rewards, small_batches, MAX_NEW, 0, "t")
    assert calls == [2, 2, 2, 1, 2, 2, 1]  # greedy: 2 prompts; then each prompt's 5 samples as 2 + 2 + 1
    assert [sample_texts(row) for row in split] == [sample_texts(row) for row in whole]


def test_batched_greedy_equals_one_generate_call_per_prompt(tiny):
    import torch

    rows = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, list(range(6)), tiny.rewards, with_eval(n=0, ks=[]), MAX_NEW, 0, "t")
    for row in rows:
        encoded = tiny.tokenizer(row["prompt"], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ids = tiny.model.generate(**encoded, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id)
        assert row["completion"] == tiny.tokenizer.decode(ids[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        assert "samples" not in row


def test_a_model_of_nan_weights_is_one_line_not_a_greedy_eval_of_id_0():
    """Greedy decoding took id 0 from NaN scores, and the eval scored its "!!!!!!" as any completion, silently."""
    import torch

    from rlvr.errors import DivergedError

    broken = TinySetup(rows=2)
    with torch.no_grad():
        broken.model.get_output_embeddings().weight[5, 0] = math.nan
    with pytest.raises(DivergedError, match=r"^the model's next-token scores hold NaN or infinity \(2 of 2 sequences\)"):
        evaluate_rows(broken.model, broken.tokenizer, broken.dataset, [0, 1], broken.rewards, with_eval(n=0, ks=[]), MAX_NEW, 0, "t")


def test_top_k_one_samples_are_the_greedy_completion(tiny):
    """The sampler applies the filters: with one token left, every draw is the greedy one."""
    [row] = evaluate_rows(tiny.model, tiny.tokenizer, tiny.dataset, [2], tiny.rewards, with_eval(top_k=1), MAX_NEW, 0, "t")
    assert sample_texts(row) == [row["completion"]] * EVAL.n


def test_the_file_holds_every_row_and_the_metrics_are_those_of_the_file(tiny, tmp_path):
    out = tmp_path / "eval" / "after.jsonl"
    metrics = run_eval(tiny.model, tiny.tokenizer, tiny.dataset, tiny.rewards, with_eval(limit=8), MAX_NEW, out, "after", 0)
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(8)) and not out.with_name("after.jsonl.tmp").exists()
    for row in rows:
        assert len(row["samples"]) == 4 and row["judge"] == "length_class"
        for one in [row, *row["samples"]]:
            assert one["prediction"] in {"0", "1", "2"} and one["correct"] == (one["prediction"] == "0")
            assert one["new_tokens"] == MAX_NEW if one["truncated"] else 1 <= one["new_tokens"] <= MAX_NEW
    assert any(s["truncated"] for r in rows for s in r["samples"])
    correct = [[s["correct"] for s in r["samples"]] for r in rows]
    assert metrics["eval_after_accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 8)
    assert metrics["eval_after_mean@4"] == pytest.approx(sum(map(sum, correct)) / 32)
    assert metrics["eval_after_pass@2"] == pytest.approx(sum(pass_at_k(4, sum(c), 2) for c in correct) / 8)
    assert 0 < metrics["eval_after_mean@4"] < metrics["eval_after_pass@4"] <= 1  # the data exercise the metrics
    assert {
        "eval_after_maj@4",
        "eval_after_maj@4_ci_low",
        "eval_after_accuracy_se",
        "eval_after_sampled_truncated_frac",
        "eval_after_truncated_frac",
        "eval_after_mean_new_tokens",
        "eval_after_reward",
    } <= set(metrics)
    # a resumed run re-reads eval/before.jsonl: the same numbers
    assert summarise(rows, "after", EVAL.ks, answer_equivalence(tiny.rewards, rows), 0) == metrics


@pytest.mark.slow
def test_two_ranks_evaluate_each_row_once_agree_with_one_process_and_stop_together(tiny, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)]), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HERE / "two_rank_eval.py"),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = run_eval(tiny.model, tiny.tokenizer, tiny.dataset, tiny.rewards, EVAL, MAX_NEW, tmp_path / "one.jsonl", "two", 0)
    assert json.loads((tmp_path / "metrics-0.json").read_text()) == one
    assert json.loads((tmp_path / "metrics-1.json").read_text()) == {}  # rank 1 handed its rows over
    two, one = read_jsonl(tmp_path / "two.jsonl"), read_jsonl(tmp_path / "one.jsonl")
    assert [row.pop("rank") for row in two] == [0, 1] * (len(two) // 2) + [0] * (len(two) % 2)  # rank r: rows r, r + 2, ...
    assert [row.pop("rank") for row in one] == [0] * len(one)
    assert two == one  # each row once, samples alike
    # a reward failing on rank 1 only: both ranks stop (none waits for the other), rank 0 names rank 1's error
    assert (tmp_path / "error-1.txt").read_text().startswith("reward 'length_class' raised ValueError: no verdict on rank 1")
    assert (tmp_path / "error-0.txt").read_text().startswith("eval 'two' failed on rank 1: reward 'length_class' raised")
    assert not (tmp_path / "failed.jsonl").exists()


def test_split_train_evaluates_the_train_prompts_that_leave_the_evals_room_and_limit_chooses_rows(tiny, tmp_path):
    """The train prompts as fitted to training's completion budget were evaluated: with a larger
    eval.max_new_tokens, prompt and completion ran past the model's context, silently."""
    from rlvr.config import Config
    from rlvr.data.lengths import fit_to_context
    from rlvr.recipes.common import PolicySetup, eval_model, load_rewarded_prompts

    cfg = OmegaConf.structured(Config)
    cfg.eval = with_eval(split="train", limit=3, n=0, ks=[], max_new_tokens=MAX_NEW)
    train, evaluation = load_rewarded_prompts(cfg, tiny.rewards)
    assert evaluation["prompt"] == train["prompt"] and len(train) > 100
    context = len(tiny.tokenizer(train[0]["prompt"])["input_ids"]) + MAX_NEW  # room for the first prompt's tokens only
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=context))
    cfg.algorithm.max_completion_length = MAX_NEW - 4
    cfg.dataset.max_train_samples = 4
    train, evaluation = load_rewarded_prompts(cfg, tiny.rewards)
    train = train.add_item({**train[1], "prompt": train[1]["prompt"] + "1"})  # 1 token longer: fits training, not the eval
    train, evaluation, dropped = fit_to_context(train, train, model, tiny.tokenizer, cfg)
    assert len(train) == 5 and dropped == {"train_prompts_dropped_too_long": 0, "eval_prompts_dropped_too_long": 1}
    setup = PolicySetup(tiny.model, tiny.tokenizer, train, evaluation, tiny.rewards, {})
    metrics = eval_model(cfg, setup, tiny.model, tmp_path, "after")
    rows = read_jsonl(tmp_path / "eval" / "after.jsonl")
    assert [r["prompt"] for r in rows] == train["prompt"][:3] and "eval_after_accuracy" in metrics


def test_without_a_reward_that_judges_correctness_no_accuracy_is_reported():
    """A form reward (correct None) gives the reward and lengths, never an accuracy of 0 (the default
    sweep objective would read it as a score)."""
    rows = [
        {"completion": "a", "correct": None, "reward": 1.0, "new_tokens": 3, "truncated": False},
        {"completion": "b", "correct": None, "reward": 0.0, "new_tokens": 5, "truncated": True},
    ]
    assert summarise(rows, "after") == {"eval_after_reward": 0.5, "eval_after_mean_new_tokens": 4.0, "eval_after_truncated_frac": 0.5}


def test_accuracy_counts_a_completion_no_reward_judged_as_not_correct_wherever_it_stands():
    """Accuracy was left out where the first row had no verdict (a judge that judges only some completions)."""
    rows = [
        {"completion": "a", "correct": None, "reward": 0.0, "new_tokens": 3, "truncated": False},
        {"completion": "b", "correct": True, "reward": 1.0, "new_tokens": 5, "truncated": False},
    ]
    for order in (rows, rows[::-1]):
        assert summarise(order, "after")["eval_after_accuracy"] == 0.5


def test_eval_prompts_are_tokenized_as_training_tokenizes_them():
    """A tokenizer that adds a BOS (Llama's) got it on every plain-text prompt in training (TRL) and on
    none in the evals: 6 of 16 greedy answers of a probe's model changed with it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from rlvr.evaluation.engine import tokenized_prompts

    words = {"<s>": 0, "</s>": 1, "<pad>": 2, "[UNK]": 3, "3": 4, "+": 5, "5": 6, "=": 7}
    backend = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    plain = ["3 + 5 ="]
    assert tokenized_prompts(plain, tokenizer)["input_ids"] == tokenizer(text=plain)["input_ids"] == [[0, 4, 5, 6, 7]]  # TRL's call
    chat = [[{"role": "user", "content": "3 + 5 ="}]]
    as_trained = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert tokenized_prompts(chat, tokenizer)["input_ids"] == as_trained
