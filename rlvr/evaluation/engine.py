"""Evaluation: a greedy completion and `eval.n` sampled ones per prompt, scored with the run's rewards.

Rows are split across ranks (rank r takes rows r, r + world, ...), each rank generates its share
in batches of prompts of similar token length (less padding), a prompt's n samples in the same
batch where they fit in eval.batch_size; rank 0 gathers every row, writes the per-example JSONL
and returns the metrics.

Sampled completions are reproducible per row: sample j of eval row i is drawn from its own
stream seeded from (eval.seed, i, j), so it does not depend on which rows share its batch, on
the number of ranks, or on the training step that evaluates (the same noise at every eval: the
curves compare policies, not draws).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Callable, Sequence

from rlvr.hardware.distributed import is_main_process, process_count, rank
from rlvr.hardware.stops import phase
from rlvr.errors import RlvrError
from rlvr.rewards.base import mean_reward, verdicts, weighted_total
from rlvr.rewards.checks import reward_columns
from rlvr.tracking.outputs import prompt_id, write_jsonl


def prompt_texts(prompts, tokenizer) -> list[str]:
    """Prompts as the model reads them: chat messages through the tokenizer's template, text as it is."""
    if prompts and isinstance(prompts[0], list):
        return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return list(prompts)


def tokenized_prompts(prompts, tokenizer, **kwargs):
    """`prompts` tokenized as TRL tokenizes them for training: a chat template's rendering as it is (the
    template writes its own special tokens), text with the tokenizer's special tokens (the BOS a Llama
    tokenizer adds: without it, an eval read other inputs than training). `kwargs` go to the tokenizer."""
    chat = bool(prompts) and isinstance(prompts[0], list)
    return tokenizer(prompt_texts(prompts, tokenizer), add_special_tokens=not chat, **kwargs)


def sample_seed(seed: int, row: int, sample: int) -> int:
    """The generator seed of sample `sample` of eval row `row` (63 bits of a hash: unrelated streams)."""
    digest = hashlib.sha256(f"{seed}/{row}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def end_ids(model, tokenizer) -> list[int]:
    """The ids that end a completion: the model's generation config (may list several), else the tokenizer's EOS."""
    ids = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    return list(ids) if isinstance(ids, (list, tuple)) else [ids]


def generate_batch(
    model,
    tokenizer,
    prompts,
    max_new_tokens: int,
    samples: int = 1,
    seeds: Sequence[int] | None = None,
    sampling: dict | None = None,
    do_sample: bool = False,
):
    """Completions (text), new-token counts and truncation flags (no end token within
    `max_new_tokens`) for a batch of prompts (text or chat messages), `samples` per prompt, prompt-major.

    Greedy, unless `seeds` are given (one per completion: drawn by `row_seeded_sampler` with
    `sampling`'s temperature, top_p, top_k) or `do_sample` (transformers' sampling with the model's
    generation settings). A model with a reasoning vocabulary generates under its think-segment
    processor and its reasoning ids are decoded as the standard ids they copy (rlvr/models/vocab.py).
    """
    import torch
    from transformers import LogitsProcessorList

    from rlvr.trainers.sampling import FirstScoresChecked, row_seeded_sampler
    from rlvr.models.vocab import ReasoningVocab

    device = next(model.parameters()).device
    vocab = ReasoningVocab.of(model)
    processors = LogitsProcessorList([FirstScoresChecked(), *([vocab.processor()] if vocab else [])])
    if seeds is not None:
        processors.append(row_seeded_sampler(seeds, max_new_tokens, device=device, **sampling))
    stop = end_ids(model, tokenizer)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        encoded = tokenized_prompts(prompts, tokenizer, return_tensors="pt", padding=True).to(device)
        if samples > 1:  # what num_return_sequences does, which greedy generation refuses
            encoded = {k: v.repeat_interleave(samples, dim=0) for k, v in encoded.items()}
        with torch.inference_mode():
            # use_cache: training with activation checkpointing turns the model's default off.
            # synced_gpus=False: the model is whole in each process here (evals of a sharded one run inside
            # rlvr.hardware.sharding.generating_model); transformers' default under FSDP or ZeRO-3 steps every
            # process's calls together, token by token, and a rank with one batch more waited for ever.
            generated = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                use_cache=True,
                synced_gpus=False,
                logits_processor=processors,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop,
            )
    finally:
        tokenizer.padding_side = padding_side
    new_tokens = generated[:, encoded["input_ids"].shape[1] :]
    ended = torch.isin(new_tokens, torch.tensor(stop, device=new_tokens.device))
    truncated = ~ended.any(dim=1)
    # up to and with the first end token (generate pads after it); all of them if none came
    lengths = torch.where(truncated, new_tokens.shape[1], ended.int().argmax(dim=1) + 1).tolist()
    truncated = truncated.tolist()
    if vocab is not None:
        return vocab.decode(tokenizer, new_tokens.tolist()), lengths, truncated
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True), lengths, truncated


def score(rewards, prompts, completions, columns: dict) -> list[dict]:
    """Per completion: weighted reward, each reward, and the name of its judge (`verdicts`: the first
    reward that judged it) with that judge's correctness and prediction (all None where none judged it)."""
    per_func = {r.name: r.fn(prompts=prompts, completions=completions, **columns) for r in rewards}
    return [
        {
            "prediction": verdict[1].prediction if verdict else None,
            "reward": weighted_total(rewards, {name: values[i] for name, values in per_func.items()}),
            "rewards": {name: values[i] for name, values in per_func.items()},
            "correct": verdict[1].correct if verdict else None,
            "judge": verdict[0] if verdict else None,
        }
        for i, verdict in enumerate(verdicts(rewards, len(completions)))
    ]


def _each_times(values: list, times: int) -> list:
    """Each value `times` times in a row: a batch's columns beside its completions, prompt-major as generated."""
    return [value for value in values for _ in range(times)]


def by_length(dataset, rows: list[int], tokenizer) -> list[int]:
    """`rows` longest prompt first: neighbours in a batch need little padding, and a batch too large
    for memory fails at the start, not after most of the eval."""
    lengths = [len(ids) for ids in tokenized_prompts(dataset[rows]["prompt"], tokenizer)["input_ids"]] if rows else []
    return [row for _, row in sorted(zip(lengths, rows), key=lambda pair: (-pair[0], pair[1]))]


def batches(order: list[int], n: int, batch_size: int) -> list[tuple[list[int], int, int]]:
    """The generate calls of `n` completions per row of `order`, as (rows, first sample, samples per row):
    at most `batch_size` sequences each (a prompt's n samples count n), whole prompts while n fits;
    a prompt of more samples than that over several calls, its samples in order."""
    if n <= batch_size:
        per_call = batch_size // n
        return [(order[start : start + per_call], 0, n) for start in range(0, len(order), per_call)]
    return [([row], first, min(batch_size, n - first)) for row in order for first in range(0, n, batch_size)]


def evaluate_rows(model, tokenizer, dataset, rows: list[int], rewards, eval_cfg, max_new_tokens: int, seed: int, desc: str) -> list[dict]:
    """The eval rows `rows` of `dataset` (its row indices), each with its greedy completion and its
    `eval_cfg.n` samples, scored; in `rows`' order. `model`: a transformers model or a vLLM completer."""
    from tqdm.auto import tqdm

    # generate_batch's contract: a vLLM engine's own (rlvr.evaluation.vllm_engine.VllmCompleter), else transformers'
    complete = model.complete if hasattr(model, "complete") else functools.partial(generate_batch, model, tokenizer)
    order = by_length(dataset, rows, tokenizer)
    named = reward_columns(rewards)  # in each row (under the row's own fields): `rlvr.score` can score it again
    results = {
        row: {
            **{c: example[c] for c in named if c in example},
            "index": row,
            "rank": rank(),
            "prompt_id": prompt_id(example["prompt"]),
            "prompt": example["prompt"],
            "gold": example.get("answer"),
        }
        for row, example in zip(rows, (dataset[row] for row in rows))
    }
    passes = ([("greedy", batches(order, 1, eval_cfg.batch_size))] if eval_cfg.greedy else []) + (
        [("samples", batches(order, eval_cfg.n, eval_cfg.batch_size))] if eval_cfg.n > 0 else []
    )
    sampling = {"temperature": eval_cfg.temperature, "top_p": eval_cfg.top_p, "top_k": eval_cfg.top_k}
    for kind, planned in passes:
        for chunk, first, samples in tqdm(planned, desc=f"{desc} ({kind})", leave=False, disable=not is_main_process()):
            batch = dataset[chunk]
            seeds = [sample_seed(seed, row, j) for row in chunk for j in range(first, first + samples)] if kind == "samples" else None
            completions, lengths, truncated = complete(batch["prompt"], max_new_tokens, samples, seeds=seeds, sampling=sampling)
            columns = {k: _each_times(v, samples) for k, v in batch.items() if k != "prompt"}
            scored = score(rewards, _each_times(batch["prompt"], samples), completions, columns)
            for i, (completion, scores) in enumerate(zip(completions, scored, strict=True)):
                row = chunk[i // samples]
                one = {"completion": completion, **scores, "new_tokens": lengths[i], "truncated": truncated[i]}
                if kind == "greedy":
                    results[row] |= one
                else:
                    results[row].setdefault("samples", []).append(one)
    return [results[row] for row in rows]


def _reward_error(rewards) -> Exception | None:
    """A reward error kept back during multi-process training (rlvr/rewards/checks.py), if any."""
    errors = [e for r in rewards if (take := getattr(r.fn, "take_pending_error", None)) and (e := take()) is not None]
    return errors[0] if errors else None


def gather_rows(rows: list[dict], failure: Exception | None, label: str) -> list[dict]:
    """Every rank's rows on rank 0 (in row order; [] elsewhere). A failure on any rank is raised on
    every rank, so that none waits forever for the others."""
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size() if is_main_process() else None
    message = None if failure is None else f"eval '{label}' failed on rank {rank()}: {str(failure).splitlines()[0]}"
    dist.gather_object((rows, message), gathered, dst=0)
    first = [next((m for _, m in gathered or () if m is not None), None)]
    dist.broadcast_object_list(first, src=0)
    if failure is not None:
        raise failure
    if first[0] is not None:
        raise RlvrError(first[0])
    return sorted((row for part, _ in gathered for row in part), key=lambda row: row["index"]) if gathered else []


def run_eval(model, tokenizer, dataset, rewards, eval_cfg, max_new_tokens: int, out_path: Path, label: str, seed: int) -> dict[str, float]:
    """Evaluate `dataset` (its first `eval_cfg.limit` rows) on every rank, each its share; rank 0
    writes `out_path` (one row per example: greedy completion and n samples with predictions,
    rewards, correctness, new tokens, truncation) and returns the `eval_<label>_*` metrics; other ranks return {}."""
    world = process_count()
    total = len(dataset) if eval_cfg.limit is None else min(len(dataset), eval_cfg.limit)
    mine = list(range(rank(), total, world))
    # A rank with no row of its own generates row 0 and keeps nothing: under ZeRO-3 a rank's first forward
    # joins a collective of DeepSpeed's (its parameter trace), and one that never generated left the others waiting
    idle = not mine
    was_training = getattr(model, "training", False)  # a vLLM completer has no training mode
    if was_training:
        model.eval()
    rows, failure = [], None
    try:
        with phase(f"eval '{label}'"):
            rows = evaluate_rows(model, tokenizer, dataset, mine or [0], rewards, eval_cfg, max_new_tokens, seed, f"eval {label}")
        rows, failure = [] if idle else rows, _reward_error(rewards)
    except Exception as exc:  # noqa: BLE001  raised below, after the other ranks have heard of it
        if world == 1:
            raise
        failure = exc
    finally:
        if was_training:
            model.train()
    if world > 1:
        rows = gather_rows(rows, failure, label)
    elif failure is not None:
        raise failure
    if not is_main_process():
        return {}
    write_jsonl(out_path, rows)  # replaces out_path whole once complete
    return summarise(rows, label, eval_cfg.ks, answer_equivalence(rewards, rows), seed)


def _same_text(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def answer_equivalence(rewards, rows: list[dict]) -> Callable[[str, str], bool]:
    """When two predictions of `rows` are the same answer (maj@k's vote): the `same_answer` of the
    reward that judged them (numbers normalised, math-verify equivalence, ...), else equal stripped strings."""
    named = next((c["judge"] for row in rows for c in (row, *row.get("samples", ())) if c.get("judge")), None)
    judge = next((r for r in rewards if r.name == named), None)
    return getattr(judge.fn, "same_answer", None) or _same_text if judge else _same_text


def summarise(
    rows: list[dict], label: str, ks: Sequence[int] = (), same: Callable[[str, str], bool] | None = None, seed: int = 0
) -> dict[str, float]:
    """The `eval_<label>_*` metrics of eval rows (also of eval/<label>.jsonl re-read when a resumed
    run reports its first eval): greedy accuracy (with SE; where a reward judges correctness), reward,
    mean new tokens and truncated share; over the n samples, rlvr.evaluation.metrics' mean@n / pass@k / maj@k for each k <= n, mean new
    tokens and truncated share."""
    from rlvr.evaluation.metrics import mean_se, sample_metrics

    metrics = {}
    greedy = [r for r in rows if "completion" in r]
    if greedy:
        if any(r["correct"] is not None for r in greedy):  # a reward judged correctness (no verdict: not correct)
            metrics["accuracy"], metrics["accuracy_se"] = mean_se([float(bool(r["correct"])) for r in greedy])
        metrics["reward"] = mean_reward([r["reward"] for r in greedy])
        metrics["mean_new_tokens"] = sum(r["new_tokens"] for r in greedy) / len(greedy)
        metrics["truncated_frac"] = sum(r["truncated"] for r in greedy) / len(greedy)
    sampled = [r["samples"] for r in rows if r.get("samples")]
    if sampled:
        every = [s for samples in sampled for s in samples]
        metrics["sampled_mean_new_tokens"] = sum(s["new_tokens"] for s in every) / len(every)
        metrics["sampled_truncated_frac"] = sum(s["truncated"] for s in every) / len(every)
        if any(s["correct"] is not None for s in every):  # a reward judged correctness (no verdict: not correct)
            n = min(len(samples) for samples in sampled)
            metrics |= sample_metrics(
                [[bool(s["correct"]) for s in samples[:n]] for samples in sampled],
                [[s["prediction"] for s in samples[:n]] for samples in sampled],
                ks=[k for k in ks if k <= n],
                same=same or _same_text,
                seed=seed,
            )
    return {f"eval_{label}_{name}": value for name, value in metrics.items()}
