"""FastSamplingMixin changes nothing but time: same seed, same completions, losses, rewards and weights as TRL."""

import pytest
import torch
from omegaconf import OmegaConf

from rlvr.config import TinyModelConfig
from rlvr.trainers.fast_sampling import FastSamplingMixin, repeated_groups


def digit_reward(completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / (1 + len(c)) for c in completions]


def train(trainer_class, tmp_path, **config):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from rlvr.models import build_tiny_model, build_tiny_tokenizer

    class Rows(TrainerCallback):
        rows = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.rows.append(dict(logs))

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0)
    calls = {"generate": 0}
    generate = model.generate

    def counting_generate(*args, **kwargs):
        calls["generate"] += 1
        return generate(*args, **kwargs)

    model.__class__.generate, original = (lambda self, *a, **k: counting_generate(*a, **k)), model.__class__.generate
    try:
        args = GRPOConfig(output_dir=str(tmp_path / trainer_class.__name__), max_steps=config.pop("max_steps", 3), per_device_train_batch_size=16,
                          num_generations=4, max_completion_length=8, learning_rate=1e-3, logging_steps=1,
                          save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True, **config)
        rows = Rows()
        trainer = trainer_class(model=model, reward_funcs=digit_reward, args=args, processing_class=tokenizer,
                                train_dataset=Dataset.from_list([{"prompt": f"{i}+{i % 7}="} for i in range(64)]),
                                callbacks=[rows])
        trainer.train()
    finally:
        model.__class__.generate = original
    return rows.rows, [p.detach().clone() for p in model.parameters()], calls["generate"]


@pytest.mark.parametrize("config", [{}, {"temperature": 0.8}, {"top_p": 0.95}])
def test_training_with_fast_sampling_equals_trl(tmp_path, config):
    from trl import GRPOTrainer

    class Fast(FastSamplingMixin, GRPOTrainer):
        pass

    trl_rows, trl_weights, trl_generate_calls = train(GRPOTrainer, tmp_path, **config)
    fast_rows, fast_weights, fast_generate_calls = train(Fast, tmp_path, **config)
    assert trl_generate_calls == 3 and fast_generate_calls == 0  # the fast path did run
    keys = ["loss", "reward", "reward_std", "completions/mean_length", "entropy", "grad_norm"]
    for trl_row, fast_row in zip(trl_rows[:3], fast_rows[:3], strict=True):
        assert {k: fast_row[k] for k in keys} == pytest.approx({k: trl_row[k] for k in keys}, rel=1e-6, abs=1e-7)
    for a, b in zip(trl_weights, fast_weights, strict=True):
        torch.testing.assert_close(a, b)


def test_repeated_groups():
    assert repeated_groups([[1], [1], [2], [2]], 2) == ([[1], [2]], 2)
    assert repeated_groups([[1], [2], [1], [2]], 2) == ([[1], [2], [1], [2]], 1)  # not TRL's order: no sharing
    assert repeated_groups([[1], [1], [1]], 2) == ([[1], [1], [1]], 1)


@pytest.mark.parametrize("config", [{"top_k": 50}, {"temperature": 0.8, "top_p": 0.95}])
def test_unproven_sampling_settings_take_trls_path(tmp_path, config):
    from trl import GRPOTrainer

    class Fast(FastSamplingMixin, GRPOTrainer):
        pass

    *_, generate_calls = train(Fast, tmp_path, max_steps=1, **config)
    assert generate_calls == 1
