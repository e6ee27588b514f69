"""TRL's RewardTrainer plus the chosen/rejected reward means, which it does not log, and a token count
that a resume continues."""

from __future__ import annotations

import torch
from trl import RewardTrainer

from rlvr._compat import counting_reward_tokens_in_state
from rlvr.hardware.sharding import ShardedTrainerMixin


class PreferenceRewardTrainer(ShardedTrainerMixin, RewardTrainer):
    """Overrides `compute_loss` only to add `chosen_reward` and `rejected_reward` (means over pairs) to the metrics, and to keep
    the `num_tokens` count where a checkpoint holds it."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        with counting_reward_tokens_in_state(self):  # an eval logs the count too (a trainer restored or finished has it in its state only)
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            # every pair's score, not the batch's mean: the logged mean (of the list) is then the mean over pairs,
            # where a mean of batch means let a partial last eval batch count as much as a whole one
            self._metrics[mode]["chosen_reward"].extend(self.accelerator.gather_for_metrics(chosen).tolist())
            self._metrics[mode]["rejected_reward"].extend(self.accelerator.gather_for_metrics(rejected).tolist())
        return (loss, outputs) if return_outputs else loss
