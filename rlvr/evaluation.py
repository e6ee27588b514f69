"""Greedy evaluation: generate once per eval prompt, score with the run's rewards, write per-example JSONL."""

from __future__ import annotations

import os
from pathlib import Path

from rlvr.distributed import phase
from rlvr.rewards.base import primary_correctness
from rlvr.tracking import JsonlWriter, prompt_id


def _prompt_texts(prompts, tokenizer) -> list[str]:
    if prompts and isinstance(prompts[0], list):
        return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return list(prompts)


def generate(model, tokenizer, prompts, max_new_tokens: int, do_sample: bool = False) -> tuple[list[str], list[int]]:
    """Completions (text) and their new-token counts for a batch of prompts (text or chat messages).

    A model with a reasoning vocabulary generates under its think-segment processor and its
    reasoning ids are decoded as the standard ids they copy (rlvr/vocab.py).
    """
    import torch
    from transformers import LogitsProcessorList

    from rlvr.vocab import ReasoningVocab

    device = next(model.parameters()).device
    vocab = ReasoningVocab.of(model)
    processors = LogitsProcessorList([vocab.processor()] if vocab else [])
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        texts = _prompt_texts(prompts, tokenizer)
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            generated = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                       logits_processor=processors, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id)
    finally:
        tokenizer.padding_side = padding_side
    new_tokens = generated[:, encoded["input_ids"].shape[1]:]
    lengths = (new_tokens != tokenizer.pad_token_id).sum(dim=1).tolist()
    if vocab is not None:
        return vocab.decode(tokenizer, new_tokens.tolist()), lengths
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True), lengths


def greedy_eval(model, tokenizer, dataset, rewards, max_new_tokens: int, batch_size: int, out_path: Path, label: str) -> dict:
    """Accuracy (first verifier's judgement), mean weighted reward and mean new tokens on `dataset`."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    partial = out_path.with_name(out_path.name + ".partial")  # replaces out_path whole once the eval is done
    partial.unlink(missing_ok=True)
    writer = JsonlWriter(partial)
    rows = []
    with phase(f"the eval {label} training"):
        try:
            for start in tqdm(range(0, len(dataset), batch_size), desc=f"eval ({label})", leave=False):
                batch = dataset[start:start + batch_size]
                completions, lengths = generate(model, tokenizer, batch["prompt"], max_new_tokens)
                columns = {k: v for k, v in batch.items() if k != "prompt"}
                per_func = {r.name: r.fn(prompts=batch["prompt"], completions=completions, **columns) for r in rewards}
                correct = primary_correctness(rewards)
                batch_rows = [{"prompt_id": prompt_id(batch["prompt"][i]), "prompt": batch["prompt"][i],
                               "completion": completion, "gold": batch["answer"][i],
                               "reward": sum(r.weight * (per_func[r.name][i] or 0.0) for r in rewards),
                               "rewards": {n: v[i] for n, v in per_func.items()},
                               "correct": correct[i] if correct else None, "new_tokens": lengths[i]}
                              for i, completion in enumerate(completions)]
                writer.write(batch_rows)
                rows += batch_rows
        finally:
            writer.close()
            model.train(was_training)
    os.replace(partial, out_path)
    return summarise(rows, label)


def summarise(rows: list[dict], label: str) -> dict:
    """eval_<label>_accuracy / _reward / _mean_new_tokens of eval rows (also re-read from
    eval/<label>.jsonl when a resumed run reports its first eval)."""
    n = max(len(rows), 1)
    return {f"eval_{label}_accuracy": sum(bool(r["correct"]) for r in rows) / n,
            f"eval_{label}_reward": sum(r["reward"] for r in rows) / n,
            f"eval_{label}_mean_new_tokens": sum(r["new_tokens"] for r in rows) / n}
