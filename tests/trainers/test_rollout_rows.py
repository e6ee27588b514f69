"""What rollouts.jsonl holds of each scored completion."""


def test_rollout_rewards_are_written_as_the_decimals_the_rewards_returned():
    """TRL holds rewards in float32: a reward of -1.6 was written -1.600000023841858, unlike rlvr.score's -1.6."""
    import math

    import torch

    from rlvr.trainers.grpo import shortest_decimals

    written = shortest_decimals(torch.tensor([-1.6, 0.1, 1.0, 1 / 3, float("nan")]))
    assert written[:3] == [-1.6, 0.1, 1.0] and math.isnan(written[4])
    assert torch.tensor(written[3], dtype=torch.float32) == torch.tensor(1 / 3, dtype=torch.float32)  # the same float32
