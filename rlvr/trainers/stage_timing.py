"""Per-stage wall time of a GRPO step, added to every logged training row as `stage/<name>_s`.

One instrument for rlvr's trainer and for a plain TRL `GRPOTrainer` (the `make bench` baseline),
so both sides of the comparison are cut into stages the same way. It wraps a trainer instance's
own methods (no subclass needed) with two `perf_counter` calls each: `STAGES`, plus `advantages` for
fine-grained GRPO (what each times: docs/performance.md#the-instrument). The times are per-step means since the previous logged
row. `log` cannot be finished when its own row is written, so a row carries the *previous* logging
call's seconds; that call ran inside this row's `step_seconds`, so the stages still add up. What no
stage covers (GRPO's advantages, padding, the dataloader) is `step_seconds` minus their sum.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict

STAGES = ("generation", "rewards", "logprobs", "forward", "backward", "optimizer", "log")


class StageTimer:
    """Sums of wall seconds per stage since the last logged row, and the number of steps they span."""

    def __init__(self, stages: tuple[str, ...] = STAGES):
        self.stages = stages
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0
        self.last_log_s = 0.0

    def timed(self, stage: str, fn, when=None):
        """`fn` with its wall time added to `stage` (only for calls where `when()` is true, if given)."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if when is not None and not when():
                return fn(*args, **kwargs)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[stage] += time.perf_counter() - started

        return wrapper

    def row(self) -> dict[str, float]:
        """`stage/<name>_s` per-step means for the row being logged; starts the next interval."""
        steps = max(self.steps, 1)
        row = {f"stage/{name}_s": self.totals[name] / steps for name in self.stages if name != "log"}
        row["stage/log_s"] = self.last_log_s
        self.totals.clear()
        self.steps = 0
        return row


def instrument(trainer) -> StageTimer:
    """Time `trainer`'s stages and add them to each training row it logs. Returns the timer."""
    import torch
    from transformers import TrainerCallback

    fine_grained = hasattr(trainer, "span_advantages")
    timer = StageTimer((*STAGES, "advantages") if fine_grained else STAGES)
    trainer._generate = timer.timed("generation", trainer._generate)
    trainer._calculate_rewards = timer.timed("rewards", trainer._calculate_rewards)
    if fine_grained:
        trainer.span_advantages = timer.timed("advantages", trainer.span_advantages)
    trainer._get_per_token_logps_and_entropies = timer.timed(
        "logprobs", trainer._get_per_token_logps_and_entropies, when=lambda: not torch.is_grad_enabled()
    )
    trainer.compute_loss = timer.timed("forward", trainer.compute_loss)
    trainer.accelerator.backward = timer.timed("backward", trainer.accelerator.backward)
    trainer._clip_grad_norm = timer.timed("optimizer", trainer._clip_grad_norm)
    log = trainer.log

    @functools.wraps(log)
    def timed_log(logs, *args, **kwargs):
        started = time.perf_counter()
        if "loss" in logs:  # a training row (evaluation rows carry eval_loss)
            logs.update(timer.row())
        try:
            return log(logs, *args, **kwargs)
        finally:
            timer.last_log_s = time.perf_counter() - started

    trainer.log = timed_log

    class OptimizerStep(TrainerCallback):
        """`optimizer.step()` lies between these two callback events; a step ends at on_step_end."""

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            timer.totals["optimizer"] += time.perf_counter() - self.started

        def on_step_end(self, args, state, control, **kwargs):
            timer.steps += 1

    trainer.add_callback(OptimizerStep())
    return timer
