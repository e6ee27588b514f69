"""The SFT warm-up kept once per machine (rlvr/recipes/warmup_cache.py): a run that loads it trains
what a run that trains it trains; anything the warm-up depends on changes its key."""

import json
import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf

from conftest import completed_run
from rlvr.config import Config
from rlvr.errors import RlvrError
from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
from rlvr.recipes.common import bind_chat_template_kwargs
from rlvr.recipes.warmup import sft_warmup
from rlvr.recipes.warmup_cache import KIND, warmup_key

ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(6) for b in range(6)]


def config(**model):
    return OmegaConf.merge(OmegaConf.structured(Config), {"model": {"warmup_sft_steps": 2, "warmup_sft_batch_size": 4, **model}})


def warm_up(cfg, tmp_path, monkeypatch, rows=ROWS):
    """A tiny model (seed 0) after `sft_warmup` with the machine cache under tmp_path; (model, loss)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(cfg.model.tiny, tokenizer, seed=0)
    return model, sft_warmup(model, tokenizer, Dataset.from_list(rows), cfg, {"use_cpu": True}, seed=0)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_a_kept_warm_up_is_loaded_whole_and_leaves_the_model_a_trained_one_leaves(tmp_path, monkeypatch, caplog):
    """The second warm-up is loaded (its log line says so) with the first one's weights and loss, and
    the random states the first left (the hybrid reward's calibration samples next: it sampled other
    completions); the warm-up trained leaves none of the SFT trainer's traces (accelerate's mark that the
    model is prepared made the RL trainer skip preparing it; `use_cache` off), so both leave one model."""
    tokenizer = build_tiny_tokenizer()
    fresh = build_tiny_model(config().model.tiny, tokenizer, seed=0)
    with caplog.at_level("INFO"):
        trained, trained_loss = warm_up(config(), tmp_path, monkeypatch)
        after_training = draws()
        loaded, loaded_loss = warm_up(config(), tmp_path, monkeypatch)
        assert draws() == after_training
    lines = [m for m in caplog.messages if m.startswith("SFT warm-up: 2 steps")]
    assert len(lines) == 2 and "loaded" not in lines[0] and "(loaded: trained before on this machine" in lines[1], lines
    assert loaded_loss == trained_loss
    weights = trained.state_dict()
    assert all(loaded.state_dict()[name].equal(tensor) for name, tensor in weights.items())
    assert not all(fresh.state_dict()[name].equal(tensor) for name, tensor in weights.items())  # it trained
    for model in (trained, loaded):
        assert set(vars(model)) == set(vars(fresh)) and model.config.to_dict() == fresh.config.to_dict()
        assert model.training


def test_a_warm_up_is_trained_again_with_the_cache_off_and_each_input_has_its_own(tmp_path, monkeypatch, caplog):
    with caplog.at_level("INFO"):
        warm_up(config(), tmp_path, monkeypatch)
        warm_up(config(warmup_sft_cache=False), tmp_path, monkeypatch)  # trains: nothing loaded
        warm_up(config(warmup_sft_learning_rate=1e-2), tmp_path, monkeypatch)
        warm_up(config(), tmp_path, monkeypatch, rows=ROWS[:-1])
    assert not [m for m in caplog.messages if "loaded" in m]
    assert len(list((tmp_path / "cache" / "rlvr" / KIND).iterdir())) == 3


def test_the_key_covers_the_weights_the_tokenizer_and_the_settings(tmp_path):
    from trl import SFTConfig

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(config().model.tiny, tokenizer, seed=0)
    args = SFTConfig(output_dir=str(tmp_path / "a"), use_cpu=True, max_steps=2, report_to=[])
    key = warmup_key(model, tokenizer, ROWS, args)
    assert warmup_key(model, tokenizer, ROWS, SFTConfig(output_dir=str(tmp_path / "b"), use_cpu=True, max_steps=2, report_to=[])) == key
    assert warmup_key(model, tokenizer, ROWS, SFTConfig(output_dir=str(tmp_path / "a"), use_cpu=True, max_steps=3, report_to=[])) != key
    assert warmup_key(build_tiny_model(config().model.tiny, tokenizer, seed=1), tokenizer, ROWS, args) != key
    tokenizer.padding_side = "left" if tokenizer.padding_side == "right" else "right"
    assert warmup_key(model, tokenizer, ROWS, args) != key
    key = warmup_key(model, tokenizer, ROWS, args)
    bind_chat_template_kwargs(tokenizer, OmegaConf.create({"algorithm": {"trl": {"chat_template_kwargs": {"enable_thinking": False}}}}))
    assert warmup_key(model, tokenizer, ROWS, args) != key  # the pairs render otherwise
    tokenizer.pad_token = None  # TRL would set one on the tokenizer: a change a kept warm-up lacks
    assert warmup_key(model, tokenizer, ROWS, args) is None


@pytest.mark.parametrize(("name", "content"), [("model.safetensors", b"\0" * 64), ("record.json", b"{}")])
def test_an_unreadable_kept_warm_up_is_one_line_naming_it(tmp_path, monkeypatch, name, content):
    warm_up(config(), tmp_path, monkeypatch)
    [kept] = (tmp_path / "cache" / "rlvr" / KIND).iterdir()
    (kept / name).write_bytes(content)
    with pytest.raises(RlvrError, match=f"the machine cache's copy of this SFT warm-up \\({kept}\\) cannot be read .*delete it"):
        warm_up(config(), tmp_path, monkeypatch)


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch, caplog):
    """safetensors reports a full disk as its own error, not an OSError: it failed the run after its warm-up."""
    import safetensors.torch
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full)
    with caplog.at_level("WARNING"):
        _, loss = warm_up(config(), tmp_path, monkeypatch)
    assert loss > 0
    assert "SFT warm-up: not kept in the machine cache (Error while serializing: I/O error: No space left on device" in caplog.text
    assert not list((tmp_path / "cache" / "rlvr" / KIND).iterdir())  # no half-written entry


@pytest.mark.slow
def test_a_run_that_loads_its_warm_up_trains_what_a_run_that_trains_it_trains(tmp_path):
    """With LoRA, whose adapter's initial values are drawn after the warm-up."""
    args = ["logging=disabled", "algorithm.max_steps=2", "model.lora.enabled=true", "dataset.max_eval_samples=16"]
    completed_run(tmp_path / "keeps", *args)  # keeps the warm-up, if no earlier run has
    loads, trains = completed_run(tmp_path / "loads", *args), completed_run(tmp_path / "trains", *args, "model.warmup_sft_cache=false")
    assert "SFT warm-up: 100 steps, final loss" in (trains / "run.log").read_text()
    assert "(loaded: trained before on this machine" in (loads / "run.log").read_text()
    assert "(loaded:" not in (trains / "run.log").read_text()
    for name in ("rollouts.jsonl", "eval/before.jsonl", "eval/after.jsonl"):
        assert (loads / name).read_text() == (trains / name).read_text(), name

    def metrics(run):
        return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if "seconds" not in k}

    assert metrics(loads) == metrics(trains)
