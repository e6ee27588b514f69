"""TRL's GRPOTrainer plus rollouts.jsonl: every scored completion with its prediction and rewards."""

from __future__ import annotations

import logging

from trl import GRPOTrainer

from rlvr._compat import TiedWeightsLoadQuietly
from rlvr.errors import RewardError
from rlvr.trainers.stage_timing import instrument
from rlvr.rewards.base import verdicts
from rlvr.rewards.checks import checked_rewards, reward_columns
from rlvr.hardware.sharding import ShardedTrainerMixin
from rlvr.tracking.outputs import JsonlWriter, prompt_id
from rlvr.trainers.vocab import ReasoningVocabMixin

log = logging.getLogger(__name__)


def shortest_decimals(values) -> list[float]:
    """A float32 tensor's values as the shortest decimals that read back to them: a reward of 1.6 that TRL's
    float32 tensor holds is written 1.6 (as rlvr.score writes it), not 1.600000023841858."""
    return [float(str(value)) for value in values.detach().cpu().numpy()]


class RolloutLoggingGRPOTrainer(TiedWeightsLoadQuietly, ShardedTrainerMixin, ReasoningVocabMixin, GRPOTrainer):
    """Overrides `_calculate_rewards` (TRL >= 1.16) only to record what the rewards saw and said.

    `rewards` are rlvr's WeightedRewards, in the same order as the trainer's `reward_funcs`.
    """

    def __init__(
        self, *args, rewards, rollouts: bool = False, rollout_writer: JsonlWriter | None = None, stage_timing: bool = False, **kwargs
    ):
        rewards = checked_rewards(rewards)  # the recipes pass them checked already; anything else gets the defaults
        super().__init__(*args, reward_funcs=[r.fn for r in rewards], **kwargs)
        self.rewards = rewards
        self.reward_columns = reward_columns(rewards)  # in each rollouts row: `rlvr.score` can score it again
        for reward in rewards:  # every rank must reach TRL's gather; errors are raised after it, on all ranks
            reward.fn.defer_errors = self.accelerator.num_processes > 1
        self.rollouts, self.rollout_writer = rollouts, rollout_writer  # every rank makes its rows; the main process writes them
        if stage_timing:  # logging.stage_timing=true: per-stage seconds in metrics.jsonl
            instrument(self)

    # Warn once when no prompt's completions differed in reward for this many generations in a row
    # (None: not watched; fgrpo watches its spans' advantages instead).
    zero_spread_generations: int | None = 10
    zero_spread = 0  # generations in a row so far (in this process: a resume counts afresh)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training and self.zero_spread_generations:
            self._watch_reward_spread()
        return output

    def _watch_reward_spread(self) -> None:
        """Count the training generations in a row in which every prompt's completions scored alike
        (TRL's frac_reward_zero_std, over every process: 1.0), and warn once when they reach
        `zero_spread_generations`: every advantage is then 0, and the rewards move nothing."""
        self.zero_spread = self.zero_spread + 1 if self._metrics["train"]["frac_reward_zero_std"][-1] == 1.0 else 0
        if self.zero_spread == self.zero_spread_generations and self.accelerator.is_main_process:
            log.warning(
                "no prompt's completions have differed in reward for %d generations in a row (frac_reward_zero_std = 1): every "
                "advantage is 0, so the rewards teach nothing; a reward that scores every completion alike, completions that do "
                "not differ (algorithm.temperature), or a task the model always or never solves",
                self.zero_spread,
            )

    def _get_train_sampler(self, dataset=None):
        """TRL's, each epoch's order seeded by the epoch (rlvr._compat.seed_each_epoch): a resume after
        the first epoch draws the order the uninterrupted run drew."""
        from rlvr._compat import seed_each_epoch

        return seed_each_epoch(super()._get_train_sampler(dataset))

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._stop_on_reward_errors()
        if self.rollouts:
            own = slice(self.accelerator.process_index * len(prompts), (self.accelerator.process_index + 1) * len(prompts))
            rows = self._rollout_rows(inputs, prompts, completions, rewards_per_func[own], completion_ids_list)
            if self.accelerator.num_processes > 1:  # every rank's, in rank order, as TRL gathers the rewards
                from accelerate.utils import gather_object

                rows = gather_object(rows)
            if self.rollout_writer is not None:
                self.rollout_writer.write(rows)
        return rewards_per_func

    def _stop_on_reward_errors(self) -> None:
        """Raise a reward's deferred error on every rank at once (before the rewards reach the loss); the
        other ranks' error names the rank and the error, as an eval's does."""
        errors = [e for r in self.rewards if (e := r.fn.take_pending_error()) is not None]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            said = gather_object([str(errors[0]).splitlines()[0] if errors else None])
            if not errors and (first := next(((i, m) for i, m in enumerate(said) if m is not None), None)):
                raise RewardError(f"a reward failed on rank {first[0]}: {first[1]}")
        if errors:
            raise errors[0]

    def _rollout_rows(self, inputs, prompts, completions, rewards_per_func, completion_ids) -> list[dict]:
        weights = self.reward_weights.to(rewards_per_func.device)
        totals = shortest_decimals((rewards_per_func * weights).nansum(dim=1))
        judged = (~rewards_per_func.isnan()).any(dim=1).tolist()  # a completion no reward gave a verdict on: reward None, as TRL
        per_func = [shortest_decimals(row) for row in rewards_per_func.detach().cpu()]  # one copy off the device, not one per row
        judged_by = verdicts(self.rewards, len(prompts))
        outcomes = [getattr(r.fn, "last_outcomes", None) or [None] * len(prompts) for r in self.rewards]
        reasoning_positions = self.reasoning_positions(completion_ids)
        stops = [self.processing_class.decode(ids[-1:]) if ids and ids[-1] in self.eos_token_ids else None for ids in completion_ids]
        rows = []
        for i, (prompt, completion, example) in enumerate(zip(prompts, completions, inputs, strict=True)):
            first = next((o[i] for o in outcomes if o[i] is not None and o[i].prediction is not None), None)
            rows.append(
                {
                    **{c: example[c] for c in self.reward_columns if c in example},  # the row's own fields win
                    "step": self.state.global_step + 1,  # the generation's step (TRL shuffles it over steps_per_generation steps)
                    "prompt_id": prompt_id(prompt),
                    "prompt": prompt,
                    "completion": completion,
                    "stop": stops[i],  # the token that ended the completion (<|im_end|>, ...); None: cut at the length limit
                    "prediction": first.prediction if first else None,
                    "gold": example.get("answer"),
                    "rewards": {r.name: per_func[i][j] for j, r in enumerate(self.rewards)},
                    "reasons": {r.name: o[i].reason for r, o in zip(self.rewards, outcomes) if o[i] is not None},
                    "reward": totals[i] if judged[i] else None,
                    "correct": judged_by[i][1].correct if judged_by[i] else None,
                }
            )
            if isinstance(prompt, list):  # chat messages: also the text the model saw
                rows[-1]["prompt_text"] = self._chat_text(prompt)
            if reasoning_positions is not None:  # which tokens came from the reasoning vocabulary
                rows[-1]["reasoning_token_positions"] = reasoning_positions[i]
        return rows

    def _chat_text(self, messages) -> str:
        """Chat messages rendered as TRL renders them for generation (same template, tools and kwargs)."""
        return self.processing_class.apply_chat_template(
            messages,
            tools=self.tools or None,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            tokenize=False,
            **self.chat_template_kwargs,
        )
