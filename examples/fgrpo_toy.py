"""Fine-grained GRPO on pre-defined rollouts, no generation: the open-instruct toy-training use case.

Pre-defined responses with hand-set spans in four reward groups go through rlvr's advantage code
and TRL's own loss (`_compute_loss`). It prints every span's group, score, advantage, characters,
token range and text, then each response's loss, then trains the built-in tiny model for a few
steps and shows the mean log-probability of positively scored spans rising and of negatively scored
spans falling. Offline, seconds:

    python examples/fgrpo_toy.py OUT_DIR
    python examples/fgrpo_toy.py OUT_DIR algorithm.fine_grained.normalization=centered

OUT_DIR receives toy_spans.json (every span's advantage and token range) and toy_metrics.json.
Any rlvr override applies (the config is rlvr's, composed with algorithm=fgrpo).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlvr.run import GROUPS, set_offline  # importing rlvr.run registers rlvr's schema and resolvers
from rlvr.config import FineGrainedConfig, check_ranges, conf_dir, exit_on_unknown_keys, hydra_error_line
from rlvr.errors import RlvrError
from rlvr.rewards.base import WeightedReward
from rlvr.rewards.spans import SpanReward
from rlvr.tracking.outputs import write_json

STEPS = 20
DEFAULTS = ["algorithm=fgrpo", "model.warmup_sft_steps=0", "algorithm.learning_rate=1e-3", "logging=disabled"]

# (prompt, [(response, [(score, covered substring, group), ...]), ...]); substrings become char spans.
TOY_ROLLOUTS = [
    (
        "What is the capital of France?",
        [
            (
                "The capital of France is Paris.",
                [
                    (1.0, "Paris", "accuracy"),
                    (0.5, "The capital of France is Paris.", "format"),
                    (0.5, "The capital of France is", "completeness"),
                ],
            ),
            (
                "The capital of France is Lyon.",
                [
                    (-1.0, "Lyon", "accuracy"),
                    (0.5, "The capital of France is Lyon.", "format"),
                    (0.5, "The capital of France is", "completeness"),
                ],
            ),
            ("Paris", [(1.0, "Paris", "accuracy"), (-0.5, "Paris", "format"), (-0.5, "Paris", "completeness")]),
        ],
    ),
    (
        "What is 2 + 3 * 4?",
        [
            (
                "3 * 4 = 12, then 2 + 12 = 14. Answer: 14",
                [(1.0, "Answer: 14", "accuracy"), (1.0, "3 * 4 = 12, then 2 + 12 = 14.", "reasoning"), (0.5, "Answer:", "format")],
            ),
            (
                "2 + 3 = 5, then 5 * 4 = 20. Answer: 20",
                [(-1.0, "Answer: 20", "accuracy"), (-1.0, "2 + 3 = 5, then 5 * 4 = 20.", "reasoning"), (0.5, "Answer:", "format")],
            ),
            ("14", [(1.0, "14", "accuracy"), (-0.5, "14", "format")]),
        ],
    ),
    (
        "What does photosynthesis produce?",
        [
            (
                "Photosynthesis turns light, water and CO2 into glucose and oxygen.",
                [
                    (1.0, "glucose and oxygen", "accuracy"),
                    (1.0, "Photosynthesis turns light, water and CO2", "reasoning"),
                    (0.5, "Photosynthesis turns light, water and CO2 into glucose and oxygen.", "completeness"),
                ],
            ),
            ("It produces carbon dioxide.", [(-1.0, "carbon dioxide", "accuracy"), (-0.5, "It produces carbon dioxide.", "completeness")]),
            ("Photosynthesis makes glucose.", [(1.0, "glucose", "accuracy"), (-0.5, "Photosynthesis makes glucose.", "completeness")]),
        ],
    ),
]


def toy_rows() -> list[tuple[str, str, list]]:
    """(prompt, response, spans as (score, (start_char, end_char), group)) for every toy response."""
    rows = []
    for prompt, responses in TOY_ROLLOUTS:
        for text, marks in responses:
            spans = [(score, (text.index(sub), text.index(sub) + len(sub)), group) for score, sub, group in marks]
            rows.append((prompt, text, spans))
    return rows


def toy(cfg, run_dir: Path, settings) -> dict[str, float]:
    """Print each span's advantage and token range, then train on the fixed rollouts and report
    how the mean log-probability of positive and negative spans moved."""
    import torch

    from rlvr.models.loading import load_policy
    from rlvr.trainers.fine_grained import clean_spans, coverage, normalize_span_scores, SpanStats, token_advantages, token_char_offsets

    model, tokenizer = load_policy(cfg.model, cfg.seed)
    group_size = len(TOY_ROLLOUTS[0][1])
    rows = toy_rows()
    stats = SpanStats()
    cleaned = [clean_spans(spans, len(text), stats) for _, text, spans in rows]
    span_adv = normalize_span_scores(cleaned, group_size, settings.normalization, settings.scope, settings.eps)

    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _, _ in rows]
    completion_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for _, t, _ in rows]
    width_p, width_c = max(map(len, prompt_ids)), max(map(len, completion_ids))
    pad = tokenizer.pad_token_id
    batch = {
        "prompt_ids": torch.tensor([[pad] * (width_p - len(p)) + p for p in prompt_ids]),
        "prompt_mask": torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) for p in prompt_ids]),
        "completion_ids": torch.tensor([c + [pad] * (width_c - len(c)) for c in completion_ids]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (width_c - len(c)) for c in completion_ids]),
    }
    advantages = torch.zeros(batch["completion_mask"].shape)
    span_tokens = []  # (row, score, token indices) for the log-prob report
    report = []
    for i, ((prompt, text, _), spans) in enumerate(zip(rows, cleaned)):
        starts, ends, _ = token_char_offsets(tokenizer, completion_ids[i], text)
        cover = coverage(starts, ends, spans.starts, spans.ends)
        token_adv, covered = token_advantages(cover, span_adv[i])
        advantages[i, : len(completion_ids[i])] = torch.from_numpy(token_adv)
        if settings.uncovered == "drop":
            batch["completion_mask"][i, : len(completion_ids[i])] *= torch.from_numpy(covered).long()
        print(f"\n[{prompt}] -> {text!r}")
        for j, group in enumerate(spans.groups):
            tokens = cover[j].nonzero()[0]
            span_tokens.append((i, spans.scores[j], tokens))
            covered_text = tokenizer.decode([completion_ids[i][t] for t in tokens])
            print(
                f"  {group:<12} score {spans.scores[j]:+.2f}  advantage {span_adv[i][j]:+.3f}  "
                f"chars {spans.starts[j]}-{spans.ends[j]}  tokens {tokens[0]}-{tokens[-1]}  {covered_text!r}"
            )
            report.append(
                {
                    "prompt": prompt,
                    "response": text,
                    "group": group,
                    "score": float(spans.scores[j]),
                    "advantage": float(span_adv[i][j]),
                    "chars": [int(spans.starts[j]), int(spans.ends[j])],
                    "tokens": [int(tokens[0]), int(tokens[-1])],
                    "text": covered_text,
                }
            )
    batch["advantages"] = advantages
    batch["num_items_in_batch"] = batch["completion_mask"].sum()

    trainer = toy_trainer(cfg, model, tokenizer, run_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.algorithm.learning_rate)

    def span_logps() -> tuple[float, float]:
        with torch.no_grad():
            logps = token_logps(trainer, model, batch)
        positive = [logps[i, t].mean().item() for i, score, t in span_tokens if score > 0]
        negative = [logps[i, t].mean().item() for i, score, t in span_tokens if score < 0]
        return sum(positive) / len(positive), sum(negative) / len(negative)

    print("\nper-response loss (TRL's loss on that response alone):")
    for i, (_prompt, text, _) in enumerate(rows):
        single = {k: v[i : i + 1] for k, v in batch.items() if k != "num_items_in_batch"}
        single["num_items_in_batch"] = single["completion_mask"].sum()
        with torch.no_grad():
            print(f"  {trainer._compute_loss(model, single).item():+.4f}  {text!r}")
    before = span_logps()
    model.train()
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = trainer._compute_loss(model, dict(batch))
        loss.backward()
        optimizer.step()
        if step == 0:
            print(f"\nloss at step 0: {loss.item():+.4f}")
    after = span_logps()
    print(f"mean log-prob of positive spans: {before[0]:.4f} -> {after[0]:.4f}")
    print(f"mean log-prob of negative spans: {before[1]:.4f} -> {after[1]:.4f}")
    write_json(run_dir / "toy_spans.json", {"spans": report})
    metrics = {
        "toy_positive_logp_before": before[0],
        "toy_positive_logp_after": after[0],
        "toy_negative_logp_before": before[1],
        "toy_negative_logp_after": after[1],
        "toy_final_loss": loss.item(),
        "toy_spans_malformed": float(stats.malformed),
    }
    write_json(run_dir / "toy_metrics.json", metrics)
    return metrics


def token_logps(trainer, model, batch):
    import torch

    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, mask, batch["completion_ids"].size(1))
    return logps


def toy_trainer(cfg, model, tokenizer, run_dir: Path):
    """A FineGrainedGRPOTrainer used only for its loss and log-prob code (no generation, no dataset)."""
    import datasets
    from trl import GRPOConfig

    from rlvr.hardware import device as hardware
    from rlvr.recipes.common import trl_config
    from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer

    args = trl_config(GRPOConfig, cfg, run_dir, [], hardware.trainer_arguments(cfg.hardware), reward_weights=[1.0])
    stub = WeightedReward("toy", SpanReward("toy", lambda completions, **_: [[] for _ in completions]), 1.0)
    trainer = FineGrainedGRPOTrainer(
        model=model,
        rewards=[stub],
        args=args,
        processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list([{"prompt": "x"}]),
        fine_grained=FineGrainedConfig(),
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which toy mode does not run
    return trainer


def main(argv: list[str]) -> int:
    """The toy run; a bad override or setting is one `rlvr: error:` line and exit code 2, as `rlvr.run` reports it."""
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 2
    import logging

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    exit_on_unknown_keys("rlvr", argv[1:], groups=GROUPS)
    for quiet in ("bitsandbytes.backends.cpu.ops", "kernels"):  # offline noise, as rlvr.run's logging config quiets it
        logging.getLogger(quiet).setLevel(logging.ERROR)
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=DEFAULTS + argv[1:])
        set_offline(cfg)  # the tiny model and these rollouts need no Hub: before check_ranges imports transformers
        check_ranges(cfg)  # every value checked, as `rlvr.run` does before anything loads
        settings = FineGrainedConfig(**OmegaConf.to_container(cfg.algorithm.fine_grained))
        run_dir = Path(argv[0])
        run_dir.mkdir(parents=True, exist_ok=True)
        toy(cfg, run_dir, settings)
    except HydraException as exc:
        line = hydra_error_line(exc) or str(exc).splitlines()[0]
        print(f"rlvr: error: {line}", file=sys.stderr)
        return 2
    except RlvrError as exc:
        print(f"rlvr: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
