"""`make bench`: measured numbers, printed as a table and written to bench-results.json.

- cfg_job_seconds: wall time of `python -m rlvr.run --cfg job` (median of 5).
- grpo_step_ratio_vs_trl (tiny model) and grpo_step_ratio_vs_trl_mid (a ~13M-parameter model of
  the same code path, 64 completion tokens): median GRPO step wall time of rlvr / of a plain TRL
  script (tests/benchmarks/trl_plain_grpo.py), same model, data and settings, each in a fresh
  subprocess with the same environment and torch thread count (BENCH_THREADS, default 2), steps
  after the warm-up ones; alternating runs, the median of their medians. Both sides are cut into
  stages by the same instrument (rlvr/trainers/stage_timing.py): grpo_stage_<size>_<side>_<stage>_s, where
  `other` is the step time no stage covers.
- verify_speedup_parallel_vs_serial: math_verify throughput on MATH-500 gold solutions, the
  worker pool (2 workers, hard time limit) over in-process serial verification.
- fgrpo_step_ratio_vs_grpo: median step of `algorithm=fgrpo` (built-in span rewards) over the
  GRPO step, both on the default config (SFT warm-up included, as `make run`) with every completion
  generated to its full length (`min_new_tokens`, a generation kwarg: on both sides transformers then
  samples, not rlvr's CPU inverse-CDF sampler), so both steps do the same work whatever the two
  policies learn to write; same measurement, cut into stages (fgrpo's own work is its `advantages`
  stage). _default: the default config as it is, with each side's mean completion length.
- vocab_step_ratio_vs_grpo: median step of `experiment=vocab_reasoning` (64 reasoning tokens) over
  the same experiment with `model.reasoning_vocab_size=0`, same warm-up, same measurement; and,
  in-process (free of run-to-run noise), what the vocabulary adds per step of that config: the
  logits processor per generated token, and the re-decode plus usage metrics of 64 completions.
- real_vocab_step_ratio_vs_trl / real_vocab_peak_rss_ratio_vs_trl: the GRPO step comparison above
  on model=qwen2.5_shape (the real Qwen tokenizer and 151,936 vocabulary rows, width 64; the plain
  script builds the same model from the same preset), median step time and peak RSS of each fresh
  process (os.wait4's rusage of that child, taken by a small parent), rlvr over TRL.
- vocab_full_copy_step_ratio / vocab_full_copy_peak_rss_ratio: `experiment=vocab_reasoning` on
  qwen3_shape with model.reasoning_vocab_size=151646 (the whole vocabulary copied: 303,582 rows)
  over the same with 0; and vocab_processor_us_per_token_v303k, the think-segment processor alone
  per generated token (64 rows) at that width. vocab_full_copy_bare_model_ratio: the same model's
  own work (generate, completion log-probs, backward, AdamW; no rlvr, no TRL) at 303,582 over
  151,936 rows, in-process: what the doubled LM head costs by arithmetic at width 64;
  vocab_full_copy_ratio_over_bare = step ratio / that: what rlvr and TRL add on top.
- full_0.5b_*: rlvr against the plain TRL script at Qwen2.5-0.5B's full shape
  (model=qwen2.5_0.5b_full_shape, 494M parameters, random init; 2 prompts x 4 completions of 32
  tokens; one alternating pair of BENCH_FULL_STEPS steps, default 6, 2 untimed): step time, peak RSS,
  stages; full_0.5b_train_matmul_efficiency, forward + backward FLOP/s (matmul FLOPs by arithmetic)
  over what `torch.mm` reaches here on the step's shapes in fp32; full_0.5b_decode_bandwidth_efficiency,
  the fp32 weights' bytes per decode step x decode steps per second of generation (the mean completion
  length as steps: errs low) over a 1 GiB copy's bytes (read + write) per second; both measured in
  this process after the runs, at BENCH_THREADS.
- vllm_*: rlvr's GRPO step with algorithm.rollout=vllm over the same run with rollout=hf, both in
  .venv-vllm (`make vllm-venv`: the same transformers on both sides), at the mid shape and the 0.5B
  full shape (BENCH_VLLM_SIZES): vllm_grpo_step_ratio_vs_hf_<size>, the median steps;
  vllm_generation_speedup_vs_hf_<size>, the generation stage (TRL's `_generate`: sampling and, for
  vLLM, its weight sync) of transformers over vLLM's; vllm_startup_extra_seconds_<size>, the wall time
  outside the logged steps (imports, building the model and the engine), vLLM's minus transformers'.
- sharded_*: see bench_sharding below; sharded_0.5b_*: the same four modes at the 0.5B shape, 4
  completions of 16 tokens per process, BENCH_SHARDING_FULL_STEPS steps (default 4, 2 untimed);
  BENCH_SHARDING_SIZES chooses (default mid,full_0.5b).
- span_to_token_per_s: span->token mappings per second (offsets + vectorised coverage) on
  GSM8K-length text.
- code_reward_per_s: the code reward (bubblewrap sandbox, 2 workers) on the 164 canonical HumanEval
  solutions against their tests, completions per second; code_sandbox_overhead_ms: per program,
  the sandbox's median wall time over the same harness run as a bare subprocess (sandbox=none),
  one worker, a two-assert program, alternating calls.
- rm_scoring_speedup_batched: reward-model scoring throughput (pairs/s) of the tiny reward model
  on 256 built-in pairs, batches of 32 over one pair at a time.
- eval_completions_per_s (tiny model; _mid: the mid-size shape above) and eval_speedup_vs_naive:
  `rlvr.evaluation.engine.run_eval` with n=8 samples per prompt on 32 built-in prompts (32 new tokens,
  temperature 1), scoring and file included, over one `model.generate` call per prompt and sample
  with the same settings, scored alike (BENCH_EVAL_SIZES, BENCH_EVAL_PROMPTS, BENCH_EVAL_N).

BENCH_SMOKE=1: every bench at a smoke size (the same code paths and models; 2 GRPO steps of 8
completions of at most 8 tokens, a few rows or calls, one run each side, each run a fork of one
prewarmed interpreter), for tests/benchmarks/test_bench_smoke.py; its figures only show that each
bench runs and yields finite numbers, they measure nothing. Smoke results go to bench-results-smoke.json in the system's
temporary directory, never to bench-results.json; BENCH_RESULTS=PATH writes either elsewhere.
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
SMOKE = os.environ.get("BENCH_SMOKE") == "1"


def sized(full, smoke):
    """`full` for `make bench`, `smoke` under BENCH_SMOKE=1."""
    return smoke if SMOKE else full


RESULTS = Path(
    os.environ.get("BENCH_RESULTS") or sized(ROOT / "bench-results.json", Path(tempfile.gettempdir()) / "bench-results-smoke.json")
)
STEPS = sized(int(os.environ.get("BENCH_STEPS", "40")), 2)
WARMUP_STEPS = sized(5, 1)
MIN_TIMED_STEPS = sized(10, 1)  # fewer timed steps than this in a run: an error, not a median
THREADS = os.environ.get("BENCH_THREADS", "2")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS}
# The GRPO step comparison at two sizes: model shape (`tiny.*`) and GRPOConfig values that differ
# from the tiny default, steps per run (the first `warmup` untimed) and alternating repeats.
GRPO_SIZES = {
    "tiny": {"settings": {}, "steps": STEPS, "warmup": WARMUP_STEPS, "repeats": 3},
    "mid": {
        "settings": {
            "tiny.hidden_size": 384,
            "tiny.num_hidden_layers": 6,
            "tiny.num_attention_heads": 6,
            "tiny.num_key_value_heads": 2,
            "tiny.intermediate_size": 1536,
            "max_completion_length": 64,
            "per_device_train_batch_size": 16,
        },
        "steps": int(os.environ.get("BENCH_MID_STEPS", "14")),
        "warmup": 2,
        "repeats": 2,
    },
    # Qwen2.5-0.5B-Instruct's tokenizer and 151,936-row vocabulary (model=qwen2.5_shape) at width 64.
    "real_vocab": {
        "settings": {"model": "qwen2.5_shape", "per_device_train_batch_size": 32},
        "steps": int(os.environ.get("BENCH_REAL_VOCAB_STEPS", "14")),
        "warmup": 2,
        "repeats": 2,
    },
}
# BENCH_SMOKE=1: every GRPO run of the benches generates 8 completions of at most 8 tokens per step.
SMOKE_SETTINGS = {"per_device_train_batch_size": 8, "max_completion_length": 8}
if SMOKE:  # the same models, their steps that small, one run each side
    GRPO_SIZES = {
        name: {"settings": size["settings"] | SMOKE_SETTINGS, "steps": STEPS, "warmup": WARMUP_STEPS, "repeats": 1}
        for name, size in GRPO_SIZES.items()
    }


def run(args: list[str]) -> float:
    return run_measured(args)[0]


# Runs `sys.argv[2:]` and writes its peak RSS (KiB) to the file `sys.argv[1]`, exiting with its exit code.
# Linux carries a process's peak RSS over fork and exec into its child's rusage, and this process holds
# GBs after the in-process benches: a child of this small process starts from ~15 MB instead.
PEAK_RSS_REPORTER = (
    "import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(child.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status) & 255)"
)


def run_measured(args: list[str], python: str = sys.executable) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `python args...` in a fresh process: os.wait4 gives that one
    child's own rusage (RUSAGE_CHILDREN would be the maximum over every child so far), taken by a small
    parent (`PEAK_RSS_REPORTER`). Under BENCH_SMOKE=1 a run by this interpreter is a child of a prewarmed
    one instead (`smoke_server`)."""
    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        if SMOKE and python == sys.executable and smoke_server().serves(ENV):
            done = smoke_server().run(args, ENV, Path(output), timeout=None)
            returncode, peak_rss_kb, printed = done.returncode, done.peak_rss_kb, done.stdout + done.stderr
        else:
            peak = Path(output) / "peak_rss_kb"
            with open(Path(output) / "output", "w+b") as file:
                command = [sys.executable, "-c", PEAK_RSS_REPORTER, str(peak), python, *args]
                returncode = subprocess.run(command, cwd=ROOT, env=ENV, stdout=file, stderr=subprocess.STDOUT).returncode
                file.seek(0)
                printed = file.read().decode(errors="replace")
            peak_rss_kb = int(peak.read_text()) if peak.exists() else 0  # KiB on Linux
        seconds = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(f"`python {' '.join(args)}` exited with {returncode}; its output ends:\n{printed[-3000:]}")
    return seconds, peak_rss_kb / 1024


_smoke_server = None


def smoke_server():
    """At smoke size, the runs' time goes to importing torch, transformers and TRL: one interpreter
    (tests/prewarmed.py) imports them once for all of this process's runs, each a fork of it."""
    global _smoke_server
    if _smoke_server is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from prewarmed import Prewarmed

        _smoke_server = Prewarmed(ENV)
    return _smoke_server


PEAK_RSS = "peak_rss_mb"
MEAN_LENGTH = "mean_completion_tokens"
TOKENS = "tokens_per_step"
GPU_PEAK = "gpu_peak_memory_mb"
OUTSIDE_STEPS = "outside_steps_s"  # the process's wall time minus every logged step's
NOT_STAGES = ("step", PEAK_RSS, MEAN_LENGTH, TOKENS, GPU_PEAK, OUTSIDE_STEPS)


def median_step_seconds(metrics_path: Path, warmup: int = WARMUP_STEPS, min_timed: int = MIN_TIMED_STEPS) -> dict[str, float]:
    """Median `step_seconds` ("step") and, where logged, of each `stage/<name>_s`, of the rest ("other"), of
    the completions' mean length in tokens (`MEAN_LENGTH`) and of the prompt + completion tokens a step
    trained on (`TOKENS`, from TRL's running `num_tokens`), over the steps after `warmup`; and on a GPU the
    process's peak allocated GPU memory (`GPU_PEAK`, MB)."""
    every = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    every = [r for r in every if "step_seconds" in r]
    rows = [r for r in every if r["step"] > warmup]
    if len(rows) < min_timed:
        raise RuntimeError(f"only {len(rows)} timed steps in {metrics_path}")
    stages = [k for k in rows[0] if k.startswith("stage/")]
    medians = {"step": statistics.median(r["step_seconds"] for r in rows)}
    medians |= {k[len("stage/") : -len("_s")]: statistics.median(r[k] for r in rows) for k in stages}
    if stages:
        medians["other"] = statistics.median(r["step_seconds"] - sum(r[k] for k in stages) for r in rows)
    if "completions/mean_length" in rows[0]:
        medians[MEAN_LENGTH] = statistics.median(r["completions/mean_length"] for r in rows)
    if GPU_PEAK in rows[0]:
        medians[GPU_PEAK] = max(r[GPU_PEAK] for r in rows)
    if "num_tokens" in rows[0]:
        medians[TOKENS] = statistics.median(b["num_tokens"] - a["num_tokens"] for a, b in zip(every, every[1:]) if b["step"] > warmup)
    return medians


def bench_cfg_job() -> dict:
    return {"cfg_job_seconds": statistics.median(run(["-m", "rlvr.run", "--cfg", "job"]) for _ in range(sized(5, 1)))}


RLVR_BENCH_RUN = [
    "-m",
    "rlvr.run",
    "logging=disabled",
    "logging.plots=false",
    "logging.rollouts=true",
    "eval.before=false",
    "eval.after=false",
    "model.warmup_sft_steps=0",
    "algorithm.save_steps=0",
]
# The same with the model preset's SFT warm-up, as a user's run has it (step times are taken after it).
RLVR_BENCH_RUN_WARMED_UP = [arg for arg in RLVR_BENCH_RUN if not arg.startswith("model.warmup_sft_steps")]
if SMOKE:
    RLVR_BENCH_RUN_WARMED_UP += ["model.warmup_sft_steps=2", *(f"algorithm.{k}={v}" for k, v in SMOKE_SETTINGS.items())]


def alternating_step_medians(
    commands: dict[str, list[str]],
    repeats: int = 3,
    warmup: int = WARMUP_STEPS,
    min_timed: int = MIN_TIMED_STEPS,
    python: str = sys.executable,
) -> dict[str, dict[str, float]]:
    """Per command, the median over `repeats` runs (one under BENCH_SMOKE=1) of each median from
    `median_step_seconds`, of the process's peak RSS (`PEAK_RSS`, MB) and of its wall time outside the
    logged steps (`OUTSIDE_STEPS`), the commands taking turns, each run by `python`.

    Run-to-run spread on this 2-core VM is ~10-20%; alternating and repeating keeps drift from
    landing on one side. Each command gets `{run_dir}` replaced by a fresh directory.
    """
    medians: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(sized(repeats, 1)):
            for name, command in commands.items():
                run_dir = Path(tmp) / f"{name}{repeat}"
                wall, peak_rss_mb = run_measured([arg.replace("{run_dir}", str(run_dir)) for arg in command], python)
                steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
                outside = wall - sum(row["step_seconds"] for row in steps if "step_seconds" in row)
                medians[name].append(
                    median_step_seconds(run_dir / "metrics.jsonl", warmup, min_timed) | {PEAK_RSS: peak_rss_mb, OUTSIDE_STEPS: outside}
                )
    return {name: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for name, runs in medians.items()}


def rlvr_overrides(settings: dict) -> list[str]:
    """A GRPO_SIZES entry's settings as rlvr overrides: `model` is the preset, `tiny.*` its shape, the rest GRPOConfig's."""
    return [
        f"{k}={v}" if k == "model" else f"model.{k}={v}" if k.startswith("tiny.") else f"algorithm.{k}={v}" for k, v in settings.items()
    ]


def grpo_step_commands(size: dict) -> dict[str, list[str]]:
    """rlvr's run and the plain TRL script with the same model shape and GRPOConfig values."""
    return {
        "rlvr": [
            *RLVR_BENCH_RUN,
            "logging.stage_timing=true",
            f"algorithm.max_steps={size['steps']}",
            *rlvr_overrides(size["settings"]),
            "hydra.run.dir={run_dir}",
        ],
        "trl": [
            str(ROOT / "tests" / "benchmarks" / "trl_plain_grpo.py"),
            "{run_dir}",
            str(size["steps"]),
            *(f"{k}={v}" for k, v in size["settings"].items()),
        ],
    }


def bench_grpo_step(sizes: str = os.environ.get("BENCH_GRPO_SIZES", sized("tiny,mid", "tiny"))) -> dict:
    """rlvr's GRPO step against TRL's plain script at each of `sizes` (at smoke size `tiny` only: the sizes
    share every line but the model's arguments)."""
    results = {}
    for name in sizes.split(","):
        size = GRPO_SIZES[name]
        m = alternating_step_medians(grpo_step_commands(size), size["repeats"], size["warmup"])
        suffix = "" if name == "tiny" else f"_{name}"
        results |= {
            f"grpo_step_seconds_rlvr{suffix}": m["rlvr"]["step"],
            f"grpo_step_seconds_trl{suffix}": m["trl"]["step"],
            f"grpo_step_ratio_vs_trl{suffix}": m["rlvr"]["step"] / m["trl"]["step"],
        }
        results |= stage_seconds(f"grpo_stage_{name}", m)
    return results


def stage_seconds(prefix: str, medians: dict[str, dict[str, float]]) -> dict[str, float]:
    """`<prefix>_<side>_<stage>_s` for each side's stage medians."""
    return {
        f"{prefix}_{side}_{stage}_s": seconds
        for side, stages in medians.items()
        for stage, seconds in stages.items()
        if stage not in NOT_STAGES
    }


def rlvr_against_trl(prefix: str, medians: dict[str, dict[str, float]]) -> dict[str, float]:
    """`<prefix>_step_seconds_<side>`, `<prefix>_peak_rss_mb_<side>`, their rlvr / TRL ratios and each side's
    stages (`<prefix>_stage_<side>_<stage>_s`) from `alternating_step_medians` of `grpo_step_commands`."""
    results = {
        f"{prefix}_{key}_{side}": medians[side][stat]
        for side in ("rlvr", "trl")
        for key, stat in (("step_seconds", "step"), ("peak_rss_mb", PEAK_RSS))
    }
    results |= {
        f"{prefix}_step_ratio_vs_trl": medians["rlvr"]["step"] / medians["trl"]["step"],
        f"{prefix}_peak_rss_ratio_vs_trl": medians["rlvr"][PEAK_RSS] / medians["trl"][PEAK_RSS],
    }
    return results | stage_seconds(f"{prefix}_stage", medians)


def bench_real_vocab_step() -> dict:
    """rlvr against the plain TRL script at the real Qwen vocabulary: step time and peak RSS."""
    size = GRPO_SIZES["real_vocab"]
    return rlvr_against_trl("real_vocab", alternating_step_medians(grpo_step_commands(size), size["repeats"], size["warmup"]))


# Qwen2.5-0.5B's exact shape (494M parameters, random init), 2 prompts x 4 completions of 32 tokens.
FULL_SIZE = {
    "settings": {"model": "qwen2.5_0.5b_full_shape", "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 32},
    "steps": int(os.environ.get("BENCH_FULL_STEPS", "6")),
    "warmup": 2,
    "repeats": 1,
}
# BENCH_SMOKE=1: a full-size preset at width 64 and one layer (its real tokenizer and vocabulary kept).
SMOKE_SHAPE = {
    "tiny.hidden_size": 64,
    "tiny.num_hidden_layers": 1,
    "tiny.num_attention_heads": 2,  # head_dim 32: the smallest vLLM's CPU attention takes
    "tiny.num_key_value_heads": 2,
    "tiny.intermediate_size": 128,
}
if SMOKE:  # the same preset and code path, 4 completions of 4 tokens
    FULL_SIZE = {
        "settings": FULL_SIZE["settings"]
        | SMOKE_SHAPE
        | {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 4},
        "steps": STEPS,
        "warmup": WARMUP_STEPS,
        "repeats": 1,
    }


def bench_full_05b() -> dict:
    """rlvr against the plain TRL script at Qwen2.5-0.5B's full shape: step time, peak RSS, stages; and how far
    training and decoding are from what this machine's matmuls and memory copies reach (measured after the
    runs, in this process, with the runs' thread count)."""
    import torch

    size = FULL_SIZE
    m = alternating_step_medians(grpo_step_commands(size), size["repeats"], size["warmup"], min_timed=size["steps"] - size["warmup"])
    torch.set_num_threads(int(THREADS))
    config = full_size_config(size["settings"])
    parameters = parameter_total(config)
    rlvr = m["rlvr"]
    completion_tokens = rlvr[MEAN_LENGTH] * size["settings"]["per_device_train_batch_size"]
    flops = training_flops(config, parameters, rlvr[TOKENS], completion_tokens)
    mm = matmul_flops_per_s(config, int(rlvr[TOKENS]))
    copy = copy_bytes_per_s()
    train_flops_per_s = flops / (rlvr["forward"] + rlvr["backward"])
    decode_bytes_per_s = 4 * parameters * rlvr[MEAN_LENGTH] / rlvr["generation"]
    return rlvr_against_trl("full_0.5b", m) | {
        "full_0.5b_train_gflops_per_s": train_flops_per_s / 1e9,
        "machine_fp32_mm_gflops_per_s": mm / 1e9,
        "full_0.5b_train_matmul_efficiency": train_flops_per_s / mm,
        "full_0.5b_decode_gb_per_s": decode_bytes_per_s / 1e9,
        "machine_copy_gb_per_s": copy / 1e9,
        "full_0.5b_decode_bandwidth_efficiency": decode_bytes_per_s / copy,
    }


VLLM_PYTHON = str(ROOT / ".venv-vllm" / "bin" / "python")
VLLM_SIZES = {"mid": GRPO_SIZES["mid"], "full_0.5b": FULL_SIZE}


def bench_vllm(sizes: str = os.environ.get("BENCH_VLLM_SIZES", sized("mid,full_0.5b", "mid"))) -> dict:
    """rlvr's GRPO step sampling with vLLM against sampling with transformers, both in .venv-vllm (at smoke
    size `mid` only: the sizes share every line but the model's arguments)."""
    if not Path(VLLM_PYTHON).exists():
        raise RuntimeError("bench_vllm needs .venv-vllm: make vllm-venv")
    results = {}
    for name in sizes.split(","):
        size = VLLM_SIZES[name]
        hf = grpo_step_commands(size)["rlvr"]
        commands = {"hf": hf, "vllm": [*hf, "algorithm.rollout=vllm"]}
        m = alternating_step_medians(
            commands, size["repeats"], size["warmup"], min_timed=size["steps"] - size["warmup"], python=VLLM_PYTHON
        )
        results |= {
            f"vllm_grpo_step_ratio_vs_hf_{name}": m["vllm"]["step"] / m["hf"]["step"],
            f"vllm_generation_speedup_vs_hf_{name}": m["hf"]["generation"] / m["vllm"]["generation"],
            f"vllm_startup_extra_seconds_{name}": m["vllm"][OUTSIDE_STEPS] - m["hf"][OUTSIDE_STEPS],
        }
        results |= stage_seconds(f"vllm_stage_{name}", m)
    return results


def full_size_config(settings: dict):
    """The transformers config of the full-size bench's model (as its runs build it)."""
    from rlvr.eval import compose
    from rlvr.models.loading import build_tokenizer, tiny_config

    shape = compose([arg for arg in rlvr_overrides(settings) if arg.startswith("model")], None).model.tiny
    return tiny_config(shape, build_tokenizer(shape))


def parameter_total(config) -> int:
    from transformers import AutoModelForCausalLM

    from rlvr.models.loading import parameter_count

    return parameter_count(lambda c: AutoModelForCausalLM.from_config(c), config)


def training_flops(config, parameters: int, tokens: float, completion_tokens: float) -> float:
    """Matmul FLOPs of one training forward + backward (3x the forward) of the model of `config` (with
    `parameters` parameters) over `tokens` prompt + completion tokens: 2 per weight per token through the
    layers, and 2 * hidden * vocab per completion token through the LM head (TRL keeps only the
    completion's logits). Attention scores and padding are left out (under 1% at these lengths), so the
    efficiency derived from it errs low."""
    layers = parameters - config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    return 3 * (2 * layers * tokens + 2 * config.hidden_size * config.vocab_size * completion_tokens)


def matmul_flops_per_s(config, tokens: int, repeats: int = sized(10, 2)) -> float:
    """FLOP/s `torch.mm` reaches here in float32 on a step's shapes: the projections and MLP of `tokens`
    rows, their weight gradients, and an LM-head tile; total FLOPs over total median time."""
    import torch

    d, inner, kv = config.hidden_size, config.intermediate_size, config.num_key_value_heads * config.head_dim
    shapes = [
        (tokens, d, inner),
        (tokens, inner, d),
        (tokens, d, d),
        (tokens, d, kv),
        (d, tokens, inner),
        (inner, tokens, d),
        (tokens, d, 8192),
    ]
    flops = seconds = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - started)
        flops, seconds = flops + 2 * m * k * n, seconds + statistics.median(times[1:])
    return flops / seconds


def copy_bytes_per_s(gib: float = sized(1.0, 0.0625), repeats: int = sized(5, 2)) -> float:
    """Bytes a plain large copy moves per second here (read + write)."""
    import torch

    src = torch.ones(int(gib * 2**30) // 4)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - started)
    return 2 * src.nbytes / statistics.median(times[1:])


FULL_COPY = 151646  # model.reasoning_vocab_size of the vocabulary-expansion study: the whole Qwen vocabulary


def bench_vocab_full_copy() -> dict:
    """A copy of the whole Qwen3 vocabulary (303,582 rows) against none, on qwen3_shape, rlvr both sides;
    and the think-segment processor alone at that width."""
    size = GRPO_SIZES["real_vocab"]
    common = [
        *RLVR_BENCH_RUN,
        "experiment=vocab_reasoning",
        "model=qwen3_shape",
        'dataset.prompt_template="{question}<think>"',
        "algorithm.max_completion_length=6",
        f"algorithm.per_device_train_batch_size={sized(32, 8)}",
        f"algorithm.max_steps={size['steps']}",
        "hydra.run.dir={run_dir}",
    ]
    m = alternating_step_medians(
        {"none": [*common, "model.reasoning_vocab_size=0"], "full": [*common, f"model.reasoning_vocab_size={FULL_COPY}"]},
        size["repeats"],
        size["warmup"],
    )
    from rlvr.eval import compose
    from rlvr.models.loading import load_policy

    model_cfg = compose(["experiment=vocab_reasoning", "model=qwen3_shape", "model.reasoning_vocab_size=0"], None).model
    model, tokenizer = load_policy(model_cfg, seed=0)
    rows = model.get_input_embeddings().num_embeddings
    bare = {size: bare_model_step_seconds(model, tokenizer, rows + size, batch=sized(32, 8)) for size in (0, FULL_COPY)}
    overheads = vocab_overheads(model, tokenizer, FULL_COPY, calls=sized(50, 2))
    ratio = m["full"]["step"] / m["none"]["step"]
    return {
        "vocab_full_copy_bare_model_ratio": bare[FULL_COPY] / bare[0],
        "vocab_full_copy_ratio_over_bare": ratio / (bare[FULL_COPY] / bare[0]),
        "vocab_full_copy_step_seconds": m["full"]["step"],
        "vocab_none_step_seconds_qwen3_shape": m["none"]["step"],
        "vocab_full_copy_step_ratio": ratio,
        "vocab_full_copy_peak_rss_mb": m["full"][PEAK_RSS],
        "vocab_none_peak_rss_mb_qwen3_shape": m["none"][PEAK_RSS],
        "vocab_full_copy_peak_rss_ratio": m["full"][PEAK_RSS] / m["none"][PEAK_RSS],
        "vocab_processor_us_per_token_v303k": overheads["vocab_processor_us_per_token"],
    }


def bench_fgrpo_step() -> dict:
    """fgrpo over GRPO at equal work (every completion as long as allowed, so what the two policies learn
    to write cannot change the step's size), cut into stages; and at the default config, where it can."""
    from rlvr.config import AlgorithmConfig

    common = [*RLVR_BENCH_RUN_WARMED_UP, f"algorithm.max_steps={STEPS}", "logging.stage_timing=true", "hydra.run.dir={run_dir}"]
    length = sized(AlgorithmConfig.max_completion_length, SMOKE_SETTINGS["max_completion_length"])
    full_length = f"+algorithm.trl.generation_kwargs={{min_new_tokens:{length}}}"
    equal = alternating_step_medians({name: [*common, f"algorithm={name}", full_length] for name in ("grpo", "fgrpo")})
    # At smoke size the default-config pair is not run again: its commands are the equal-work pair's less one override.
    default = equal if SMOKE else alternating_step_medians({name: [*common, f"algorithm={name}"] for name in ("grpo", "fgrpo")})
    return {
        "grpo_step_seconds_full_length": equal["grpo"]["step"],
        "fgrpo_step_seconds_full_length": equal["fgrpo"]["step"],
        "fgrpo_step_ratio_vs_grpo": equal["fgrpo"]["step"] / equal["grpo"]["step"],
        **stage_seconds("fgrpo_stage_full_length", equal),
        "grpo_step_seconds_default": default["grpo"]["step"],
        "fgrpo_step_seconds_default": default["fgrpo"]["step"],
        "fgrpo_step_ratio_vs_grpo_default": default["fgrpo"]["step"] / default["grpo"]["step"],
        **{f"{name}_mean_completion_tokens_default": default[name][MEAN_LENGTH] for name in ("grpo", "fgrpo")},
    }


def bench_vocab_step() -> dict:
    common = [*RLVR_BENCH_RUN_WARMED_UP, "experiment=vocab_reasoning", f"algorithm.max_steps={STEPS}", "hydra.run.dir={run_dir}"]
    m = alternating_step_medians({"grpo": [*common, "model.reasoning_vocab_size=0"], "vocab": common}, repeats=5)
    grpo, vocab = m["grpo"]["step"], m["vocab"]["step"]
    return {
        "grpo_step_seconds_vocab_baseline": grpo,
        "vocab_step_seconds": vocab,
        "vocab_step_ratio_vs_grpo": vocab / grpo,
        **vocab_overheads(*tiny_model_and_tokenizer(), 64, calls=sized(500, 2)),
    }


def tiny_model_and_tokenizer():
    from omegaconf import OmegaConf

    from rlvr.config import TinyModelConfig
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    return build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0), tokenizer


def bare_model_step_seconds(model, tokenizer, rows: int, batch: int = 32, new_tokens: int = 6, steps: int = sized(5, 1)) -> float:
    """The model's own work in one step of bench_vocab_full_copy, without rlvr or TRL: `model` with
    `rows` embedding rows generates `new_tokens` for `batch` prompts of the bench's shape (sampled as
    rlvr samples on CPU), then the log-probs of those tokens (LM head on the completion positions
    only, as TRL's fused head), a backward and an AdamW step. Median seconds of `steps` after one
    untimed. What more rows cost by arithmetic alone, to set beside the measured step ratio."""
    import copy

    import torch
    from transformers import LogitsProcessorList

    from rlvr.trainers.sampling import global_stream_sampler

    torch.set_num_threads(int(THREADS))
    model = copy.deepcopy(model)
    model.resize_token_embeddings(rows, mean_resizing=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    prompts = tokenizer([f"{i % 10}+{i // 10 % 10}=<think>" for i in range(batch)], return_tensors="pt", padding=True, padding_side="left")
    seconds = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.no_grad():
            ids = model.generate(
                **prompts,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([global_stream_sampler(1.0, 1.0, 0, None)]),
                pad_token_id=tokenizer.pad_token_id,
            )
        hidden = model.model(ids).last_hidden_state[:, -new_tokens - 1 : -1]
        log_probs = torch.log_softmax(model.lm_head(hidden), dim=-1).gather(2, ids[:, -new_tokens:, None])
        (-log_probs.mean()).backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:])


def vocab_overheads(model, tokenizer, size: int, rows: int = 64, tokens: int = 12, calls: int = 500) -> dict:
    """In-process cost of `size` reasoning tokens on `model`: the think-segment processor per generated
    token (one call for `rows` rows, scores of full width), and the re-decode plus usage metrics of
    `rows` completions."""
    import random

    import torch

    from rlvr.models.vocab import expand_vocabulary

    vocab = expand_vocabulary(model, tokenizer, size)
    ids = torch.randint(0, vocab.standard_size, (rows, tokens))
    scores = torch.randn(rows, vocab.standard_size + vocab.size)
    processor = vocab.processor()
    started = time.perf_counter()
    for _ in range(calls):  # each call a one-token continuation: the incremental path
        processor.length = tokens - 1
        processor(ids, scores)
    per_token = (time.perf_counter() - started) / calls
    rng = random.Random(0)
    prompts = [[rng.randrange(vocab.standard_size) for _ in range(5)] for _ in range(rows)]
    completions = [[rng.randrange(vocab.standard_size + vocab.size) for _ in range(tokens)] for _ in range(rows)]
    repeats = sized(50, 1)
    started = time.perf_counter()
    for _ in range(repeats):
        vocab.decode(tokenizer, completions)
        vocab.usage(prompts, completions)
    return {
        "vocab_processor_us_per_token": per_token * 1e6,
        "vocab_decode_and_usage_ms_per_step": (time.perf_counter() - started) / repeats * 1e3,
    }


def bench_span_mapping() -> dict:
    from rlvr.data.loading import read_local
    from rlvr.models.loading import build_tiny_tokenizer
    from rlvr.rewards.spans import answer_spans
    from rlvr.trainers.fine_grained import SpanStats, clean_spans, coverage, token_advantages, token_char_offsets

    tokenizer = build_tiny_tokenizer()
    rows = read_local(str(ROOT / "tests" / "data" / "gsm8k_test_300.jsonl"))
    texts = list(rows["answer"])[: sized(None, 20)]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    spans = answer_spans(texts, texts)
    started = time.perf_counter()
    mapped = 0
    for text, row_ids, row_spans in zip(texts, ids, spans):
        clean = clean_spans(row_spans, len(text), SpanStats())
        starts, ends, _ = token_char_offsets(tokenizer, row_ids, text)
        token_advantages(coverage(starts, ends, clean.starts, clean.ends), clean.scores)
        mapped += len(clean.scores)
    return {"span_to_token_per_s": mapped / (time.perf_counter() - started)}


def bench_verify() -> dict:
    from rlvr.data import builtin_data_path
    from rlvr.rewards.math import MathVerifyReward

    rows = [json.loads(line) for line in open(builtin_data_path("math500/test.jsonl"), encoding="utf-8")][: sized(None, 16)]
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
    return {
        "verify_per_s_serial": len(rows) / serial_s,
        "verify_per_s_parallel": len(rows) / parallel_s,
        "verify_speedup_parallel_vs_serial": serial_s / parallel_s,
    }


def bench_code_reward() -> dict:
    import statistics

    from rlvr.data.humaneval import generate
    from rlvr.rewards.code import CodeTestsReward
    from rlvr.rewards.code_sandbox import Job, Limits, Sandbox

    split = generate(num_eval=64, seed=0)
    problems = (split["train"] + split["test"])[: sized(None, 8)]
    reward = CodeTestsReward(workers=2)
    started = time.perf_counter()
    values = reward(
        completions=[p["canonical_solution"] for p in problems],
        answer=[p["tests"] for p in problems],
        entry_point=[p["entry_point"] for p in problems],
        code_prelude=[p["code_prelude"] for p in problems],
    )
    per_s = len(problems) / (time.perf_counter() - started)
    assert sum(values) == len(problems), "a canonical HumanEval solution failed its tests"
    job = Job("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\nassert add(0, 0) == 0\n", "add")
    sides = {kind: Sandbox(kind, Limits()) for kind in ("bubblewrap", "none")}
    seconds = {kind: [] for kind in sides}
    for _ in range(sized(40, 4)):
        for kind, sandbox in sides.items():
            started = time.perf_counter()
            [verdict] = sandbox.run([job])
            seconds[kind].append(time.perf_counter() - started)
            assert verdict.passed == 2, verdict
    overhead = statistics.median(seconds["bubblewrap"]) - statistics.median(seconds["none"])
    return {
        "code_reward_per_s": per_s,
        "code_sandbox_overhead_ms": 1000 * overhead,
        "code_bare_subprocess_ms": 1000 * statistics.median(seconds["none"]),
    }


def bench_rm_scoring() -> dict:
    from omegaconf import OmegaConf

    from rlvr.config import ModelConfig
    from rlvr.data.arithmetic import generate_preferences
    from rlvr.models.loading import load_reward_model
    from rlvr.rewards.hybrid import RewardModelScorer, as_messages

    model, tokenizer = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)
    pairs = generate_preferences(num_train=sized(256, 16), num_eval=1, seed=0)["train"]
    conversations = [as_messages(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    rates = {}
    for name, batch_size in (("one_by_one", 1), ("batched", 32)):
        scorer = RewardModelScorer(model, tokenizer, batch_size=batch_size)
        scorer.score(conversations[:64])  # warm-up
        started = time.perf_counter()
        scorer.score(conversations)
        rates[name] = len(pairs) / (time.perf_counter() - started)
    return {
        "rm_pairs_per_s_one_by_one": rates["one_by_one"],
        "rm_pairs_per_s_batched": rates["batched"],
        "rm_scoring_speedup_batched": rates["batched"] / rates["one_by_one"],
    }


def logged_memory(run_log: Path) -> dict[str, dict[int, int]]:
    """{"held": {process: bytes}, "peak_rss_kb": {process: kB}} from the `memory:` lines (rlvr/hardware/sharding.py)."""
    found: dict[str, dict[int, int]] = {"held": {}, "peak_rss_kb": {}}
    for line in run_log.read_text().splitlines():
        if "memory: process" not in line:
            continue
        process = int(line.split("memory: process ")[1].split()[0])
        if " holds " in line:
            found["held"][process] = int(line.split(" holds ")[1].split()[0])
        elif "peak RSS" in line:
            found["peak_rss_kb"][process] = int(line.split("peak RSS ")[1].split()[0])
    return found


# Model arguments of each bench_sharding size: the mid-size model, and Qwen2.5-0.5B's full shape, where the
# state (7.5 GB per process under DDP) dominates each process's memory (4 completions of 16 tokens each).
SHARDING_SIZES = {
    "mid": rlvr_overrides(GRPO_SIZES["mid"]["settings"]),
    "full_0.5b": rlvr_overrides(FULL_SIZE["settings"] | {"per_device_train_batch_size": 4, "max_completion_length": 16}),
}


def bench_sharding(
    sizes: str = os.environ.get("BENCH_SHARDING_SIZES", sized("mid,full_0.5b", "mid")),
    steps: int = sized(int(os.environ.get("BENCH_SHARDING_STEPS", "14")), STEPS),
    full_steps: int = sized(int(os.environ.get("BENCH_SHARDING_FULL_STEPS", "4")), STEPS),
    modes: tuple[str, ...] = sized(("none", "fsdp", "zero2", "zero3"), ("none", "zero3")),
) -> dict:
    """DDP vs FSDP2 vs DeepSpeed ZeRO-2 / ZeRO-3, 2 processes (gloo, one thread each), at each of `sizes`:
    bytes of parameters + gradients + optimizer state each process holds (ZeRO: with its fp32 master copy
    of the process's partition), peak RSS per process, median step time; keys `sharded_*` (mid) and
    `sharded_0.5b_*`. At smoke size only `mid`, DDP and ZeRO-3 run: the sizes share every line but the model's
    arguments, the modes every line but `hardware.sharding` (each mode's runs are tests/sharding/)."""
    results = {}
    for size in sizes.split(","):
        prefix, size_steps = ("sharded", steps) if size == "mid" else ("sharded_0.5b", full_steps)
        results |= sharding_modes(prefix, SHARDING_SIZES[size], size_steps, sized(2, WARMUP_STEPS), modes)
    return results


def sharding_modes(prefix: str, model_args: list[str], steps: int, warmup: int, modes: tuple[str, ...]) -> dict:
    """`<prefix>_state_mb_<mode>`, `<prefix>_step_seconds_<mode>`, `<prefix>_peak_rss_mb_<mode>_rank<p>` and each
    sharded mode's state and step ratios to DDP, for 2-process runs of `model_args` in each of `modes` (DDP, "none", first)."""
    results: dict[str, float] = {}
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            run_dir = Path(tmp) / mode
            # --standalone: a free port of its own, not torchrun's fixed default (another job may hold it)
            run(
                [
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc_per_node",
                    "2",
                    *RLVR_BENCH_RUN,
                    *model_args,
                    "hardware.tasks_per_node=2",
                    "hardware.torch_threads=1",
                    f"hardware.sharding={mode}",
                    f"algorithm.max_steps={steps}",
                    f"hydra.run.dir={run_dir}",
                ]
            )
            memory = logged_memory(run_dir / "run.log")
            measured[mode] = {
                "held": max(memory["held"].values()),
                "step": median_step_seconds(run_dir / "metrics.jsonl", warmup, steps - warmup)["step"],
            }
            name = "ddp" if mode == "none" else mode
            results |= {
                f"{prefix}_state_mb_{name}": measured[mode]["held"] / 2**20,
                f"{prefix}_step_seconds_{name}": measured[mode]["step"],
            }
            results |= {f"{prefix}_peak_rss_mb_{name}_rank{p}": kb / 1024 for p, kb in sorted(memory["peak_rss_kb"].items())}
    for mode in modes[1:]:
        results[f"{prefix}_state_ratio_{mode}_vs_ddp"] = measured[mode]["held"] / measured["none"]["held"]
        results[f"{prefix}_step_ratio_{mode}_vs_ddp"] = measured[mode]["step"] / measured["none"]["step"]
    return results


def bench_eval(
    sizes: str = os.environ.get("BENCH_EVAL_SIZES", "tiny,mid"),
    prompts: int = sized(int(os.environ.get("BENCH_EVAL_PROMPTS", "32")), 2),
    n: int = sized(int(os.environ.get("BENCH_EVAL_N", "8")), 2),
    max_new_tokens: int = sized(32, 8),
) -> dict:
    """rlvr's run_eval (n samples per prompt together, prompts batched by length, per-row seeded
    sampling, scoring, file) over one `model.generate` call per prompt and sample (same prompts,
    temperature 1, no top-k/top-p, same length limit, scored alike), in-process, BENCH_THREADS threads."""
    import torch
    from omegaconf import OmegaConf

    from rlvr.config import Config, EvalConfig
    from rlvr.data import load_prompt_datasets
    from rlvr.evaluation.engine import run_eval
    from rlvr.models.loading import load_policy
    from rlvr.rewards import build_rewards
    from rlvr.rewards.checks import checked_rewards

    torch.set_num_threads(int(THREADS))
    results = {}
    for name in sizes.split(","):
        cfg = OmegaConf.structured(Config)
        cfg.model.tiny = OmegaConf.merge(
            cfg.model.tiny, {k[len("tiny.") :]: v for k, v in GRPO_SIZES[name]["settings"].items() if k.startswith("tiny.")}
        )
        cfg.dataset.generator = {"num_train": 1, "num_eval": prompts}
        model, tokenizer = load_policy(cfg.model, 0)
        model.eval()
        _, dataset = load_prompt_datasets(cfg.dataset)
        rewards = checked_rewards(build_rewards({"gsm8k_flexible": {"_target_": "rlvr.rewards.numeric.LastNumberReward"}}))
        eval_cfg = OmegaConf.structured(EvalConfig(greedy=False, n=n, ks=[1, n], batch_size=64))

        def naive():
            completions = []
            for prompt in dataset["prompt"]:
                encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
                for _ in range(n):
                    with torch.inference_mode():
                        ids = model.generate(
                            **encoded,
                            max_new_tokens=max_new_tokens,
                            do_sample=True,
                            temperature=1.0,
                            top_p=1.0,
                            top_k=0,
                            pad_token_id=tokenizer.pad_token_id,
                        )
                    completions.append(tokenizer.decode(ids[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))
            for reward in rewards:
                reward.fn(
                    prompts=[p for p in dataset["prompt"] for _ in range(n)],
                    completions=completions,
                    answer=[a for a in dataset["answer"] for _ in range(n)],
                )

        with tempfile.TemporaryDirectory() as tmp:
            seconds = {}
            for side, work in (
                ("naive", naive),
                (
                    "rlvr",
                    lambda: run_eval(model, tokenizer, dataset, rewards, eval_cfg, max_new_tokens, Path(tmp) / "eval.jsonl", "bench", 0),
                ),
            ):
                started = time.perf_counter()
                work()
                seconds[side] = time.perf_counter() - started
        suffix = "" if name == "tiny" else f"_{name}"
        results |= {
            f"eval_completions_per_s{suffix}": prompts * n / seconds["rlvr"],
            f"eval_completions_per_s_naive{suffix}": prompts * n / seconds["naive"],
            f"eval_speedup_vs_naive{suffix}": seconds["naive"] / seconds["rlvr"],
        }
    return results


# Every module-level `bench_*` function, in the order they are defined.
BENCHES = tuple(f for name, f in list(globals().items()) if name.startswith("bench_") and callable(f))


def main(names: list[str]) -> None:
    """Run every bench, or those named (`bench.py bench_grpo_step`); merge into RESULTS."""
    unknown = set(names) - {b.__name__ for b in BENCHES}
    if unknown:
        sys.exit(f"bench.py: no bench named {', '.join(sorted(unknown))}; the benches: {', '.join(b.__name__ for b in BENCHES)}")
    results: dict[str, float] = {}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for bench in [b for b in BENCHES if not names or b.__name__ in names]:
        print(f"running {bench.__name__} ...", file=sys.stderr, flush=True)
        results |= bench()
        RESULTS.write_text(json.dumps(previous | results, indent=2) + "\n")  # after each: a later failure loses nothing
    width = max(map(len, results))
    print(f"{'measure'.ljust(width)}  value")
    for name, value in results.items():
        print(f"{name.ljust(width)}  {value:.4g}")
    print(f"(written to {RESULTS})")


if __name__ == "__main__":
    main(sys.argv[1:])
