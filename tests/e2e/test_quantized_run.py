"""model.quantization=8bit|4bit: bitsandbytes weights with LoRA on top (QLoRA), and the one-line
refusals of what cannot work, before anything loads."""

import json
import os

import pytest
from omegaconf import OmegaConf

from conftest import TINY_RUN, one_line_error, process_state_kept, run_cli
from rlvr.tracking.outputs import read_jsonl
from rlvr.config import Config
from rlvr.errors import ConfigError
from rlvr.models.loading import check_bitsandbytes, check_quantization

LENGTH_REWARD = "def length(completions, **kwargs):\n    return [len(c) / 10 for c in completions]\n"


def config(**model):
    cfg = OmegaConf.structured(Config)
    cfg.model = OmegaConf.merge(cfg.model, {"name_or_path": "/models/any", "lora": {"enabled": True}, **model})
    return cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name_or_path": "tiny"}, "model.quantization=4bit applies as weights load: the built-in tiny model is made in memory"),
        ({"lora": {"enabled": False}}, "model.quantization=4bit freezes the quantized weights: train LoRA on top"),
        ({"warmup_sft_steps": 5}, "model.quantization=4bit cannot be combined with model.warmup_sft_steps=5"),
        ({"reasoning_vocab_size": 8}, "model.quantization=4bit cannot be combined with model.reasoning_vocab_size=8"),
    ],
)
def test_what_cannot_train_is_refused_in_one_line(change, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check_quantization(config(**{"quantization": "4bit", **change}), "cpu")


def test_a_quantized_reward_model_is_refused():
    cfg = config(quantization="8bit")
    cfg.algorithm.name = "reward_model"
    with pytest.raises(ConfigError, match="^model.quantization=8bit cannot be combined with algorithm=reward_model"):
        check_quantization(cfg, "cpu")


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_bitsandbytes_runs_here_on_cpu_and_says_where_it_cannot(bits):
    check_bitsandbytes(bits, "cpu")  # this CPU machine: bitsandbytes' CPU backend quantizes and multiplies
    with pytest.raises(ConfigError, match=f"^model.quantization={bits}: bitsandbytes .* cannot run on cuda: "):
        check_bitsandbytes(bits, "cuda")  # no GPU here


@pytest.mark.slow
def test_quantizing_the_tiny_model_is_one_line_before_anything_loads(tmp_path):
    result = run_cli("rlvr.run", "model.quantization=4bit", "model.lora.enabled=true", f"hydra.run.dir={tmp_path}")
    assert one_line_error(result).startswith("rlvr: error: model.quantization=4bit applies as weights load")
    assert not (tmp_path / "config_resolved.yaml").exists()


@pytest.mark.slow
def test_qlora_run_trains_its_adapter(tmp_path):
    import torch
    from safetensors.torch import load_file

    from rlvr.config import TinyModelConfig
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()  # a pretrained model directory: quantization happens as it loads
    base = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "length_reward.py").write_text(LENGTH_REWARD)  # completions differ in length: a gradient
    short = [arg for arg in TINY_RUN if not arg.startswith("model.warmup_sft_steps")]
    result = run_cli(
        "rlvr.run",
        *short,
        "algorithm.max_steps=2",
        "eval.before=false",
        "model.warmup_sft_steps=0",
        f"model.name_or_path={tmp_path / 'base'}",
        "model.quantization=4bit",
        "model.lora.enabled=true",
        "reward=gsm8k_flexible",
        "+reward.functions.length={_target_: length_reward.length, weight: 1.0}",
        "algorithm.learning_rate=1e-2",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["train_steps"] == 2
    adapter = load_file(run / "final_adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in adapter.items() if "lora_B" in name]
    assert lora_b and any(torch.count_nonzero(w) for w in lora_b)  # LoRA's B starts at 0: it trained
    # merged into the 4-bit base, the adapter's updates round away (the merged model evaluated as the base): adapter only
    assert not (run / "final_model").exists()
    assert "final_adapter/ only: merged into the 4-bit base, the adapter's updates would round away" in (run / "run.log").read_text()
    # its size as the values its weights hold (the packed 4-bit storage counted 0.06M of 0.09M)
    assert f": {base.num_parameters() / 1e6:.2f}M parameters;" in (run / "run.log").read_text()
    # and rlvr.eval puts it on the base unmerged, as the run evaluated it: merged, it evaluated the base
    evaluated = run_cli(
        "rlvr.eval",
        f"target={run / 'final_adapter'}",
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))},
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    completions = [[row["completion"] for row in read_jsonl(run / "eval" / name)] for name in ("after.jsonl", "final_adapter.jsonl")]
    assert completions[0] == completions[1]


def test_bitsandbytes_line_about_casting_fp32_inputs_is_logged_once(caplog):
    """An 8-bit run in fp32 logged it on every matmul: 168 lines in 2 steps. (warnings.filterwarnings did
    nothing: bitsandbytes logs it.)"""
    import logging

    import bitsandbytes as bnb
    import torch

    from rlvr.run import set_up_process

    with process_state_kept():
        set_up_process(OmegaConf.structured(Config))
        layer = bnb.nn.Linear8bitLt(16, 16, has_fp16_weights=False).to("cpu").eval()  # quantized; the eval's path
        with caplog.at_level(logging.WARNING, logger="bitsandbytes"):
            for _ in range(3):
                layer(torch.ones(2, 16))
    casts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MatMul8bitLt")]
    assert casts == ["MatMul8bitLt: inputs will be cast from torch.float32 to float16 during quantization"]
