"""Structured schemas for every config group, and the fast pre-flight check of command-line keys.

Hydra merges each group's YAML into these dataclasses, so a YAML typo fails at composition. The
pre-flight check (`check_overrides`) runs before Hydra so that a command-line typo gets one line
that names the key and the closest valid one, instead of Hydra's multi-line struct error.
This module imports no torch/transformers: `--cfg job` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.errors import ConfigError, modules_raised_through


@dataclass
class TinyModelConfig:
    """The built-in random-init model: architecture, tokenizer and shape."""

    architecture: str = "qwen2"  # qwen2 | qwen3
    # bytes: ~260 ids made in code; qwen2.5 | qwen3: the real Qwen BPE tokenizer (rlvr/models/qwen_tokenizers.py)
    tokenizer: str = "bytes"
    vocab_rows: int | None = None  # rows of the embedding matrix (the real models pad theirs); None: the tokenizer's size
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 256
    # one matrix for the input embeddings and the LM head, as Qwen2.5-0.5B/1.5B and Qwen3-0.6B have it;
    # false: two, as the larger Qwen models have them
    tie_word_embeddings: bool = True


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"
    # final_model/ = the adapter merged into its base (loads with transformers alone); the adapter
    # itself goes to final_adapter/. false: only final_adapter/ (a base too large to store twice).
    save_merged: bool = True


@dataclass
class ModelConfig:
    # "tiny" builds the built-in model locally; anything else is a Hub name or a local directory.
    name_or_path: str = "tiny"
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    # A random-init model cannot learn by RL alone in minutes; a short supervised warm-up on the
    # training split gives GRPO a policy that is sometimes right. 0 for pretrained models.
    warmup_sft_steps: int = 0
    warmup_sft_learning_rate: float = 1e-3
    warmup_sft_batch_size: int = 32  # examples per warm-up step and process (at a 151,936-row vocabulary each costs)
    # A warm-up this machine trained before with the same inputs is loaded from ~/.cache/rlvr/warmups
    # (rlvr/recipes/warmup_cache.py); false trains it again.
    warmup_sft_cache: bool = True
    lora: LoraConfig = field(default_factory=LoraConfig)
    # none | 8bit | 4bit: weights loaded quantized by bitsandbytes (transformers' BitsAndBytesConfig;
    # 4bit is QLoRA's NF4), frozen, with LoRA trained on top. Needs the quantization extra.
    quantization: str = "none"
    # A second copy of N tokens, usable only inside <think> ... </think> (rlvr/models/vocab.py); 0 = off.
    reasoning_vocab_size: int = 0
    reasoning_vocab_ids: Any = "first"  # which tokens get a copy: first | frequent | [id, ...]
    reasoning_only_in_think: bool = False  # inside think, only reasoning ids (and </think>)


@dataclass
class PreferenceConfig:
    """Preference pairs (algorithm=reward_model): TRL message lists, raw HH transcripts, or strings."""

    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    prompt_column: str | None = None  # without one, the turns chosen and rejected share are the prompt
    chat_template: str = "tokenizer"  # tokenizer | simple_concat_with_space | simple_chat
    max_token_length: int | None = None  # drop pairs whose prompt + answer is longer
    max_prompt_token_length: int | None = None
    sanity_check: bool = False  # keep 100 pairs: a fast end-to-end check of a new setup


@dataclass
class DatasetConfig:
    name: str = "arithmetic"
    # "builtin:<generator>", a Hub dataset name, or a local .json/.jsonl/.parquet file.
    source: str = "builtin:arithmetic"
    subset: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    # The eval rows' own file, Hub dataset (its `eval_split`) or built-in generator (builtin:NAME: its eval rows,
    # made with `generator`), for any `source`; without one, a builtin's
    # eval rows, a Hub source's `eval_split`, else `eval_holdout` rows held out of the train rows.
    eval_source: str | None = None
    eval_holdout: int = 100
    prompt_column: str = "question"
    answer_column: str = "answer"
    prompt_template: str | None = None  # e.g. "Solve: {question}"; None: the prompt column as it is
    system_prompt: str | None = None
    chat: bool = False  # prompts as chat messages (instruct models) or plain text
    sft_completion_template: str = "{gold}"  # target text of the warm-up stage
    max_train_samples: int | None = None
    max_eval_samples: int | None = 100
    # The data's seed: a built-in generator's draws, mixing, holdout, sample limits; the run's `seed` leaves the data as it is.
    shuffle_seed: int = 0
    generator: dict[str, Any] = field(default_factory=dict)  # arguments of a builtin generator
    # {name_or_path: fraction (<= 1.0) or count (> 1)}: train on a mixture instead of `source`.
    mixer: dict[str, Any] = field(default_factory=dict)
    preference: PreferenceConfig = field(default_factory=lambda: PreferenceConfig())


@dataclass
class RewardChecksConfig:
    """How rlvr watches every reward's output (rlvr/rewards/checks.py)."""

    failure_warn_frac: float = 0.5  # a call with a larger share of no verdicts (None/timeout/error) warns
    none_patience: int = 20  # this many training steps in a row of None for every completion stop the run (0: never)
    slow_call_s: float = 60.0  # a call running longer is named in a warning, while it runs and when it returns


@dataclass
class RewardConfig:
    # name -> {_target_: dotted.path, weight: float, **arguments}; a plain function also takes
    # timeout_s: each call then runs in a killable worker process.
    functions: dict[str, Any] = field(default_factory=dict)
    checks: RewardChecksConfig = field(default_factory=RewardChecksConfig)


@dataclass
class FineGrainedConfig:
    """algorithm=fgrpo: how span scores become per-token advantages."""

    normalization: str = "standard"  # standard (s-mean)/(std+eps) | centered s-mean | none
    scope: str = "prompt"  # normalise within a prompt's completions, or across the batch
    uncovered: str = "keep"  # tokens no span covers: keep (advantage 0, in the loss) | drop (out of it)
    strict: bool = False  # malformed spans: error naming the span, instead of clip/drop + count
    eps: float = 1e-4


@dataclass
class VllmConfig:
    """algorithm.rollout=vllm: how TRL runs vLLM (its `vllm_*` GRPOConfig fields; rlvr/trainers/rollout_engine.py)."""

    # colocate: one engine inside each training process, weights synced before each generation;
    # server: `trl vllm-serve` on GPUs of its own (CUDA only: TRL's weight sync to it is NCCL)
    mode: str = "colocate"
    server_base_url: str | None = None  # server: e.g. http://gen-node:8000 (None: TRL's host and port)
    gpu_memory_utilization: float = 0.3  # colocate on CUDA: the share of GPU memory the engine takes
    tensor_parallel_size: int = 1  # colocate: training ranks per engine
    sleep_mode: bool = False  # colocate: the engine frees its GPU memory while the policy trains
    cpu_kv_cache_gib: int = 1  # CPU: the KV cache (VLLM_CPU_KVCACHE_SPACE; vLLM reads gpu_memory_utilization as a share of RAM)
    dtype: str = "auto"  # the engine's weights; auto: vLLM's choice (bf16 for an fp32 policy on CPU)
    # None: eager on CPU (Inductor's first compile takes minutes at 0.5B), compiled graphs on CUDA
    enforce_eager: bool | None = None


@dataclass
class AlgorithmConfig:
    """The recipe (`name`) and its hyper-parameters, named exactly as TRL's configs name them.

    One schema for every recipe: each recipe passes TRL the fields its TRL config has.
    """

    name: str = "grpo"  # grpo | fgrpo | reward_model
    learning_rate: float = 3e-4
    lr_scheduler_type: str = "constant"  # rlvr's default; TRL's and transformers' is linear (decay to 0 at max_steps)
    warmup_steps: float = 0  # an int counts steps; a float < 1 is a fraction of max_steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch_fused"  # transformers' default (torch >= 2.8), also on CPU
    max_steps: int = 1000
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 64  # GRPO: completions, not prompts; reward_model: pairs
    per_device_eval_batch_size: int = 8  # reward_model (a GRPO-family run evaluates in eval.batch_size batches)
    eval_steps: int | None = None  # reward_model: evaluate every N steps (None: at the end only)
    center_rewards_coefficient: float | None = None  # reward_model: pull mean reward towards 0
    gradient_accumulation_steps: int = 1
    generation_batch_size: int | None = None
    steps_per_generation: int | None = None
    num_generations: int = 8
    max_completion_length: int = 6
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    mask_truncated_completions: bool = False
    importance_sampling_level: str = "token"
    logging_steps: int = 1
    save_steps: int = 250  # 0: only the final model
    save_total_limit: int | None = 2
    fine_grained: FineGrainedConfig = field(default_factory=FineGrainedConfig)
    # GRPO-family rollouts: hf (transformers' model.generate, TRL's default) | vllm (TRL's vLLM integration)
    rollout: str = "hf"
    vllm: VllmConfig = field(default_factory=VllmConfig)
    # Any other field of the recipe's TRL config, passed through unchanged (checked at start-up).
    trl: dict[str, Any] = field(default_factory=dict)


@dataclass
class HardwareConfig:
    """What a job runs on: the same meaning locally and on SLURM (launcher presets read the resources)."""

    device: str = "cpu"  # cpu | cuda | mps (Apple silicon)
    precision: str = "fp32"  # fp32 | bf16 | fp16
    torch_threads: int | None = None  # None: torch's default
    activation_checkpointing: bool = False  # a.k.a. gradient checkpointing; slow on CPU
    tf32: bool = False
    # none: every process holds the whole model (DDP); fsdp: FSDP2 shards parameters, gradients and
    # optimizer state across the processes; zero2: DeepSpeed ZeRO-2 shards gradients and optimizer
    # state; zero3: DeepSpeed ZeRO-3 shards all three (rlvr/hardware/sharding.py; pip install 'rlvr[deepspeed]').
    sharding: str = "none"
    # Job resources (hydra/launcher=slurm|local): processes = nodes x tasks_per_node, data-parallel.
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int = 8
    # GRPO rollouts on CPU: the next token by inverse CDF (rlvr/trainers/sampling.py; the same distribution,
    # ~3x faster at Qwen's vocabulary); false: torch.multinomial, the draws plain TRL makes.
    cpu_inverse_cdf_sampling: bool = True


@dataclass
class LoggingConfig:
    wandb: str = "offline"  # online | offline (logs in the run dir, `wandb sync` later) | disabled
    project: str = "rlvr"
    entity: str | None = None
    rollouts: bool = True  # rollouts.jsonl in the run dir
    plots: bool = True
    stage_timing: bool = False  # GRPO: per-stage seconds of each step in metrics.jsonl (rlvr/trainers/stage_timing.py)


@dataclass
class EvalConfig:
    """What is evaluated, when, and how (rlvr/evaluation/engine.py); options in conf/eval/."""

    before: bool = True  # before training
    after: bool = True  # after training
    every_steps: int = 0  # also every N training steps (eval/<metric> rows in metrics.jsonl); 0: before/after only
    greedy: bool = True  # one greedy completion per prompt: `accuracy`
    n: int = 0  # sampled completions per prompt: mean@n, pass@k, maj@k; 0: none
    ks: list[int] = field(default_factory=list)  # the k of pass@k and maj@k, each <= n
    temperature: float = 1.0  # sampling settings of the n samples
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    seed: int = 0  # the samples of prompt row i depend on (seed, i) only: not on batches, ranks or step
    max_new_tokens: int | None = None  # None: algorithm.max_completion_length
    split: str = "eval"  # eval: the dataset's eval split | train: its training prompts
    limit: int | None = None  # the first N rows of that split; None: all
    batch_size: int = 64  # sequences per generate call at most (a prompt's n samples count n, split when n exceeds it)
    engine: str = "hf"  # hf: transformers' generate | vllm: vLLM (in training, the run's rollout engine: algorithm.rollout=vllm)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # the run's: initialisation, sampling, data order (not the data itself: dataset.shuffle_seed)
    # None: offline exactly when the config names nothing on the Hub.
    offline: bool | None = None
    experiment: str | None = None
    objective: str = "eval_after_accuracy"  # the metric returned to sweepers (Optuna)


@dataclass
class EvalAppConfig(Config):
    """`python -m rlvr.eval`: the models in `target` (a run dir: every complete checkpoint; a
    checkpoint dir; a model dir) evaluated with the training config, their results in `output_dir`
    (None: the target's run dir, else the model dir)."""

    target: str = "???"
    output_dir: str | None = None


@dataclass
class ScoreConfig:
    """`python -m rlvr.score`: score a JSONL of completions with a reward preset."""

    reward: RewardConfig = field(default_factory=RewardConfig)
    input: str = "???"
    output: str | None = None
    completion_column: str = "completion"
    answer_column: str = "answer"


@dataclass(frozen=True)
class Range:
    """The values a numeric knob may take; `str()` is how its error line words it."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    also: tuple = ()  # values outside the interval that mean something (max_steps=-1)
    why: str = ""

    def admits(self, value) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return value in self.also or (above and below)

    def __str__(self) -> str:
        low, high = (int(x) if math.isfinite(x) and x == int(x) else x for x in (self.low, self.high))
        if high == math.inf:
            text = f"{'>' if self.open_low else '>='} {low}"
        elif low == -math.inf:
            text = f"{'<' if self.open_high else '<='} {high}"
        else:
            text = f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"
        text += "".join(f", or {value}" for value in self.also)
        return text + (f" ({self.why})" if self.why else "")


def check_number(key: str, value: Any, allowed: Range = Range(), whole: bool = False) -> None:
    """A ConfigError "<key>=<value> must be a finite|whole number <allowed>" unless `value` is a finite int or
    float (an int when `whole`) in `allowed`, and not a bool, which Python counts as an int: the check for
    numbers outside the typed schema (a reward's arguments), which no dataclass field types."""
    kinds = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or not allowed.admits(value):
        bounds = "" if allowed == Range() else f" {allowed}"
        raise ConfigError(f"{key}={value!r} must be a {'whole' if whole else 'finite'} number{bounds}")


POSITIVE, NON_NEGATIVE = Range(0, open_low=True), Range(0)
SEED = Range(0, 2**32 - 1, why="numpy's seed range")
# Every numeric knob that TRL, torch or rlvr would take silently wrong or fail on late. None (an
# optional knob left unset) always passes. Checked at the start of a run, before anything loads.
RANGES = {
    "seed": SEED,
    "model.warmup_sft_steps": NON_NEGATIVE,
    "model.warmup_sft_learning_rate": POSITIVE,
    "model.warmup_sft_batch_size": POSITIVE,
    "model.reasoning_vocab_size": NON_NEGATIVE,
    "model.lora.r": POSITIVE,
    "model.lora.alpha": POSITIVE,
    "model.lora.dropout": Range(0, 1, open_high=True),
    "dataset.eval_holdout": NON_NEGATIVE,
    "dataset.max_train_samples": Range(0, open_low=True, why="null: every row"),
    "dataset.max_eval_samples": Range(0, open_low=True, why="a run without evals: eval.before=false eval.after=false"),
    "dataset.shuffle_seed": SEED,
    "reward.checks.failure_warn_frac": Range(0, 1),
    "reward.checks.none_patience": NON_NEGATIVE,
    "reward.checks.slow_call_s": POSITIVE,
    "algorithm.learning_rate": POSITIVE,
    "algorithm.warmup_steps": NON_NEGATIVE,
    "algorithm.weight_decay": NON_NEGATIVE,
    "algorithm.max_grad_norm": NON_NEGATIVE,
    "algorithm.max_steps": Range(0, open_low=True, also=(-1,), why="-1: train algorithm.num_train_epochs"),
    "algorithm.num_train_epochs": POSITIVE,
    "algorithm.per_device_train_batch_size": POSITIVE,
    "algorithm.per_device_eval_batch_size": POSITIVE,
    "algorithm.eval_steps": NON_NEGATIVE,
    "algorithm.center_rewards_coefficient": NON_NEGATIVE,
    "algorithm.gradient_accumulation_steps": POSITIVE,
    "algorithm.generation_batch_size": POSITIVE,
    "algorithm.steps_per_generation": POSITIVE,
    "algorithm.num_generations": Range(2, why="GRPO compares the completions of one prompt with each other"),
    "algorithm.max_completion_length": POSITIVE,
    "algorithm.temperature": POSITIVE,
    "algorithm.top_p": Range(0, 1, open_low=True),
    "algorithm.top_k": Range(0, why="0: no top-k filter"),
    "algorithm.repetition_penalty": POSITIVE,
    "algorithm.beta": NON_NEGATIVE,
    "algorithm.epsilon": POSITIVE,
    "algorithm.epsilon_high": POSITIVE,
    "algorithm.num_iterations": POSITIVE,
    "algorithm.logging_steps": POSITIVE,
    "algorithm.save_steps": Range(0, why="0: only the final model"),
    "algorithm.save_total_limit": POSITIVE,
    "algorithm.fine_grained.eps": POSITIVE,
    "algorithm.vllm.gpu_memory_utilization": Range(0, 1, open_low=True),
    "algorithm.vllm.tensor_parallel_size": POSITIVE,
    "algorithm.vllm.cpu_kv_cache_gib": POSITIVE,
    "hardware.torch_threads": POSITIVE,
    "hardware.nodes": POSITIVE,
    "hardware.tasks_per_node": POSITIVE,
    "hardware.gpus_per_node": NON_NEGATIVE,
    "hardware.cpus_per_task": POSITIVE,
    "hardware.mem_gb": POSITIVE,
    "eval.batch_size": POSITIVE,
    "eval.max_new_tokens": POSITIVE,
    "eval.every_steps": Range(0, why="0: before/after only"),
    "eval.n": Range(0, why="0: no sampled completions"),
    "eval.temperature": POSITIVE,
    "eval.top_p": Range(0, 1, open_low=True),
    "eval.top_k": Range(0, why="0: no top-k filter"),
    "eval.seed": SEED,
    "eval.limit": POSITIVE,
}


def _keys(module: str, mapping: str, *extra: str):
    """Allowed values read, when checked, from the mapping that acts on them: `extra`, then its keys."""
    return lambda: (*extra, *getattr(importlib.import_module(module), mapping))


def _values(module: str, enum: str):
    """Allowed values read, when checked, from a library's Enum."""
    return lambda: tuple(member.value for member in getattr(importlib.import_module(module), enum))


# Every string knob with a fixed set of values, checked with RANGES before anything loads (a typo gets
# a "did you mean"). A tuple is the list itself; a function reads it where the values act, so each
# list lives in one place. The modules that branch on a value trust what passed here.
CHOICES = {
    "model.tiny.architecture": _keys("rlvr.models.loading", "ARCHITECTURES"),
    "model.tiny.tokenizer": _keys("rlvr.models.qwen_tokenizers", "FLAVOURS", "bytes"),
    "model.dtype": _keys("rlvr.models.loading", "DTYPES"),
    "model.quantization": ("none", "8bit", "4bit"),
    "model.reasoning_vocab_ids": ("first", "frequent"),  # or a list of ids: checked against the tokenizer
    "dataset.preference.chat_template": _keys("rlvr.data.preferences", "CHAT_TEMPLATES", "tokenizer"),
    "algorithm.name": _keys("rlvr.recipes", "TRL_CONFIGS"),
    "algorithm.lr_scheduler_type": _values("transformers", "SchedulerType"),
    "algorithm.optim": _values("transformers.training_args", "OptimizerNames"),
    "algorithm.fine_grained.normalization": ("standard", "centered", "none"),
    "algorithm.fine_grained.scope": ("prompt", "batch"),
    "algorithm.fine_grained.uncovered": ("keep", "drop"),
    "algorithm.rollout": ("hf", "vllm"),
    "algorithm.vllm.mode": ("colocate", "server"),
    "algorithm.vllm.dtype": ("auto", "float32", "bfloat16", "float16"),
    "hardware.device": ("cpu", "cuda", "mps"),
    "hardware.precision": ("fp32", "bf16", "fp16"),
    "hardware.sharding": _keys("rlvr.hardware.sharding", "ZERO_STAGES", "none", "fsdp"),
    "logging.wandb": ("online", "offline", "disabled"),
    "eval.split": ("eval", "train"),
    "eval.engine": ("hf", "vllm"),
}


def allowed_values(key: str) -> tuple[str, ...]:
    """The values `key` (a key of CHOICES) may take."""
    allowed = CHOICES[key]
    return allowed if isinstance(allowed, tuple) else allowed()


def override_key(override: str) -> str:
    """The key a command-line override sets: `algorithm.beta` of `+algorithm.beta=0.1`."""
    return override.split("=", 1)[0].lstrip("+~")


def eval_token_limit(config) -> int:
    """The new tokens an eval may generate: `eval.max_new_tokens`, or `algorithm.max_completion_length`
    where it is unset; of a config, or of one as run_info.jsonl records it (a dict)."""
    return config["eval"]["max_new_tokens"] or config["algorithm"]["max_completion_length"]


def did_you_mean(word: str, options: typing.Iterable[str], cutoff: float = 0.6, prefix: str = "") -> str:
    """` (did you mean 'PREFIXOPTION'?)` for the option closest to `word`, or "" when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def choice_error(key: str, value: Any, allowed: typing.Iterable[str]) -> str | None:
    """The one-line refusal of `key=value` when value is not among `allowed`, with a "did you mean"."""
    allowed = [str(a) for a in allowed]
    if value in allowed:
        return None
    return f"{key}={value!r} must be one of {', '.join(allowed)}{did_you_mean(str(value), allowed, cutoff=0.5)}"


# String knobs whose allowed values TRL's config documents (read from its docstring, not copied here),
# whether set as `algorithm.<name>` or passed through as `algorithm.trl.<name>`.
TRL_CHOICES = ("loss_type", "scale_rewards", "importance_sampling_level", "multi_objective_aggregation", "vllm_importance_sampling_mode")
# TRL config fields that rlvr fills from another key: `algorithm.trl.<field>` would clash with it.
SET_ELSEWHERE = {
    "seed": "seed",
    "output_dir": "hydra.run.dir",
    "run_name": "hydra.run.dir",
    "report_to": "logging.wandb",
    "save_strategy": "algorithm.save_steps",
    "eval_strategy": "algorithm.eval_steps",
    "reward_weights": "reward.functions.<name>.weight",
    "use_cpu": "hardware.device",
    "bf16": "hardware.precision",
    "fp16": "hardware.precision",
    "tf32": "hardware.tf32",
    "activation_checkpointing": "hardware.activation_checkpointing",
    "gradient_checkpointing": "hardware.activation_checkpointing",
    "fsdp": "hardware.sharding",
    "fsdp_config": "hardware.sharding",
    "deepspeed": "hardware.sharding",
    "use_vllm": "algorithm.rollout",
    "vllm_mode": "algorithm.vllm.mode",
    "vllm_server_base_url": "algorithm.vllm.server_base_url",
    "vllm_gpu_memory_utilization": "algorithm.vllm.gpu_memory_utilization",
    "vllm_tensor_parallel_size": "algorithm.vllm.tensor_parallel_size",
    "vllm_enable_sleep_mode": "algorithm.vllm.sleep_mode",
}


def trl_duplicate(field_name: str) -> str | None:
    """The rlvr key that already sets TRL's `field_name`, if one does (`algorithm.trl.*` must not repeat it)."""
    if field_name in SET_ELSEWHERE:
        return SET_ELSEWHERE[field_name]
    first_class = {f.name for f in dataclasses.fields(AlgorithmConfig)} - {"name", "trl", "fine_grained", "rollout", "vllm"}
    return f"algorithm.{field_name}" if field_name in first_class else None


def trl_choices(config_class: type, field_name: str) -> frozenset[str]:
    """The values TRL's docstring of `config_class` lists for `field_name` (empty if it lists none).

    A list ("Supported values are:" and one `- "value": ...` bullet per value) gives its bullet heads;
    an entry without bullets (importance_sampling_level) gives every quoted value it names.
    """
    lines = (inspect.getdoc(config_class) or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(f"{field_name} (`")), None)
    if start is None:
        return frozenset()
    indent = len(lines[start]) - len(lines[start].lstrip())
    entry = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        entry.append(line.strip())
    bullets = [line.split(":", 1)[0] for line in entry if line.startswith("- ")]
    return frozenset(re.findall(r'`"(\w+)"`', " ".join(bullets or entry)))


def _check_against_trl(algorithm: dict) -> None:
    """`algorithm.trl.*`: each a field of the recipe's TRL config that no other key sets already; and
    every knob with a list of values in TRL's docs one of them. Runs after CHOICES (a known recipe)."""
    import trl

    from rlvr.recipes import TRL_CONFIGS

    config_class = getattr(trl, TRL_CONFIGS[algorithm["name"]])
    known = sorted(f.name for f in dataclasses.fields(config_class))
    for key, value in algorithm["trl"].items():
        if (owner := trl_duplicate(key)) is not None:
            raise ConfigError(f"algorithm.trl.{key}={value} repeats {owner}: set {owner} instead")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {owner}?)" if close and (owner := trl_duplicate(close[0])) else did_you_mean(key, known)
            raise ConfigError(f"algorithm.trl.{key} is not a {config_class.__name__} field{hint}")
    for key in TRL_CHOICES:
        for prefix, values in (("algorithm.", algorithm), ("algorithm.trl.", algorithm["trl"])):
            allowed = trl_choices(config_class, key) if key in known else frozenset()
            if key in values and allowed and (error := choice_error(prefix + key, values[key], sorted(allowed))):
                raise ConfigError(f"{error} (TRL's {config_class.__name__} choices)")


def range_problem(values, key: str) -> str | None:
    """'<key>=<value> must be <range>' when `key` (one of RANGES) holds a value outside its range in `values`."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(values, key)
    return f"{key}={value} must be {RANGES[key]}" if value is not None and not RANGES[key].admits(value) else None


def check_ranges(cfg) -> None:
    """Every value within what it may be, in one line, before anything loads: interpolations that
    resolve and fit their type, numbers in `RANGES`, strings in `CHOICES`, `algorithm.trl.*` names among
    the TRL config's fields, and strings among TRL's documented choices. Imports trl (for its config's fields)
    where `cfg` has an algorithm, so it runs at run time only, never while composing. The keys `cfg`
    lacks (an app's config without some group) are not looked at."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:  # every interpolation resolved; one line naming the key whose value does not fit
        values = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{exc.full_key}: {str(exc).splitlines()[0]}") from exc
    for key in RANGES:
        if (problem := range_problem(values, key)) is not None:
            raise ConfigError(problem)
    for key in CHOICES:
        value = OmegaConf.select(values, key)
        if isinstance(value, str) and (error := choice_error(key, value, allowed_values(key))):
            raise ConfigError(error)
    if "dataset" in values:
        _check_mixer(OmegaConf.to_container(values.dataset.mixer))
    if "eval" in values:  # rlvr.run's and rlvr.eval's configs; rlvr.score's holds the reward alone
        _check_eval(OmegaConf.to_container(values.eval))
    if "algorithm" in values:
        _check_against_trl(OmegaConf.to_container(values.algorithm))


def conf_dir() -> str:
    """rlvr's config tree: `rlvr/conf/` in an installed wheel (setup.py puts it there), else the
    clone's top-level `conf/` (an editable install, or PYTHONPATH pointing at the clone)."""
    package = Path(__file__).resolve().parent
    installed, clone = package / "conf", package.parent / "conf"
    return str(installed if (installed / "config.yaml").is_file() else clone)


def _check_mixer(mixer: dict) -> None:
    """Each source of `dataset.mixer` a file or Hub dataset, with a fraction (<= 1) or a whole count (> 1) of its rows."""
    for name, amount in mixer.items():
        if str(name).startswith("builtin:"):
            raise ConfigError(f"dataset.mixer['{name}']: a built-in generator is not mixed; name files or Hub datasets")
        number = isinstance(amount, (int, float)) and not isinstance(amount, bool) and math.isfinite(amount)
        if not number or amount <= 0 or (amount > 1 and not float(amount).is_integer()):
            raise ConfigError(f"dataset.mixer['{name}']={amount!r}: must be a fraction in (0, 1] or a whole count > 1")


# The values of each sampling filter that leave the sampling distribution as it is (the filter off)
SAMPLING_FILTERS = {"top_k": (0, None), "top_p": (1.0, None), "min_p": (0.0, None), "repetition_penalty": (1.0, None)}
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "seed")  # eval's, of its n sampled completions


def _check_eval(evaluation: dict) -> None:
    """What one eval knob's range cannot say: each k within the samples, something to do, no sampling
    setting without samples (it would change nothing)."""
    n, ks = evaluation["n"], evaluation["ks"]
    defaults = EvalConfig()
    if n == 0 and (set_for_samples := [key for key in SAMPLING_KEYS if evaluation[key] != getattr(defaults, key)]):
        raise ConfigError(
            f"eval.{set_for_samples[0]}={evaluation[set_for_samples[0]]} sets the sampled completions, and eval.n=0 samples none "
            "(the greedy completion has no sampling): set eval.n > 0 (e.g. eval=pass_at_k), or leave it out"
        )
    if n == 0 and ks:
        raise ConfigError(
            f"eval.n=0 samples no completion, and eval.ks={ks} takes k of the n samples (pass@k, maj@k): "
            f"set eval.n to at least {max(*ks, 1)}, or eval.ks=[]"
        )
    for k in ks:
        if not 1 <= k <= n:
            raise ConfigError(f"eval.ks={ks}: each k must be in [1, eval.n={n}] (pass@k and maj@k take k of the n samples)")
    if not evaluation["greedy"] and n == 0:
        raise ConfigError(
            "eval.greedy=false and eval.n=0 leave nothing to evaluate: set eval.n > 0 (e.g. eval=pass_at_k)"
            " or eval.before=false eval.after=false eval.every_steps=0"
        )


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="rlvr_schema", node=Config)
    store.store(name="rlvr_eval_schema", node=EvalAppConfig)
    store.store(name="score_schema", node=ScoreConfig)


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def drop_retired_keys(saved: dict, schema: type = Config) -> list[str]:
    """Removes, in place, the keys of a saved config (a run dir's config_resolved.yaml) that `schema`
    no longer has, because an earlier rlvr wrote it; returns their dotted names. Free-form dicts
    (`algorithm.trl`, `reward.functions`, ...) are kept whole."""
    dropped = []

    def walk(node: dict, node_schema: type, prefix: str) -> None:
        fields = _field_types(node_schema)
        for key in list(node):
            if key not in fields:
                dropped.append(prefix + key)
                del node[key]
            elif dataclasses.is_dataclass(fields[key]) and isinstance(node[key], dict):
                walk(node[key], fields[key], f"{prefix}{key}.")

    walk(saved, schema, "")
    return dropped


def check_key(path: str, schema: type = Config) -> bool:
    """Raise ConfigError if the dotted `path` names no field of `schema`; True if it names a schema
    field, False if it ends inside a free-form dict (where anything goes)."""
    prefix, root, parts = "", schema, path.split(".")
    for index, part in enumerate(parts):
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return False
        fields = _field_types(schema)
        if part not in fields:
            cutoff = 0.6 if len(part) > 3 else 0.5  # a short key's one wrong letter (eval.kz) halves the ratio
            hint = did_you_mean(part, sorted(fields), cutoff, prefix)
            if not hint and (elsewhere := paths_named(part, root)):  # its group left out or another's (max_steps)
                hint = f" (did you mean '{'.'.join([elsewhere[0], *parts[index + 1 :]])}'?)"
            raise ConfigError(f"unknown config key '{prefix}{part}'{hint}")
        schema = fields[part]
        prefix += part + "."
    return True


def paths_named(name: str, schema: type, prefix: str = "") -> list[str]:
    """The dotted paths of `schema`'s fields, at any depth, whose last part is `name`."""
    found = []
    for key, kind in _field_types(schema).items():
        if key == name:
            found.append(prefix + key)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found += paths_named(name, kind, f"{prefix}{key}.")
    return found


# Command-line choices that need an optional extra: {choice prefix: (module it needs, the extra)}.
EXTRAS = {"hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna")}


def check_extras(args: list[str]) -> None:
    """A choice whose optional extra is not installed: one line saying which (Hydra's own error
    lists the options it found instead)."""
    import importlib.util

    for arg in args:
        for prefix, (module, extra) in EXTRAS.items():
            if arg.startswith(prefix) and importlib.util.find_spec(module) is None:
                raise ConfigError(f"{arg} needs the '{extra}' extra: pip install 'rlvr[{extra}]'")


def check_hydra_modes(args: list[str]) -> None:
    """Hydra runs, sweeps (`-m`), prints a config (`--cfg`), prints info (`--info`) or completes
    the shell, one at a time: two of them were a ValueError traceback from Hydra."""
    from hydra._internal.utils import get_args_parser

    parsed, _ = get_args_parser().parse_known_args(args)
    modes = {
        "--run": parsed.run,
        "-m": parsed.multirun,
        "--cfg": parsed.cfg is not None,
        "--info": parsed.info is not None,
        "--shell-completion": parsed.shell_completion,
    }
    given = [flag for flag, on in modes.items() if on]
    if len(given) > 1:
        advice = " To see a sweep's job, drop -m and give each swept key one value." if "-m" in given else ""
        raise ConfigError(f"{' and '.join(given)}: Hydra does one of these at a time.{advice}")


def searchpath_dirs(args: list[str]) -> list[str]:
    """The `file://` directories of the command line's `hydra.searchpath`."""
    return [path for arg in args if arg.lstrip("+").startswith("hydra.searchpath=") for path in re.findall(r"file://([^,\]'\"\s]+)", arg)]


def check_searchpath(args: list[str]) -> None:
    """A `hydra.searchpath` directory on the command line that does not exist (Hydra warns and goes on,
    and then says only that the option the user's dir holds does not exist)."""
    for path in searchpath_dirs(args):
        if "${" not in path and not Path(path).is_dir():  # an interpolation: Hydra resolves it
            raise ConfigError(f"hydra.searchpath: {path} is not a directory")


def check_overrides(args: list[str], schema: type = Config, groups: frozenset[str] = frozenset()) -> None:
    """Pre-flight: reject overrides naming no schema key, before Hydra composes anything.

    `+a.b=1` is checked like `a.b=1` (Hydra would add a typo silently), and refused when `a.b` is a
    schema key (Hydra's own refusal takes several lines); `+algorithm.trl.<field>` is refused when an
    rlvr key sets that field. Group choices (`model=tiny`), deletions (`~k`) and `hydra.*` keys are
    left to Hydra, which knows them.
    """
    for arg in args:
        if arg.startswith(("-", "~")) or "=" not in arg:
            continue
        written, value = arg.split("=", 1)
        key = written.lstrip("+")
        if (key in groups or "/" in key) and value.strip() == "null":  # Hydra's ValueError traceback
            raise ConfigError(f"'{arg}': a config group takes the name of one of its options; to leave the group out, write ~{key}")
        if key.startswith("hydra") or key in groups or "/" in key or "@" in key:
            continue
        if check_key(key, schema) and written.startswith("+") and not written.startswith("++"):
            raise ConfigError(f"'{written}': {key} is already a config key: drop the '+' ({key}=...)")
        if issubclass(schema, Config) and key.startswith("algorithm.trl.") and (owner := trl_duplicate(key.split(".")[2])):
            raise ConfigError(f"'{written}' repeats {owner}: set {owner} instead")


GLOBAL_PACKAGE_HINT = " (an experiment preset sets keys of the whole config: start it with the line '# @package _global_')"


def preset_error_line(exc: BaseException, schema: type = Config) -> str | None:
    """One line for Hydra's error about a preset that does not fit the schema (an unknown key, a
    value of the wrong type, in rlvr's presets or a user's), or None for any other error."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if header := re.match(r"In '(experiment/[^']+)': (Could not override '\w+@experiment\.[^']*')", str(exc)):  # its defaults list
        return f"{header.group(1)}.yaml: {header.group(2)}{GLOBAL_PACKAGE_HINT}"
    cause = exc.__cause__ or exc.__context__  # Hydra raises it inside `except OmegaConfBaseException`
    preset = re.match(r"In '([^']+)'", str(exc))
    if not (isinstance(cause, OmegaConfBaseException) and cause.full_key and preset):
        return None
    problem = f"{cause.full_key}: {str(cause).splitlines()[0]}"
    if isinstance(cause, ConfigKeyError):
        try:
            check_key(cause.full_key, schema)
        except ConfigError as unknown:
            problem = str(unknown)
    if preset.group(1).startswith("experiment/") and cause.full_key.split(".")[0] == "experiment":  # its keys went under `experiment`
        problem += GLOBAL_PACKAGE_HINT
    return f"{preset.group(1)}.yaml: {problem}"


def missing_option_line(exc: BaseException) -> str | None:
    """One line for a config group option that does not exist (`reward=gsm8k_strct`): the closest option
    and the group's options, or None for any other error."""
    import sys

    from hydra.errors import MissingConfigException

    if not (isinstance(exc, MissingConfigException) and "/" in (exc.missing_cfg_file or "")):
        return None
    group, option = exc.missing_cfg_file.rsplit("/", 1)
    options = exc.options or group_options(group)  # Hydra names none for an entry of a list of options
    if not options:
        return None
    typed = any(arg.lstrip("+~").startswith(f"{group}=") and option in arg for arg in sys.argv[1:])
    where = "" if typed else f" (named in {preset_naming(group, option, exc) or 'a preset'}'s defaults list)"
    hint = did_you_mean(option, options, prefix=f"{group}=")
    return f"{group}={option}{where}: no such option{hint}; the {group} options: {', '.join(options)}"


def preset_naming(group: str, option: str, exc: BaseException) -> str | None:
    """The file of a preset chosen on the command line whose defaults list names `group: option`, on
    the search path Hydra's error lists, or None. Hydra's own "In '...'" names groups.yaml, the
    primary config's list the preset's override entry replaces."""
    import sys

    import yaml

    folders = re.findall(r"path=file://(\S+)", str(exc))
    for chosen in filter(None, (re.fullmatch(r"[+~]*([\w/-]+)=([\w.-]+)", arg) for arg in sys.argv[1:])):
        for path in (Path(folder, chosen[1], f"{chosen[2]}.yaml") for folder in folders):
            try:
                entries = yaml.safe_load(path.read_text()).get("defaults") or []
            except (OSError, ValueError, AttributeError, yaml.YAMLError):
                continue
            for entry in (e for e in entries if isinstance(e, dict)):
                if any(key.removeprefix("override ").strip("/ ") == group and value == option for key, value in entry.items()):
                    return str(path)
    return None


# The free-form mappings: their keys are the user's (file paths, TRL fields, generator arguments, Optuna's search space)
MAPPINGS = ("dataset.mixer", "dataset.generator", "algorithm.trl", "hydra.sweeper.params")


def command_line_error_line(exc: BaseException) -> str | None:
    """One line for Hydra's error about the command line, or None for any other error: a key the
    config does not hold (the closest of its neighbours named), a value of the wrong type, the override
    grammar (`seed=1,2` without -m, an unquoted `{`), a `--config-dir` that does not exist."""
    from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if not isinstance(exc, (ConfigCompositionException, OverrideParseException, SearchPathException)):
        return None
    cause = exc.__cause__ or exc.__context__
    override = re.match(r"(?:Could not override '|Error merging override )([^'\s]+)", str(exc))
    missing = isinstance(cause, (ConfigKeyError, ConfigAttributeError))
    if override and missing and getattr(cause, "parent_node", None) is not None:
        if override[1] in MAPPINGS:  # `dataset.mixer={a.jsonl: 30}` merges into the schema's empty mapping, key by key
            return (
                f"{override[1]}: to set the whole mapping, write '++{override[1]}={{...}}' (Hydra merges a plain {override[1]}= key by key)"
            )
        parent, key = cause.full_key.rpartition(".")[0], str(cause.key)
        keys = [str(k) for k in cause.parent_node.keys()]
        if not keys:  # a free-form mapping left empty (algorithm.trl)
            return f"{override[1]}: {parent} holds no keys yet: to add one, start the override with + (+{override[1]}=...)"
        return (
            f"{override[1]}: {parent or 'the config'} has no '{key}'{did_you_mean(key, keys)}; its keys: {', '.join(keys)} "
            f"(to add a key, start the override with +)"
        )
    if override and isinstance(cause, OmegaConfBaseException):  # a value that does not fit its key's type
        return f"{override[1]}: {str(cause).splitlines()[0]}"
    lines = [line.strip() for line in str(exc).split("\n\n")[0].splitlines()]
    said = "; ".join(line.rstrip(".") for line in lines if line)
    if isinstance(exc, OverrideParseException) and exc.override:  # Hydra's message does not name it
        quote = re.search(r"[\s{}~]", exc.override.partition("=")[2])
        return f"'{exc.override}': {said}" + ("; a value with spaces, braces or ~ goes in quotes: key='\"...\"'" if quote else "")
    return said


def group_options(group: str) -> list[str]:
    """The options of a config group on the search path of the app being composed (none outside one)."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return []
    return GlobalHydra.instance().config_loader().get_group_options(group)


def not_utf8_line(exc: BaseException) -> str | None:
    """One line for a preset that is not UTF-8 text, naming the file, or None for any other error."""
    from rlvr._compat import hydra_file_being_read

    while exc is not None and not isinstance(exc, UnicodeDecodeError):
        exc = exc.__cause__ or exc.__context__
    if exc is None or (path := hydra_file_being_read(exc)) is None:
        return None
    return f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): save it as UTF-8"


def yaml_error_line(exc: BaseException) -> str | None:
    """One line for a preset that is not valid YAML (the file, where, what the parser expected), or
    None if `exc` (or what caused it) is no YAML error raised while reading a preset."""
    import yaml

    while exc is not None and not isinstance(exc, yaml.YAMLError):
        exc = exc.__cause__ or exc.__context__
    if exc is None or not any(  # raised while one of Hydra's config sources read a preset
        m.startswith("hydra._internal.core_plugins.") and m.endswith("config_source") for m in modules_raised_through(exc)
    ):
        return None
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"a preset is not valid YAML: {str(exc).splitlines()[0]}"
    mark = exc.problem_mark
    where = f"{mark.name} is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        where += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return where


def hydra_error_line(exc: BaseException, schema: type = Config) -> str | None:
    """One line for an error of Hydra's composition that rlvr words (a preset that does not fit the
    schema or does not parse, an option that does not exist, a command line Hydra refuses), else None."""
    from hydra.errors import ConfigCompositionException

    line = preset_error_line(exc, schema) if isinstance(exc, ConfigCompositionException) else None
    return line or missing_option_line(exc) or yaml_error_line(exc) or not_utf8_line(exc) or command_line_error_line(exc)


def one_line_preset_errors(prog: str, schema: type = Config, report=None) -> None:
    """Make Hydra report a preset that does not fit the schema (an unknown key, a value of the wrong
    type) or is not valid YAML, in rlvr's presets or a user's, a group option that does not exist and
    a command line it refuses, in one line, exit code 2. `report(exc, prog)`
    may report any other exception itself and return the exit code (None: not one it reports).

    Hydra words these errors in seven lines (a YAML error: a 60-line traceback) and offers no hook to
    word them otherwise, so its reporter is wrapped (rlvr._compat.wrap_hydra_reporter).
    """
    import sys

    from rlvr._compat import wrap_hydra_reporter

    def one_line(func):
        def composing():
            try:
                return func()
            except Exception as exc:
                if (line := hydra_error_line(exc, schema)) is not None:
                    print(f"{prog}: error: {line}", file=sys.stderr)
                    sys.exit(2)
                if report is None or (code := report(exc, prog)) is None:
                    raise
                sys.exit(code)

        return composing

    wrap_hydra_reporter(one_line)


def exit_on_unknown_keys(prog: str, args: list[str], schema: type = Config, groups: frozenset[str] = frozenset()) -> None:
    """`check_overrides` for a command-line entry point: one line on stderr and exit code 2. A help
    command (`rlvr --help | head`) is ended by a closed pipe as Unix tools are, not by a BrokenPipeError
    traceback from Hydra's print."""
    import signal
    import sys

    if {"--help", "-h", "--hydra-help"} & set(args):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        check_hydra_modes(args)
        check_searchpath(args)
        check_overrides(args, schema, groups)
        check_extras(args)
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
