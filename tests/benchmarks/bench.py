"""`make bench`: measured numbers, printed as a table and written to bench-results.json.

- cfg_job_seconds: wall time of `python -m rlvr.run --cfg job` (median of 5).
- grpo_step_ratio_vs_trl: median GRPO step wall time of rlvr / of a plain TRL script
  (tests/benchmarks/trl_plain_grpo.py), same tiny model, data and settings, each in a fresh
  subprocess with the same environment, steps 6.. of STEPS (the first 5 are warm-up); three
  alternating runs each, the median of their medians.
- verify_speedup_parallel_vs_serial: math_verify throughput on MATH-500 gold solutions, the
  worker pool (2 workers, hard time limit) over in-process serial verification.
- fgrpo_step_ratio_vs_grpo: median step of `algorithm=fgrpo` (built-in span rewards) over the
  GRPO step, both on the default config (SFT warm-up included, as `make run`), same measurement.
- span_to_token_per_s: span->token mappings per second (offsets + vectorised coverage) on
  GSM8K-length text.
- rm_scoring_speedup_batched: reward-model scoring throughput (pairs/s) of the tiny reward model
  on 256 built-in pairs, batches of 32 over one pair at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = int(os.environ.get("BENCH_STEPS", "40"))
WARMUP_STEPS = 5
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def median_step_seconds(metrics_path: Path) -> float:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    times = [r["step_seconds"] for r in rows if "step_seconds" in r and r["step"] > WARMUP_STEPS]
    if len(times) < 10:
        raise RuntimeError(f"only {len(times)} timed steps in {metrics_path}")
    return statistics.median(times)


def bench_cfg_job() -> dict:
    times = sorted(run(["-m", "rlvr.run", "--cfg", "job"]) for _ in range(5))
    return {"cfg_job_seconds": times[2]}


RLVR_BENCH_RUN = ["-m", "rlvr.run", "logging=disabled", "logging.plots=false", "logging.rollouts=true",
                  "eval.before=false", "eval.after=false", "model.warmup_sft_steps=0", "algorithm.save_steps=0"]


def alternating_step_medians(commands: dict[str, list[str]], repeats: int = 3) -> dict[str, float]:
    """Median over `repeats` runs of each command's median step time, the commands taking turns.

    Run-to-run spread on this 2-core VM is ~10-20%; alternating and repeating keeps drift from
    landing on one side. Each command gets `{run_dir}` replaced by a fresh directory.
    """
    medians: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name, command in commands.items():
                run_dir = Path(tmp) / f"{name}{repeat}"
                run([arg.replace("{run_dir}", str(run_dir)) for arg in command])
                medians[name].append(median_step_seconds(run_dir / "metrics.jsonl"))
    return {name: statistics.median(values) for name, values in medians.items()}


def bench_grpo_step() -> dict:
    steps = f"algorithm.max_steps={STEPS}"
    m = alternating_step_medians({
        "rlvr": [*RLVR_BENCH_RUN, steps, "hydra.run.dir={run_dir}"],
        "trl": [str(ROOT / "tests" / "benchmarks" / "trl_plain_grpo.py"), "{run_dir}", str(STEPS)],
    })
    return {"grpo_step_seconds_rlvr": m["rlvr"], "grpo_step_seconds_trl": m["trl"],
            "grpo_step_ratio_vs_trl": m["rlvr"] / m["trl"]}


def bench_fgrpo_step() -> dict:
    default = [arg for arg in RLVR_BENCH_RUN if not arg.startswith("model.warmup_sft_steps")]
    steps = f"algorithm.max_steps={STEPS}"
    m = alternating_step_medians({name: [*default, f"algorithm={name}", steps, "hydra.run.dir={run_dir}"]
                                  for name in ("grpo", "fgrpo")})
    return {"grpo_step_seconds_default": m["grpo"], "fgrpo_step_seconds_default": m["fgrpo"],
            "fgrpo_step_ratio_vs_grpo": m["fgrpo"] / m["grpo"]}


def bench_span_mapping() -> dict:
    from rlvr.data.loading import read_local
    from rlvr.models import build_tiny_tokenizer
    from rlvr.rewards.spans import answer_spans
    from rlvr.trainers.fine_grained import SpanStats, clean_spans, coverage, token_advantages, token_char_offsets

    tokenizer = build_tiny_tokenizer()
    rows = read_local(str(ROOT / "tests" / "data" / "gsm8k_test_300.jsonl"))
    texts = list(rows["answer"])
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    spans = answer_spans(texts, texts)
    started = time.perf_counter()
    mapped = 0
    for text, row_ids, row_spans in zip(texts, ids, spans):
        clean = clean_spans(row_spans, len(text), False, SpanStats(), "bench")
        starts, ends, _ = token_char_offsets(tokenizer, row_ids, text)
        token_advantages(coverage(starts, ends, clean.starts, clean.ends), clean.scores)
        mapped += len(clean.scores)
    return {"span_to_token_per_s": mapped / (time.perf_counter() - started)}


def bench_verify() -> dict:
    from rlvr.data import builtin_data_path
    from rlvr.rewards.math import MathVerifyReward

    rows = [json.loads(line) for line in open(builtin_data_path("math500/test.jsonl"), encoding="utf-8")]
    completions, golds = [r["solution"] for r in rows], [r["answer"] for r in rows]
    serial, parallel = MathVerifyReward(workers=0), MathVerifyReward(workers=2, timeout_s=5.0)
    parallel.score(completions[:4], golds[:4])  # start the pool outside the timing
    serial.score(completions[:4], golds[:4])  # import math_verify outside the timing
    started = time.perf_counter()
    serial_out = serial.score(completions, golds)
    serial_s = time.perf_counter() - started
    started = time.perf_counter()
    parallel_out = parallel.score(completions, golds)
    parallel_s = time.perf_counter() - started
    parallel.pool.close()
    assert [o.reward for o in serial_out] == [o.reward for o in parallel_out], "pool changed a verdict"
    return {"verify_per_s_serial": len(rows) / serial_s, "verify_per_s_parallel": len(rows) / parallel_s,
            "verify_speedup_parallel_vs_serial": serial_s / parallel_s}


def bench_rm_scoring() -> dict:
    from omegaconf import OmegaConf

    from rlvr.config import ModelConfig
    from rlvr.data.arithmetic import generate_preferences
    from rlvr.models import load_reward_model
    from rlvr.rewards.reward_model import RewardModelScorer, as_messages

    model, tokenizer = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)
    pairs = generate_preferences(num_train=256, num_eval=1, seed=0)["train"]
    conversations = [as_messages(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    rates = {}
    for name, batch_size in (("one_by_one", 1), ("batched", 32)):
        scorer = RewardModelScorer(model, tokenizer, batch_size=batch_size)
        scorer.score(conversations[:64])  # warm-up
        started = time.perf_counter()
        scorer.score(conversations)
        rates[name] = len(pairs) / (time.perf_counter() - started)
    return {"rm_pairs_per_s_one_by_one": rates["one_by_one"], "rm_pairs_per_s_batched": rates["batched"],
            "rm_scoring_speedup_batched": rates["batched"] / rates["one_by_one"]}


def main() -> None:
    results: dict[str, float] = {}
    for bench in (bench_cfg_job, bench_grpo_step, bench_fgrpo_step, bench_span_mapping, bench_verify, bench_rm_scoring):
        print(f"running {bench.__name__} ...", file=sys.stderr, flush=True)
        results |= bench()
    path = ROOT / "bench-results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(previous | results, indent=2) + "\n")
    width = max(map(len, results))
    print(f"{'measure'.ljust(width)}  value")
    for name, value in results.items():
        print(f"{name.ljust(width)}  {value:.4g}")
    print(f"(written to {path})")


if __name__ == "__main__":
    main()
