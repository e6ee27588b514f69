"""The baseline for `make bench`: a plain TRL GRPOTrainer script, as a TRL user would write it.

Same tiny model and tokenizer (built by the same code from the same model preset, composed through
rlvr's config schema as `python -m rlvr.run model=PRESET` composes it), same arithmetic
data, same GRPOConfig values as rlvr's bench run; step wall times are taken by the same callback
rlvr uses (metrics.jsonl, step_seconds), and split into stages by the same instrument
(rlvr.trainers.stage_timing). Dotted overrides choose the model preset (`model=qwen2.5_shape`: its `tiny`
block from conf/model/, real Qwen tokenizer included), change its shape (`tiny.hidden_size=384`)
or a GRPOConfig value (`max_completion_length=64`).

    python tests/benchmarks/trl_plain_grpo.py OUT_DIR STEPS [model=PRESET] [key=value ...]
"""

import re
import sys
from pathlib import Path

from datasets import Dataset
from omegaconf import OmegaConf
from transformers import set_seed
from trl import GRPOConfig, GRPOTrainer

from rlvr.data.arithmetic import generate
from rlvr.eval import compose
from rlvr.models.loading import build_tiny_model, build_tokenizer
from rlvr.trainers.stage_timing import instrument
from rlvr.tracking.outputs import metrics_callback


def last_number_reward(completions, answer, **kwargs):
    rewards = []
    for completion, gold in zip(completions, answer):
        numbers = re.findall(r"-?\d+", completion)
        rewards.append(1.0 if numbers and numbers[-1] == gold else 0.0)
    return rewards


def main(out_dir: Path, steps: int, overrides: list[str]) -> None:
    set_seed(0)
    model_args = [arg for arg in overrides if arg.startswith(("model=", "tiny."))]
    shape = compose([arg if arg.startswith("model=") else f"model.{arg}" for arg in model_args], None).model.tiny
    settings = OmegaConf.to_container(OmegaConf.from_dotlist([arg for arg in overrides if arg not in model_args]))
    tokenizer = build_tokenizer(shape)
    model = build_tiny_model(shape, tokenizer, seed=0)
    rows = generate(num_train=2000, num_eval=1, seed=0)["train"]
    train = Dataset.from_list([{"prompt": r["question"], "answer": r["answer"]} for r in rows])
    args = GRPOConfig(
        **{
            "output_dir": str(out_dir / "trl"),
            "max_steps": steps,
            "learning_rate": 3e-4,
            "lr_scheduler_type": "constant",
            "per_device_train_batch_size": 64,
            "num_generations": 8,
            "max_completion_length": 6,
            "temperature": 1.0,
            "beta": 0.0,
            "loss_type": "dapo",
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": [],
            "use_cpu": True,
            "bf16": False,
            "gradient_checkpointing": False,
            "seed": 0,
            **settings,
        }
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=last_number_reward,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[metrics_callback(out_dir / "metrics.jsonl")],
    )
    instrument(trainer)
    trainer.train()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
