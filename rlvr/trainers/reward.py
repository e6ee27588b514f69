"""TRL's RewardTrainer plus the chosen/rejected reward means, which it does not log."""

from __future__ import annotations

import torch
from trl import RewardTrainer

from rlvr.hardware.sharding import ShardedTrainerMixin


class PreferenceRewardTrainer(ShardedTrainerMixin, RewardTrainer):
    """Overrides `compute_loss` only to add `chosen_reward` and `rejected_reward` to the metrics."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        with torch.no_grad():
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            self._metrics[mode]["chosen_reward"].append(self.accelerator.gather_for_metrics(chosen).mean().item())
            self._metrics[mode]["rejected_reward"].append(self.accelerator.gather_for_metrics(rejected).mean().item())
        return (loss, outputs) if return_outputs else loss
