"""A GRPO run whose rewards carry no signal says so (TRL's frac_reward_zero_std, watched by rlvr)."""

import logging
from types import SimpleNamespace

from rlvr.trainers.fine_grained import FineGrainedGRPOTrainer
from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer


def test_generations_in_a_row_without_a_reward_spread_are_warned_about_once(caplog):
    """A constant reward trained for every step with loss 0 and grad_norm 0, and nothing said so."""
    trainer = SimpleNamespace(
        zero_spread=0, zero_spread_generations=3, accelerator=SimpleNamespace(is_main_process=True), _metrics={"train": {}}
    )
    fractions = [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    warned_after = []
    for generation, fraction in enumerate(fractions, start=1):
        trainer._metrics["train"]["frac_reward_zero_std"] = [fraction]
        with caplog.at_level(logging.WARNING, logger="rlvr.trainers.grpo"):
            RolloutLoggingGRPOTrainer._watch_reward_spread(trainer)
        warned_after += [generation] * len(caplog.records)
        caplog.clear()
    assert warned_after == [6]  # three in a row after the generation with a spread, then not again


def test_fgrpo_watches_its_spans_advantages_instead():
    assert RolloutLoggingGRPOTrainer.zero_spread_generations == 10 and FineGrainedGRPOTrainer.zero_spread_generations is None
