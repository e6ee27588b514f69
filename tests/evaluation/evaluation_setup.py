"""The tiny model, a few arithmetic eval rows and a reward that judges often enough to give every
eval metric a value, shared by the eval tests and their two-rank script."""

from omegaconf import OmegaConf

from rlvr.config import Config, EvalConfig
from rlvr.hardware.distributed import rank
from rlvr.rewards.base import Outcome, Reward, WeightedReward
from rlvr.rewards.checks import checked_rewards

EVAL = OmegaConf.structured(EvalConfig(n=4, ks=[1, 2, 4], batch_size=6))
MAX_NEW = 12  # new tokens per completion


class LengthClassReward(Reward):
    """Prediction: the sum of the completion's code points mod 3 (random text lands in every class); correct when 0."""

    needs_gold = False

    def score(self, completions, golds, prompts=None):
        predictions = [str(sum(map(ord, c)) % 3) for c in completions]
        return [Outcome(float(p == "0"), "correct" if p == "0" else "wrong", p, p == "0") for p in predictions]


class FailsOnRank(LengthClassReward):
    def __init__(self, failing_rank: int, **kwargs):
        super().__init__(**kwargs)
        self.failing_rank = failing_rank

    def score(self, completions, golds, prompts=None):
        if rank() == self.failing_rank:
            raise ValueError(f"no verdict on rank {rank()}")
        return super().score(completions, golds, prompts)


def failing_rewards(failing_rank: int) -> list:
    return checked_rewards([WeightedReward("length_class", FailsOnRank(failing_rank, name="length_class"), 1.0)])


class TinySetup:
    """The built-in tiny model (seed 0) and 10 eval rows of the built-in arithmetic data."""

    def __init__(self, rows: int = 10):
        from rlvr.data import load_prompt_datasets
        from rlvr.models.loading import load_policy

        cfg = OmegaConf.structured(Config)
        cfg.dataset.generator = {"num_train": 4, "num_eval": rows}
        self.model, self.tokenizer = load_policy(cfg.model, 0)
        _, self.dataset = load_prompt_datasets(cfg.dataset)
        self.rewards = checked_rewards([WeightedReward("length_class", LengthClassReward(name="length_class"), 1.0)])
