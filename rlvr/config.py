"""Structured schemas for every config group, and the fast pre-flight check of command-line keys.

Hydra merges each group's YAML into these dataclasses, so a YAML typo fails at composition. The
pre-flight check (`check_overrides`) runs before Hydra so that a command-line typo gets one line
that names the key and the closest valid one, instead of Hydra's multi-line struct error.
This module imports no torch/transformers: `--cfg job` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from rlvr.errors import ConfigError


@dataclass
class TinyModelConfig:
    """The built-in random-init model: architecture, tokenizer and shape."""

    architecture: str = "qwen2"  # qwen2 | qwen3
    # bytes: ~260 ids made in code; qwen2.5 | qwen3: the real Qwen BPE tokenizer (rlvr/qwen_tokenizers.py)
    tokenizer: str = "bytes"
    vocab_rows: int | None = None  # rows of the embedding matrix (the real models pad theirs); None: the tokenizer's size
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 256


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
    lora: LoraConfig = field(default_factory=LoraConfig)
    # A second copy of N tokens, usable only inside <think> ... </think> (rlvr/vocab.py); 0 = off.
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
    # For a local train file: a separate eval file; without one, `eval_holdout` rows are held out.
    eval_source: str | None = None
    eval_holdout: int = 100
    prompt_column: str = "question"
    answer_column: str = "answer"
    prompt_template: str = "{question}"
    system_prompt: str | None = None
    chat: bool = False  # prompts as chat messages (instruct models) or plain text
    sft_completion_template: str = "{gold}"  # target text of the warm-up stage
    max_train_samples: int | None = None
    max_eval_samples: int | None = 100
    shuffle_seed: int = 0
    generator: dict[str, Any] = field(default_factory=dict)  # arguments of a builtin generator
    # {name_or_path: fraction (<= 1.0) or count (> 1)}: train on a mixture instead of `source`.
    mixer: dict[str, Any] = field(default_factory=dict)
    preference: PreferenceConfig = field(default_factory=lambda: PreferenceConfig())


@dataclass
class RewardChecksConfig:
    """How rlvr watches every reward's output (rlvr/rewards/checks.py)."""

    failure_warn_frac: float = 0.5  # a call with a larger share of no verdicts (None/timeout/error) warns
    none_patience: int = 20  # this many calls in a row of None for every completion stop the run (0: never)
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
    toy: bool = False  # toy mode: pre-defined rollouts, no generation (experiment=fgrpo_toy)
    toy_steps: int = 20


@dataclass
class AlgorithmConfig:
    """The recipe (`name`) and its hyper-parameters, named exactly as TRL's configs name them.

    One schema for every recipe: each recipe passes TRL the fields its TRL config has.
    """

    name: str = "grpo"  # grpo | fgrpo | reward_model
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0  # an int counts steps; a float < 1 is a fraction of max_steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch_fused"  # transformers' default (torch >= 2.8), also on CPU
    max_steps: int = 100
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8  # GRPO: completions, not prompts; reward_model: pairs
    per_device_eval_batch_size: int = 8
    eval_steps: int | None = None  # reward_model: evaluate every N steps (None: at the end only)
    center_rewards_coefficient: float | None = None  # reward_model: pull mean reward towards 0
    gradient_accumulation_steps: int = 1
    generation_batch_size: int | None = None
    steps_per_generation: int | None = None
    num_generations: int = 8
    max_completion_length: int = 256
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
    save_steps: int = 0  # 0: only the final model
    save_total_limit: int | None = 2
    fine_grained: FineGrainedConfig = field(default_factory=FineGrainedConfig)
    # Any other field of the recipe's TRL config, passed through unchanged (checked at start-up).
    trl: dict[str, Any] = field(default_factory=dict)


@dataclass
class HardwareConfig:
    """What a job runs on: the same meaning locally and on SLURM (launcher presets read the resources)."""

    device: str = "cpu"  # cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16
    torch_threads: int | None = None  # None: torch's default
    activation_checkpointing: bool = False  # a.k.a. gradient checkpointing; slow on CPU
    tf32: bool = False
    # Job resources (hydra/launcher=slurm|local): processes = nodes x tasks_per_node, data-parallel.
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int = 8


@dataclass
class LoggingConfig:
    wandb: str = "disabled"  # online | offline | disabled
    project: str = "rlvr"
    entity: str | None = None
    rollouts: bool = True  # rollouts.jsonl in the run dir
    plots: bool = True
    stage_timing: bool = False  # GRPO: per-stage seconds of each step in metrics.jsonl (rlvr/stage_timing.py)


@dataclass
class EvalConfig:
    before: bool = True
    after: bool = True
    batch_size: int = 64
    max_new_tokens: int | None = None  # None: algorithm.max_completion_length


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    # None: offline exactly when the config names nothing on the Hub.
    offline: bool | None = None
    experiment: str | None = None
    objective: str = "eval_after_accuracy"  # the metric returned to sweepers (Optuna)


@dataclass
class ScoreConfig:
    """`python -m rlvr.score`: score a JSONL of completions with a reward preset."""

    reward: RewardConfig = field(default_factory=RewardConfig)
    input: str = "???"
    output: str | None = None
    completion_column: str = "completion"
    answer_column: str = "answer"


# Knobs that TRL's configs accept but that fail deep inside training (torch's optimizer, `generate`).
MUST_BE_POSITIVE = ("algorithm.learning_rate", "algorithm.max_completion_length", "algorithm.per_device_train_batch_size",
                    "algorithm.gradient_accumulation_steps", "algorithm.num_iterations", "algorithm.temperature",
                    "eval.batch_size")


def check_ranges(cfg) -> None:
    """A one-line error for a non-positive knob, before anything loads."""
    from omegaconf import OmegaConf

    for key in MUST_BE_POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value <= 0:
            raise ConfigError(f"{key}={value} must be > 0")


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="rlvr_schema", node=Config)
    store.store(name="score_schema", node=ScoreConfig)


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _unknown_key_message(key: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown config key '{prefix}{key}'{hint}"


def check_key(path: str, schema: type = Config) -> None:
    """Raise ConfigError if the dotted `path` names no field of `schema` (free-form dicts end the walk)."""
    prefix = ""
    for part in path.split("."):
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return  # inside a dict[str, Any] or a leaf: anything goes
        fields = _field_types(schema)
        if part not in fields:
            raise ConfigError(_unknown_key_message(part, sorted(fields), prefix))
        schema = fields[part]
        prefix += part + "."


def check_overrides(args: list[str], schema: type = Config, groups: frozenset[str] = frozenset()) -> None:
    """Pre-flight: reject `a.b=1` overrides naming no schema key, before Hydra composes anything.

    Group choices (`model=tiny`), additions (`+k=v`), deletions (`~k`) and `hydra.*` keys are left to
    Hydra, which knows them.
    """
    for arg in args:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        if key.startswith("hydra") or key in groups or "/" in key or "@" in key:
            continue
        check_key(key, schema)


def exit_on_unknown_keys(prog: str, args: list[str], schema: type = Config, groups: frozenset[str] = frozenset()) -> None:
    """`check_overrides` for a command-line entry point: one line on stderr and exit code 2."""
    import sys

    try:
        check_overrides(args, schema, groups)
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
