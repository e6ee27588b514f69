"""Fine-grained GRPO: equivalence with TRL's GRPO, span->token offsets on real text, advantages, the toy example."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import one_line_error, refused_in_process
from rlvr.errors import RewardError
from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
from rlvr.rewards.spans import answer_spans
from rlvr.trainers.fine_grained import (
    CleanSpans,
    SpanStats,
    batch_token_char_offsets,
    clean_spans,
    coverage,
    normalize_span_scores,
    token_advantages,
    token_char_offsets,
)

GSM8K = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "gsm8k_test_300.jsonl").open()]


def scalar_reward(completions, **kwargs):
    """A varied, deterministic reward of the completion text."""
    return [float(sum(map(ord, c)) % 5) for c in completions]


def whole_span_reward(completions, **kwargs):
    return [[(r, (0, len(c)), "all")] for c, r in zip(completions, scalar_reward(completions))]


def build_trainer(kind, model_dir, out_dir, loss_type, beta):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.rewards.base import WeightedReward
    from rlvr.rewards.spans import SpanReward
    from rlvr.config import FineGrainedConfig
    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    prompts = datasets.Dataset.from_list([{"prompt": f"{a}+{b}="} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]])
    args = GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=True,
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=8,
        loss_type=loss_type,
        beta=beta,
        report_to=[],
        seed=0,
    )
    if kind == "trl":
        trainer = GRPOTrainer(model=str(model_dir), reward_funcs=scalar_reward, args=args, train_dataset=prompts)
    else:
        rewards = [WeightedReward("all", SpanReward("all", whole_span_reward), 1.0)]
        trainer = FineGrainedGRPOTrainer(
            model=str(model_dir),
            rewards=rewards,
            args=args,
            train_dataset=prompts,
            fine_grained=FineGrainedConfig(),
            inverse_cdf_on_cpu=False,
        )  # TRL's draws
    trainer.current_gradient_accumulation_steps = 1
    return trainer, [{"prompt": row["prompt"]} for row in prompts for _ in range(4)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tiny_tokenizer()
    from omegaconf import OmegaConf

    from rlvr.config import TinyModelConfig

    build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("loss_type", "beta"), [("dapo", 0.0), ("grpo", 0.0), ("bnpo", 0.0), ("dr_grpo", 0.0), ("cispo", 0.0), ("sapo", 0.0), ("dapo", 0.04)]
)
def test_one_whole_span_equals_trl_grpo(model_dir, tmp_path, loss_type, beta):
    results = []
    for kind in ("trl", "fgrpo"):
        trainer, inputs = build_trainer(kind, model_dir, tmp_path / kind, loss_type, beta)
        torch.manual_seed(123)
        batch = trainer._generate_and_score_completions(inputs)
        loss = trainer._compute_loss(trainer.model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((batch, loss.item(), grads))
    (trl_batch, trl_loss, trl_grads), (fg_batch, fg_loss, fg_grads) = results
    assert torch.equal(trl_batch["completion_ids"], fg_batch["completion_ids"])
    assert fg_batch["advantages"].shape == trl_batch["completion_ids"].shape
    assert trl_batch["advantages"].abs().sum() > 0  # a batch with a learning signal
    assert fg_loss == pytest.approx(trl_loss, abs=1e-6)
    assert trl_grads.keys() == fg_grads.keys()
    for name in trl_grads:
        torch.testing.assert_close(fg_grads[name], trl_grads[name], atol=1e-6, rtol=0)


def strictly_clean(spans, length):
    """clean_spans' result, none of `spans` clipped or dropped (what strict would refuse)."""
    stats = SpanStats()
    clean = clean_spans(spans, length, stats)
    assert stats.malformed == 0, spans
    return clean


def check_span_tokens(tokenizer, ids, text, spans):
    starts, ends, _ = token_char_offsets(tokenizer, ids, text)
    clean = strictly_clean(spans, len(text))
    cover = coverage(starts, ends, clean.starts, clean.ends)
    for j in range(len(clean.scores)):
        s, e = clean.starts[j], clean.ends[j]
        tokens = np.nonzero(cover[j])[0]
        first, last = tokens[0], tokens[-1]
        assert list(tokens) == list(range(first, last + 1))  # contiguous
        assert text[s:e] in tokenizer.decode(ids[first : last + 1], skip_special_tokens=True)  # covers the span
        for t in tokens:  # no token wholly outside the span
            assert starts[t] < e and ends[t] > s or starts[t] == ends[t]


def test_offsets_on_gsm8k_solutions():
    tokenizer = build_tiny_tokenizer()
    rng = random.Random(0)
    for row in GSM8K:
        ids = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        spans = answer_spans([text], [row["answer"]])[0]
        for _ in range(3):
            a, b = sorted(rng.sample(range(len(text) + 1), 2))
            spans.append((1.0, (a, b), "random"))
        check_span_tokens(tokenizer, ids, text, spans)


class SlowTokenizer:
    """The tiny tokenizer seen as a tokenizer without offsets: exercises the decoding fallback."""

    is_fast = False

    def __init__(self, inner):
        self.inner = inner
        self.all_special_ids = inner.all_special_ids

    def decode(self, ids, **kwargs):
        return self.inner.decode(ids, **kwargs)

    def batch_decode(self, rows, **kwargs):
        return [self.decode(ids, **kwargs) for ids in rows]


def test_a_batch_of_exact_and_decoded_rows_maps_as_each_row_alone():
    """Rows that re-encode (GSM8K text) and rows that do not (random ids, decoded prefix by prefix),
    interleaved in one batch, get the offsets each gets on its own."""
    tokenizer, rng = build_tiny_tokenizer(), random.Random(0)
    rows = []
    for row in GSM8K[:6]:
        rows.append(tokenizer(row["answer"][:60], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        rows.append([rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 12))])
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    batch = batch_token_char_offsets(tokenizer, rows, texts)
    assert {exact for _, _, exact in batch} == {True, False}
    for ids, text, (starts, ends, exact) in zip(rows, texts, batch):
        alone = token_char_offsets(tokenizer, ids, text)
        assert (starts == alone[0]).all() and (ends == alone[1]).all() and exact == alone[2]


def test_offsets_are_exact_whatever_padding_the_tokenizer_was_last_called_with():
    tokenizer = build_tiny_tokenizer()
    rows = [tokenizer(row["answer"], add_special_tokens=False)["input_ids"] for row in GSM8K[:4]]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    tokenizer(["1", "a much longer text than that"], padding=True, truncation=True, max_length=4)
    assert all(exact for _, _, exact in batch_token_char_offsets(tokenizer, rows, texts))


def test_fallback_offsets_match_the_fast_ones_on_gsm8k():
    fast = build_tiny_tokenizer()
    slow = SlowTokenizer(fast)
    for row in GSM8K[:50]:
        ids = fast(row["answer"], add_special_tokens=False)["input_ids"] + [fast.eos_token_id]
        text = fast.decode(ids, skip_special_tokens=True)
        fast_starts, fast_ends, exact = token_char_offsets(fast, ids, text)
        slow_starts, slow_ends, slow_exact = token_char_offsets(slow, ids, text)
        assert exact and not slow_exact
        if text.isascii():
            assert (fast_starts == slow_starts).all() and (fast_ends == slow_ends).all()
        check_span_tokens(slow, ids, text, answer_spans([text], [row["answer"]])[0])


def test_a_group_is_named_by_its_text_so_1_and_the_string_1_are_one_group_with_one_metric_key():
    cleaned = [strictly_clean([(score, (0, 1), group)], 1) for score, group in ((1.0, 1), (3.0, "1"))]
    assert [s.groups for s in cleaned] == [["1"], ["1"]]
    centered = normalize_span_scores(cleaned, num_generations=2, normalization="centered", scope="prompt")
    assert [a[0] for a in centered] == [-1.0, 1.0]  # one group of two spans, not two groups of one (advantage 0)


def test_normalisations_and_scopes():
    spans = [CleanSpans(np.array([s]), np.array([0]), np.array([1]), ["g"]) for s in (1.0, 3.0, 10.0, 30.0)]
    centered = normalize_span_scores(spans, num_generations=2, normalization="centered", scope="prompt")
    assert [a[0] for a in centered] == [-1.0, 1.0, -10.0, 10.0]
    standard = normalize_span_scores(spans, 2, "standard", "prompt")
    std = np.std([1.0, 3.0], ddof=1)
    assert standard[0][0] == pytest.approx(-1.0 / (std + 1e-4))
    batch = normalize_span_scores(spans, 2, "centered", "batch")
    assert [a[0] for a in batch] == pytest.approx([1 - 11, 3 - 11, 10 - 11, 30 - 11])
    assert [a[0] for a in normalize_span_scores(spans, 2, "none", "prompt")] == [1.0, 3.0, 10.0, 30.0]


def test_groups_are_normalised_separately():
    spans = [
        CleanSpans(np.array([1.0, 100.0]), np.array([0, 0]), np.array([1, 1]), ["a", "b"]),
        CleanSpans(np.array([3.0, 300.0]), np.array([0, 0]), np.array([1, 1]), ["a", "b"]),
    ]
    adv = normalize_span_scores(spans, 2, "centered", "prompt")
    assert list(adv[0]) == [-1.0, -100.0] and list(adv[1]) == [1.0, 100.0]


@pytest.mark.parametrize("normalization", ["standard", "centered", "none"])
def test_a_reward_functions_weight_scales_its_advantages_under_every_normalisation(normalization):
    """Under `standard` a weight applied to the scores would cancel in (s - mean) / std: it applies after."""
    from rlvr.rewards.spans import SpanReward

    def spans(completions, **kwargs):
        return [[(float(len(c)), (0, len(c)), "g")] for c in completions]

    completions = ["a", "abc", "ab", "abcdef"]
    advantages = {}
    for weight in (1.0, 3.0):
        reward = SpanReward("spans", spans, weight)
        assert reward(completions=completions) == [weight * n for n in (1, 3, 2, 6)]  # the scalar TRL logs
        cleaned = [strictly_clean(row, len(c)) for row, c in zip(reward.last_spans, completions)]
        advantages[weight] = np.concatenate(normalize_span_scores(cleaned, 2, normalization, "prompt"))
    assert np.abs(advantages[1.0]).min() > 0
    np.testing.assert_allclose(advantages[3.0], 3 * advantages[1.0])


def test_a_reward_function_of_weight_0_leaves_the_others_advantages_as_they_are():
    """Its spans entered the group statistics and each token's mean: a second function of weight 0 moved
    the first's token advantages from 0.866 to 0.54 / 0.81."""
    first = [[(1.0, (0, 3), "accuracy")], [(-1.0, (0, 3), "accuracy")], [(1.0, (0, 3), "accuracy")]]
    second = [[(-1.0, (0, 3), "accuracy")], [(1.0, (0, 3), "accuracy")], [(5.0, (0, 2), "accuracy")]]

    def advantages(rows):
        cleaned = [strictly_clean(row, 3) for row in rows]
        return [list(a) for a in normalize_span_scores(cleaned, 3, "standard", "prompt")]

    from rlvr.rewards.spans import SpanReward

    assert str(SpanReward("off", lambda completions, **_: second, weight=0.0)(completions=["abc"] * 3)) == "[0.0, 0.0, 0.0]"  # not -0.0
    alone = advantages([[(*span, 1.0) for span in row] for row in first])
    switched_off = advantages([[(*a, 1.0), (*b, 0.0)] for [a], [b] in zip(first, second)])
    assert switched_off == alone and abs(alone[0][0]) > 0.5


def test_token_advantage_is_the_mean_of_covering_spans():
    tok_starts, tok_ends = np.array([0, 2, 4, 6]), np.array([2, 4, 6, 6])  # last: a zero-width EOS
    cover = coverage(tok_starts, tok_ends, np.array([0, 3]), np.array([4, 6]))
    adv, covered = token_advantages(cover, np.array([1.0, 3.0]))
    assert list(adv) == [1.0, 2.0, 3.0, 3.0] and covered.all()
    adv, covered = token_advantages(coverage(tok_starts, tok_ends, np.array([0]), np.array([2])), np.array([5.0]))
    assert list(adv) == [5.0, 0.0, 0.0, 0.0] and list(covered) == [True, False, False, False]


def test_malformed_spans_are_clipped_dropped_and_counted_or_rejected():
    stats = SpanStats()
    clean = clean_spans(
        [
            (1.0, (5, 2), "r"),
            (1.0, (3, 3), "e"),
            (1.0, (-4, 3), "c"),
            (1.0, (8, 99), "o"),
            (float("nan"), (0, 2), "n"),
            (1.0, (0, 10), "ok"),
        ],
        10,
        stats,
    )
    assert stats.malformed == 5
    assert list(zip(clean.starts, clean.ends, clean.groups)) == [(0, 3, "c"), (8, 10, "o"), (0, 10, "ok")]


def test_under_strict_a_malformed_span_is_refused_naming_the_reward_the_row_and_the_span():
    """With strict (algorithm.fine_grained.strict), training and every eval of an fgrpo model refuse
    what clean_spans would clip or drop, as the reward returns it; a reward of weight 0 (switched off
    in training) is not refused."""
    from rlvr.rewards.spans import SpanReward

    def spans(completions, **_):
        return [[(1.0, (0, len(c)), "ok")] if c != "bad" else [(1.0, (2, 9), "o")] for c in completions]

    assert SpanReward("s", spans, strict=True)(completions=["fine", "also fine"]) == [1.0, 1.0]
    refusal = r"span reward 's' returned a malformed span for a completion of 3 characters, \(1.0, \(2, 9\), 'o'\), for row 1.*strict=true"
    with pytest.raises(RewardError, match=refusal):
        SpanReward("s", spans, strict=True)(completions=["fine", "bad"])
    without = SpanReward("s", spans)
    assert without(completions=["fine", "bad"]) == [1.0, 1.0]
    assert without.last_outcomes[1].reason == "ok"  # clipped to (2, 3), as training keeps it; no accuracy span: judged on form
    assert SpanReward("s", spans, weight=0.0, strict=True)(completions=["fine", "bad"]) == [0.0, 0.0]


@pytest.mark.parametrize("strict", [True, False])
def test_strict_reaches_the_span_rewards_that_training_and_every_eval_call(strict):
    """policy_rewards builds the rewards of training and of every eval of an fgrpo model (in a run, in rlvr.eval)."""
    from test_config import compose_with

    from rlvr.recipes.common import policy_rewards

    cfg = compose_with("algorithm=fgrpo", "reward=fgrpo_spans", f"algorithm.fine_grained.strict={str(strict).lower()}")
    assert [reward.fn.strict for reward in policy_rewards(cfg)] == [strict]


@pytest.mark.slow
def test_the_toy_example_moves_positive_spans_up_and_negative_down(tmp_path):
    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fgrpo_toy.py"), str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "advantage" in result.stdout and "per-response loss" in result.stdout
    m = json.loads((tmp_path / "toy_metrics.json").read_text())
    assert m["toy_positive_logp_after"] > m["toy_positive_logp_before"]
    assert m["toy_negative_logp_after"] < m["toy_negative_logp_before"]
    spans = json.loads((tmp_path / "toy_spans.json").read_text())["spans"]
    assert {s["group"] for s in spans} == {"accuracy", "format", "reasoning", "completeness"}


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "algorithm.fine_grained.normalization=standart",
            "rlvr: error: algorithm.fine_grained.normalization='standart' must be one of standard, centered, none "
            "(did you mean 'standard'?)",
        ),
        ("algorithm.fine_grained.eps=abc", "rlvr: error: algorithm.fine_grained.eps=abc: Value 'abc' of type 'str' could not be converted"),
    ],
)
def test_the_toy_examples_bad_setting_is_one_line_and_exit_code_2(tmp_path, capsys, override, line):
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("fgrpo_toy", ROOT / "examples" / "fgrpo_toy.py")
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    assert toy.main([str(tmp_path / "out"), override]) == 2
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith(line)
    assert not (tmp_path / "out").exists()


def bpe_trainer(tmp_path, span_fn, completions: list[str], answers: list[str] | None = None, settings=None, cut: int = 0):
    """A fine-grained trainer on the qwen2.5_shape model (real BPE tokenizer) whose rollouts are
    `completions`, tokenized as a model emits them (canonical ids, then <|im_end|>); with `cut`, the
    first `cut` of them end without it (cut at the length limit) and TRL masks cut completions."""
    import datasets
    from omegaconf import OmegaConf
    from trl import GRPOConfig

    from rlvr.config import ModelConfig
    from rlvr.models.loading import load_policy
    from rlvr.rewards.base import WeightedReward
    from rlvr.rewards.spans import SpanReward
    from rlvr.config import FineGrainedConfig
    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    preset = OmegaConf.load(Path(__file__).parent.parent.parent / "conf" / "model" / "qwen2.5_shape.yaml")
    model, tokenizer = load_policy(OmegaConf.merge(OmegaConf.structured(ModelConfig), preset), seed=0)
    ends = [[tokenizer.eos_token_id] * (i >= cut) for i in range(len(completions))]
    completion_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + end for c, end in zip(completions, ends)]

    def rollout(prompts, trainer):
        return {
            "prompt_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
            "completion_ids": completion_ids,
            "logprobs": [[0.0] * len(c) for c in completion_ids],
        }

    n = len(completions)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=n,
        num_generations=n,
        max_completion_length=max(map(len, completion_ids)),
        report_to=[],
        seed=0,
        mask_truncated_completions=cut > 0,
    )
    answers = answers or [GSM8K[i]["answer"] for i in range(n)]
    rows = [{"prompt": GSM8K[i]["question"], "answer": answer} for i, answer in enumerate(answers)]
    trainer = FineGrainedGRPOTrainer(
        model=model,
        processing_class=tokenizer,
        args=args,
        rollout_func=rollout,
        rewards=[WeightedReward("spans", SpanReward("spans", span_fn), 1.0)],
        train_dataset=datasets.Dataset.from_list(rows),
        fine_grained=settings or FineGrainedConfig(),
    )
    batch = trainer._generate_and_score_completions(rows)
    return batch, trainer._metrics["train"], completion_ids, tokenizer


def test_gsm8k_shaped_completions_map_exactly_under_bpe(tmp_path):
    shaped = [GSM8K[i]["answer"].replace("#### ", "Final: " if i % 2 else "Final: 1") for i in range(8)]  # half wrong
    batch, metrics, ids, tokenizer = bpe_trainer(tmp_path, answer_spans, shaped)
    assert any(len(tokenizer.decode([t])) > 1 for row in ids for t in row)  # multi-character tokens
    assert metrics["fgrpo/spans_exact_frac"] == [1.0]
    assert batch["advantages"].abs().sum() > 0


def test_the_spans_of_masked_cut_completions_are_not_counted_as_inexact(tmp_path):
    """With mask_truncated_completions, a cut completion has no token left in the loss: its spans, on
    token boundaries, were counted as mapping inexactly (0.5 where every span was exact)."""
    shaped = [GSM8K[i]["answer"].replace("#### ", "Final: ") for i in range(4)]
    batch, metrics, ids, tokenizer = bpe_trainer(tmp_path, answer_spans, shaped, cut=2)
    assert batch["completion_mask"][:2].sum() == 0 and batch["completion_mask"][2:].sum() > 0
    assert metrics["fgrpo/spans_exact_frac"] == [1.0]


def test_spans_inside_multi_character_tokens_cover_those_tokens(tmp_path):
    """A span from the middle of one word to the middle of another covers both words' tokens whole,
    nothing outside them, and counts as not exact."""
    texts = ["Natalia sold clips to 48 of her friends", "Weng earns $12 an hour for babysitting yesterday"]
    spans = [
        (text.index(first) + 2, text.index(last) + 3) for text, first, last in zip(texts, ["sold", "earns"], ["friends", "babysitting"])
    ]

    def inside(completions, **kwargs):
        return [[(1.0 if i == 0 else -1.0, spans[texts.index(c)], "g")] for i, c in enumerate(completions)]

    batch, metrics, ids, tokenizer = bpe_trainer(tmp_path, inside, texts)
    assert metrics["fgrpo/spans_exact_frac"] == [0.0]
    for row, (_text, (start, end)) in enumerate(zip(texts, spans)):
        pieces = [tokenizer.decode([t]) for t in ids[row][:-1]]
        ends = np.cumsum([len(p) for p in pieces])
        starts = ends - [len(p) for p in pieces]
        inside_token = [k for k in range(len(pieces)) if starts[k] < start < ends[k] or starts[k] < end < ends[k]]
        assert len(inside_token) == 2 and all(len(pieces[k]) > 2 for k in inside_token)  # both ends split a token
        expected = [bool(starts[k] < end and ends[k] > start) for k in range(len(pieces))]
        covered = (batch["advantages"][row, : len(pieces)] != 0).tolist()
        assert covered == expected, (pieces, covered)


# open-instruct's fine-grained GRPO (fgrpo_fast.py), written out for the comparisons below: a score object
# (score, span, group) per reward group; per (prompt, group) advantage (s - mean) / (np.std(s) + 1e-8);
# a token's advantage is the mean of the objects whose mask holds it, and the stop token is in every mask.
def open_instruct_token_advantages(pieces: list[list[str]], objects: list[list[tuple]]) -> list[np.ndarray]:
    """`pieces`: each completion's tokens as text, the stop token last; one prompt's completions."""
    groups = {}
    for row in objects:
        for score, _, group in row:
            groups.setdefault(group, []).append(score)
    stats = {g: (np.mean(s), np.std(s) + 1e-8) for g, s in groups.items()}
    out = []
    for row_pieces, row in zip(pieces, objects):
        ends = np.cumsum([len(p) for p in row_pieces[:-1]])
        starts = ends - [len(p) for p in row_pieces[:-1]]
        total, count = np.zeros(len(row_pieces)), np.zeros(len(row_pieces))
        for score, (a, b), group in row:
            mean, std = stats[group]
            held = np.append((starts < b) & (ends > a), True)  # the stop token: always held
            total += held * (score - mean) / std
            count += held
        out.append(np.where(count > 0, total / np.maximum(count, 1), 0.0))
    return out


ISSUE_COMPLETIONS = ["3 * 4 = 12\nFinal: 12", "3 * 4 = 13\nFinal: 13", "So it is 12", "I do not know"]


def test_a_final_line_followed_by_a_blank_line_of_spaces_has_its_format_span():
    """A last line of spaces was taken for the last line: "Final: 7" lost its format score, as gsm8k_strict gives it."""
    [with_spaces], [without] = answer_spans(["so\nFinal: 7\n  "], ["7"]), answer_spans(["so\nFinal: 7"], ["7"])
    assert [(score, group) for score, _, group in with_spaces] == [(score, group) for score, _, group in without]
    assert ("format", 0.5) in [(group, score) for score, _, group in with_spaces]


@pytest.mark.parametrize("text", ["so\r\nFinal: 7\r\n", "so\rFinal: 7", "so\u2028Final: 7", "Final: 7\rso 8", "Final: 7\n\r  \r"])
def test_answer_spans_and_gsm8k_strict_read_the_same_last_line(text):
    """Lines ended at '\\n' only here and wherever str.splitlines ends them in gsm8k_strict: after a bare
    '\\r' the strict reward read "Final: 7" as the last line, the span reward the whole text (no format span)."""
    from rlvr.rewards.numeric import FinalLineReward

    [strict] = FinalLineReward().score([text], ["7"])
    [spans] = answer_spans([text], ["7"])
    has_format = ("format", 0.5) in [(group, score) for score, _, group in spans]
    assert has_format == (strict.reason == "correct"), (strict, spans)


def test_format_group_absent_case_scores_zero_over_the_whole_completion():
    spans = answer_spans(ISSUE_COMPLETIONS, ["#### 12"] * 4)
    by_group = [{g: (s, r) for s, r, g in row} for row in spans]
    assert [row["format"] for row in by_group] == [(0.5, (11, 20)), (0.5, (11, 20)), (0.0, (0, 11)), (0.0, (0, 13))]
    assert [row["accuracy"][0] for row in by_group] == [1.0, -1.0, 1.0, -1.0]
    assert all("reasoning" not in row for row in by_group)  # reasoning_score=0: no group that cannot train
    with_reasoning = answer_spans(ISSUE_COMPLETIONS, ["#### 12"] * 4, reasoning_score=0.2)
    assert [next((s, r) for s, r, g in row if g == "reasoning") for row in with_reasoning] == [
        (0.2, (0, 11)),
        (0.2, (0, 11)),
        (0.2, (0, 9)),
        (0.0, (0, 13)),
    ]


def test_token_advantages_match_open_instruct_up_to_the_documented_std_convention(tmp_path):
    """The issue's four completions (gold 12: right + format, wrong + format, right without format, no
    answer) through rlvr's trainer on the real Qwen tokenizer and through open-instruct's formula: the
    format group trains, the stop token gets the mean of all spans, and the only difference is rlvr's
    Bessel-corrected std (TRL's convention): a factor sqrt((n - 1) / n) for groups of n."""
    batch, metrics, ids, tokenizer = bpe_trainer(tmp_path, answer_spans, ISSUE_COMPLETIONS, ["#### 12"] * 4)
    pieces = [[tokenizer.decode([t]) for t in row] for row in ids]
    reference = open_instruct_token_advantages(pieces, answer_spans(ISSUE_COMPLETIONS, ["#### 12"] * 4))
    n = len(ISSUE_COMPLETIONS)
    for row, expected in enumerate(reference):
        got = batch["advantages"][row, : len(expected)].numpy()
        np.testing.assert_allclose(got, expected * np.sqrt((n - 1) / n), rtol=1e-3, atol=1e-3)  # eps: 1e-4 vs 1e-8
    assert metrics["fgrpo/format/adv_abs_mean"][0] > 0.5 and metrics["fgrpo/accuracy/adv_abs_mean"][0] > 0.5
    assert batch["advantages"][0, len(ids[0]) - 1] != 0  # the stop token


def test_stop_token_gets_the_mean_of_every_span(tmp_path):
    """The issue's examples (advantages = scores): one span over "Paris" gives the stop token 1.0 (it got 0
    when only spans reaching the last character covered it); spans of 1.0 and 0.1 give it 0.55."""
    from rlvr.config import FineGrainedConfig

    texts = ["Paris is the capital.", "So 3+4=7. Final: 7"]

    def fixed(completions, **kwargs):
        return [[(1.0, (0, 5), "a")] if c.startswith("Paris") else [(1.0, (0, 9), "a"), (0.1, (10, 18), "b")] for c in completions]

    batch, _, ids, _ = bpe_trainer(tmp_path, fixed, texts, settings=FineGrainedConfig(normalization="none"))
    assert batch["advantages"][0, len(ids[0]) - 1].item() == pytest.approx(1.0)
    assert batch["advantages"][1, len(ids[1]) - 1].item() == pytest.approx(0.55)


@pytest.mark.parametrize("n", [2, 3, 8])
def test_group_scale_is_trls_bessel_corrected_std(n):
    """rlvr normalises each group as TRL does (std with ddof=1, eps 1e-4); fgrpo_fast uses np.std (ddof=0)
    and 1e-8. The ratio, sqrt((n - 1) / n), depends on the group's size: 0.707 for 2, 0.816 for 3."""
    scores = np.arange(n, dtype=float) ** 1.5
    spans = [CleanSpans(np.array([s]), np.array([0]), np.array([1]), ["g"]) for s in scores]
    rlvr = np.concatenate(normalize_span_scores(spans, n, "standard", "prompt"))
    fgrpo_fast = (scores - scores.mean()) / (np.std(scores) + 1e-8)
    np.testing.assert_allclose(rlvr / fgrpo_fast, np.sqrt((n - 1) / n), rtol=1e-3)


def test_a_group_without_signal_is_warned_about_once(caplog):
    """After `silent_group_steps` steps of all-zero advantages in a row: one warning naming the group."""
    from types import SimpleNamespace

    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    trainer = SimpleNamespace(silent_steps={}, warned=set(), silent_group_steps=3, accelerator=SimpleNamespace(is_main_process=True))
    watch = FineGrainedGRPOTrainer._watch_signal.__get__(trainer)
    for has_signal in [False, False, True, False, False, False, False, False]:
        watch("format", has_signal)
        watch("accuracy", True)
    warnings = [r.getMessage() for r in caplog.records if "no learning signal" in r.getMessage()]
    assert len(warnings) == 1 and "'format'" in warnings[0]


def test_a_resumed_run_counts_the_silent_steps_its_logged_rows_hold(caplog):
    """A resumed run starts from its checkpoint's log history, not from 0: a group silent for 8 steps
    before the stop is warned about 2 steps after it (a row logged every 2 steps stands for both)."""
    from types import SimpleNamespace

    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer, silence_in

    def row(step, format_adv, accuracy_adv):
        return {
            "step": step,
            "fgrpo/covered_token_frac": 1.0,
            "fgrpo/format/adv_abs_mean": format_adv,
            "fgrpo/accuracy/adv_abs_mean": accuracy_adv,
        }

    history = [row(2, 0.3, 0.0), row(4, 0.0, 0.0), {"step": 4, "eval_fgrpo/format/adv_abs_mean": 0.5}, row(6, 0.0, 0.0)]
    history += [row(8, 0.0, 0.1), row(10, 0.0, 0.0)]
    assert silence_in(history) == ({"format": 8, "accuracy": 2}, 2)
    assert silence_in([]) == ({}, 0)
    silent, signalless = silence_in(history)
    trainer = SimpleNamespace(silent_steps=silent, signalless_steps=signalless, warned=set(), silent_group_steps=10)
    trainer.accelerator = SimpleNamespace(is_main_process=True)
    for _ in range(3):
        FineGrainedGRPOTrainer._watch_signal.__get__(trainer)("format", False)
    warnings = [r.getMessage() for r in caplog.records if "no learning signal" in r.getMessage()]
    assert len(warnings) == 1 and "'format' has had all-zero advantages for 10 steps" in warnings[0]


def test_stage_timing_times_the_span_advantages_as_their_own_stage(model_dir, tmp_path):
    from rlvr.trainers.stage_timing import instrument

    trainer, inputs = build_trainer("fgrpo", model_dir, tmp_path, "dapo", 0.0)
    timer = instrument(trainer)
    trainer._generate_and_score_completions(inputs)
    assert timer.totals["advantages"] > 0 and timer.totals["generation"] > 0
    assert timer.row()["stage/advantages_s"] > 0


def test_uncovered_drop_takes_tokens_out_of_the_loss_not_out_of_attention(tmp_path):
    """The completion mask is also the training forward's attention mask: clearing it there would score
    the kept tokens in a context they were not sampled in. The spans lie on token boundaries, and the
    stop token each completion ends with does not make them count as approximate."""
    from rlvr.config import FineGrainedConfig

    texts = ["So it is 12", "So it is 13"]

    def first_words(completions, **kwargs):
        return [[(1.0 if c.endswith("12") else -1.0, (0, 5), "g")] for c in completions]

    keep, _, _, _ = bpe_trainer(tmp_path / "keep", first_words, texts, settings=FineGrainedConfig(normalization="none"))
    drop, metrics, ids, _ = bpe_trainer(
        tmp_path / "drop", first_words, texts, settings=FineGrainedConfig(normalization="none", uncovered="drop")
    )
    assert torch.equal(drop["completion_mask"], keep["completion_mask"])
    in_loss = drop["completion_mask"] * drop["tool_mask"]
    assert torch.equal(in_loss.bool(), keep["advantages"] != 0)  # "So", " it" and the stop token
    assert in_loss.sum().item() == 2 * 3 < keep["completion_mask"].sum().item()
    assert drop["num_items_in_batch"].item() == in_loss.sum().item()
    assert metrics["fgrpo/spans_exact_frac"] == [1.0]


def test_the_docs_own_span_reward_example_gives_each_of_its_groups_a_signal():
    import re

    from conftest import ROOT

    docs = (ROOT / "docs" / "fine-grained.md").read_text()
    [source] = [block for block in re.findall(r"```python\n(.*?)```", docs, re.S) if "def shouting" in block]
    namespace: dict = {}
    exec(source, namespace)
    completions = ["STOP that", "please stop", "thanks, NO", "ok"]  # one prompt's group
    spans = namespace["shouting"](completions)
    cleaned = [strictly_clean(row, len(c)) for row, c in zip(spans, completions)]
    advantages = normalize_span_scores(cleaned, len(completions), "standard", "prompt")
    for group in ("tone", "politeness"):
        assert any(a != 0 for row, adv in zip(cleaned, advantages) for g, a in zip(row.groups, adv) if g == group), group


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (
            [[(1.0, (0, 2))], [(1.0, (0, 2))]],
            "span reward 'bad' returned a span that is not 3 items, (1.0, (0, 2)), for row 0 (prompt 'p0')",
        ),
        ([(1.0, (0, 2), "g"), (1.0, (0, 2), "g")], "span reward 'bad' returned not a list of spans, (1.0, (0, 2), 'g'), for row 0"),
        ([[(1.0, (0, 2), "g")], None], "span reward 'bad' returned not a list of spans, None, for row 1 (prompt 'p1')"),
        ([[("high", (0, 2), "g")], []], "span reward 'bad' returned a span whose score is not a number, ('high', (0, 2), 'g'), for row 0"),
        ([[], [(1.0, (0.5, 2), "g")]], "span reward 'bad' returned a span whose characters are not (start_char, end_char) integers"),
        ([[], [(1.0, (0, 2), ["g"])]], "span reward 'bad' returned a span whose group is not a name (hashable)"),
        ([[]], "span reward 'bad' returned 1 span lists for 2 completions"),
        (None, "span reward 'bad' returned None, not a list of 2 span lists"),
        (np.array([[[1.0, 0, 2]]] * 2), "span reward 'bad' returned array([[[1., 0., 2.]],"),  # was numpy's "truth value ... ambiguous"
    ],
)
def test_a_span_reward_returning_the_wrong_structure_is_named_with_its_row(returned, message):
    """One line naming the reward, the row and what it returned (not an unpacking error inside rlvr's own code)."""
    from rlvr.rewards.checks import CheckedReward
    from rlvr.rewards.spans import SpanReward

    reward = CheckedReward(SpanReward("bad", lambda completions, **_: returned), "bad")
    with pytest.raises(RewardError) as info:
        reward(prompts=["p0", "p1"], completions=["ab", "cd"])
    assert str(info.value).startswith(message)
    assert str(info.value).endswith(": a span reward returns, per completion, a list of spans (score, (start_char, end_char), group)")


def test_spans_kept_as_offsets_and_scores_the_trainer_checks():
    """Offsets outside the completion, a reversed span, a non-finite score, numpy numbers and whole floats pass
    the structure check: the trainer clips, drops and counts them (or refuses them with strict)."""
    from rlvr.rewards.spans import SpanReward

    spans = [[(np.float32(1.0), (np.int64(3), 1), "g"), (float("nan"), (0.0, 99), "h")]]
    reward = SpanReward("ok", lambda completions, **_: spans, weight=2.0)
    reward(prompts=["p"], completions=["abc"])
    assert reward.last_spans[0][0] == (1.0, (3, 1), "g", 2.0)
    assert reward.last_spans[0][1][1:] == ((0, 99), "h", 2.0) and np.isnan(reward.last_spans[0][1][0])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("correct=0.0", "reward.functions.answer_spans.correct=0.0 must be a finite number > 0 (an answer counts as correct when"),
        ("wrong=0.25", "reward.functions.answer_spans.wrong=0.25 must be a finite number <= 0 (an answer counts as correct when"),
        ("format_score=abc", "reward.functions.answer_spans.format_score='abc' must be a finite number"),
        ("reasoning_scor=0.2", "reward.functions.answer_spans.reasoning_scor: answer_spans takes no 'reasoning_scor' (did you mean"),
    ],
)
def test_answer_spans_scores_that_break_the_sign_rule_are_refused_at_start_up(tmp_path, setting, message):
    """Eval accuracy reads an answer as correct when its accuracy span scores above 0: correct=0 made every
    answer wrong, wrong=0.25 every one right; format_score=abc failed only when a completion had the format;
    a misspelt key added with + went to the function's **_ and was ignored."""
    refused = refused_in_process("algorithm=fgrpo", f"++reward.functions.answer_spans.{setting}", f"hydra.run.dir={tmp_path}")
    assert message in one_line_error(refused)


def test_a_span_rewards_outcome_names_its_accuracy_spans_text_and_verdict():
    """Rollout and eval rows showed no prediction and the reason "ok" for every fgrpo completion, and
    maj@k had nothing to vote on."""
    from rlvr.rewards.spans import SpanReward, answer_spans

    reward = SpanReward("answer_spans", answer_spans)
    reward(prompts=["9+4="] * 4, completions=["13", "so 12", "", "no idea"], answer=["13"] * 4)
    assert [(o.prediction, o.reason, o.correct) for o in reward.last_outcomes] == [
        ("13", "correct", True),
        ("12", "wrong", False),
        (None, "missing", False),  # no number at all: `missing` (and its score), as the scalar rewards say it
        (None, "missing", False),
    ]
    reward = SpanReward("form", lambda completions, **_: [[(1.0, (0, 1), "format")] for _ in completions])
    reward(prompts=["p"], completions=["x"])
    assert [(o.prediction, o.reason, o.correct) for o in reward.last_outcomes] == [(None, "ok", None)]  # judged on form only
    # judged on the spans training keeps: an accuracy span it drops (out of range, NaN) gives no verdict
    kept_only = [[(1.0, (20, 30), "accuracy")], [(float("nan"), (0, 2), "accuracy"), (-1.0, (0, 2), "accuracy")]]
    reward = SpanReward("dropped", lambda completions, **_: kept_only)
    reward(prompts=["p", "p"], completions=["I think 13", "no idea"])
    assert [(o.prediction, o.reason, o.correct) for o in reward.last_outcomes] == [(None, "error", False), ("no", "wrong", False)]


def test_the_reward_a_span_reward_gives_counts_only_the_spans_training_keeps():
    """A NaN score stopped the run ("returned nan ... must be a finite float"), and a reversed span's score
    counted in the logged and evaluated reward although training drops it."""
    from rlvr.rewards.checks import CheckedReward
    from rlvr.rewards.spans import SpanReward

    spans = [[(0.5, (0, 2), "g"), (float("nan"), (0, 3), "h"), (1.0, (3, 1), "g"), (0.25, (1, 99), "h")], []]
    reward = CheckedReward(SpanReward("spans", lambda completions, **_: spans, weight=2.0), "spans")
    assert reward(prompts=["p0", "p1"], completions=["abc", ""]) == [2.0 * (0.5 + 0.25), 0.0]  # (1, 99) is clipped to (1, 3)


def test_a_run_whose_every_advantage_is_0_is_warned_about_once(caplog):
    """Every span malformed and dropped: no reward group, so the per-group warning has nothing to watch; this one fires."""
    from types import SimpleNamespace

    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    trainer = SimpleNamespace(signalless_steps=0, warned=set(), silent_group_steps=3, accelerator=SimpleNamespace(is_main_process=True))
    watch = FineGrainedGRPOTrainer._watch_spans.__get__(trainer)
    for has_signal in [False, False, True, False, False, False, False, False]:
        watch(has_signal, 0 if has_signal else 64, kept=8 if has_signal else 0)
    [warning] = [r.getMessage() for r in caplog.records if "learns nothing" in r.getMessage()]
    assert warning.startswith("fgrpo: every advantage has been 0 for 3 steps in a row, so the run learns nothing: 64 spans of this step")


@pytest.mark.parametrize(
    ("kept", "why"),
    [(0, "the span rewards returned no spans this step"), (16, "every span scores the same in every completion of a prompt")],
)
def test_the_no_signal_warning_says_whether_any_span_came_back(caplog, kept, why):
    """A reward returning empty span lists was told that every span scores the same."""
    from types import SimpleNamespace

    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    trainer = SimpleNamespace(signalless_steps=0, warned=set(), silent_group_steps=2, accelerator=SimpleNamespace(is_main_process=True))
    for _ in range(2):
        FineGrainedGRPOTrainer._watch_spans.__get__(trainer)(False, 0, kept=kept)
    [warning] = [r.getMessage() for r in caplog.records if "learns nothing" in r.getMessage()]
    assert f"so the run learns nothing: {why}" in warning


def test_a_training_step_with_only_malformed_spans_counts_towards_the_warning(tmp_path, monkeypatch, caplog):
    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    def reversed_spans(completions, **kwargs):
        return [[(1.0, (len(c), 0), "g")] for c in completions]

    monkeypatch.setattr(FineGrainedGRPOTrainer, "silent_group_steps", 1)
    _, metrics, _, _ = bpe_trainer(tmp_path, reversed_spans, ["So it is 12", "So it is 13"])
    assert metrics["fgrpo/spans_malformed"] == [2.0] and metrics["fgrpo/covered_token_frac"] == [0.0]
    assert any("0 for 1 steps in a row, so the run learns nothing: 2 spans" in r.getMessage() for r in caplog.records)
