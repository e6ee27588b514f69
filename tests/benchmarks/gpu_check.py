"""`make gpu-check`: rlvr against the plain TRL script on one CUDA GPU, whenever one is lent.

At Qwen2.5-0.5B's and Qwen2.5-1.5B's full shapes (model=qwen2.5_0.5b_full_shape / _1.5b_full_shape:
random init, real tokenizer, nothing downloaded), bf16 mixed precision with activation checkpointing
(rlvr's `hardware=gpu_bf16`; the plain script with the same GRPOConfig values), 8 prompts x 8
completions of up to 128 tokens, each side in a fresh process, alternating: per side the median
GRPO step, generation tokens/s (completion tokens over the generation stage) and peak allocated GPU
memory (`torch.cuda.max_memory_allocated`, logged by rlvr.tracking.outputs's metrics callback on both sides).
On one H200 with no network it takes about 4 minutes on a fresh machine, 3 on a warm one: each run
also builds its model once into the per-machine cache (1.5B: 6 GB) and saves final_model/. 7B is left
out: its fp32 weights, gradients and AdamW moments alone (16 bytes a parameter, ~120 GB) leave no room
for the rollouts on one 141 GB GPU. Every finished size is written at once, so a run cut short keeps
what it measured.

    python tests/benchmarks/gpu_check.py [OUT.json]      (default gpu-check.json)

BENCH_SMOKE=1: the same code path on CPU at the smoke shapes (tests/benchmarks/test_gpu_check_smoke.py);
its figures measure nothing.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench  # noqa: E402  (the same commands, instrument and medians as `make bench`)

STEPS, WARMUP = bench.sized(5, 2), bench.sized(2, 1)
SIZES = {"0.5b": {"model": "qwen2.5_0.5b_full_shape"}, "1.5b": {"model": "qwen2.5_1.5b_full_shape"}}
SETTINGS = bench.sized(
    {"per_device_train_batch_size": 64, "num_generations": 8, "max_completion_length": 128},
    {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 4, **bench.SMOKE_SHAPE},
)
if bench.SMOKE:  # small enough for CPU
    SIZES = {"0.5b": SIZES["0.5b"]}
# On the GPU: rlvr's bf16 preset, and the same in the plain script's GRPOConfig.
RLVR_GPU = bench.sized(["hardware=gpu_bf16"], [])
TRL_GPU = bench.sized(["use_cpu=false", "bf16=true", "tf32=true", "gradient_checkpointing=true"], [])


def check_size(name: str) -> dict:
    size = {"settings": SIZES[name] | SETTINGS, "steps": STEPS}
    commands = bench.grpo_step_commands(size)
    commands = {"rlvr": [*commands["rlvr"], *RLVR_GPU], "trl": [*commands["trl"], *TRL_GPU]}
    m = bench.alternating_step_medians(commands, repeats=1, warmup=WARMUP, min_timed=STEPS - WARMUP)
    completions = SETTINGS["per_device_train_batch_size"]
    result = {}
    for side in ("rlvr", "trl"):
        result |= {
            f"{name}_{side}_step_seconds": m[side]["step"],
            f"{name}_{side}_generation_tokens_per_s": m[side][bench.MEAN_LENGTH] * completions / m[side]["generation"],
        }
        if bench.GPU_PEAK in m[side]:
            result[f"{name}_{side}_gpu_peak_memory_mb"] = m[side][bench.GPU_PEAK]
    return result | bench.stage_seconds(f"{name}_stage", m) | {f"{name}_step_ratio_vs_trl": m["rlvr"]["step"] / m["trl"]["step"]}


def machine() -> dict:
    import torch
    import transformers
    import trl

    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "settings": SETTINGS,
        "steps": STEPS,
        "warmup_steps": WARMUP,
    }


def main(out: Path) -> None:
    results = {"machine": machine()}
    for name in SIZES:
        print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
        results |= check_size(name)
        out.write_text(json.dumps(results, indent=2) + "\n")  # after each size: a later failure loses nothing
    print(json.dumps(results, indent=2))
    print(f"(written to {out})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check.json"))
