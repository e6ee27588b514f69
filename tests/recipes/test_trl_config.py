"""The TRL config a default run builds: TRL's defaults where rlvr has no reason to differ."""

import torch
from omegaconf import OmegaConf
from trl import GRPOConfig

from rlvr.config import Config, TinyModelConfig
from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
from rlvr.recipes.common import trl_config


def test_default_optimizer_is_transformers_fused_adamw(tmp_path):
    cfg = OmegaConf.structured(Config)
    args = trl_config(GRPOConfig, cfg, tmp_path, [], {"use_cpu": True})
    assert args.optim == GRPOConfig(output_dir=str(tmp_path), use_cpu=True).optim == "adamw_torch_fused"


def test_fused_adamw_takes_the_for_loop_step_within_float_tolerance():
    """The fused kernel (rlvr's and TRL's default, also on CPU) is the same AdamW update."""
    tokenizer = build_tiny_tokenizer()
    models = [build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0) for _ in range(2)]
    optimizers = [
        torch.optim.AdamW(models[0].parameters(), lr=3e-4, foreach=False),
        torch.optim.AdamW(models[1].parameters(), lr=3e-4, fused=True),
    ]
    ids = tokenizer(["3+4=7", "12+9=21"], padding=True, return_tensors="pt")["input_ids"]
    for _ in range(5):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            model(ids, labels=ids).loss.backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(
        models[0].model.embed_tokens.weight,
        build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0).model.embed_tokens.weight,
    )  # they did train
