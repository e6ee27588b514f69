"""Reward-model pieces: score-head init, the Bradley–Terry loss and accuracy, the hybrid formula; a run without eval pairs."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import completed_run
from rlvr.config import ModelConfig
from rlvr.models.loading import load_reward_model
from rlvr.rewards.hybrid import hybrid_value


def test_score_head_init_std_and_dropout_free_forward():
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"tiny": {"hidden_size": 256, "intermediate_size": 256}})
    model, _ = load_reward_model(cfg, seed=0)
    weight = model.score.weight
    assert weight.shape == (1, 256)
    assert weight.std().item() == pytest.approx(1 / math.sqrt(257), rel=0.15)


def test_loss_and_accuracy_on_a_hand_made_batch():
    import datasets
    from trl import RewardConfig

    from rlvr.trainers.reward import PreferenceRewardTrainer

    model, tokenizer = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)
    pair = {
        "prompt": [{"role": "user", "content": "1+1="}],
        "chosen": [{"role": "assistant", "content": "2"}],
        "rejected": [{"role": "assistant", "content": "3"}],
    }
    args = RewardConfig(output_dir="/tmp/rlvr-rm-test", use_cpu=True, report_to=[], max_length=None)
    trainer = PreferenceRewardTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list([pair] * 4), processing_class=tokenizer
    )
    ids = [[5, 6, 7, 8], [9, 10, 11, tokenizer.pad_token_id], [12, 13, 14, 15], [16, 17, tokenizer.pad_token_id, tokenizer.pad_token_id]]
    mask = [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    inputs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}  # 2 chosen, then 2 rejected
    model.train()
    loss = trainer.compute_loss(model, dict(inputs))
    model.eval()
    with torch.no_grad():
        # The reward is read at each sequence's last real token.
        single = [model(input_ids=torch.tensor([row[: sum(m)]])).logits[0, 0] for row, m in zip(ids, mask)]
    expected = -torch.nn.functional.logsigmoid(torch.stack(single[:2]) - torch.stack(single[2:])).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    accuracy = trainer._metrics["train"]["accuracy"][-1]
    assert accuracy == pytest.approx(float(((torch.stack(single[:2]) > torch.stack(single[2:])).float().mean())))
    assert trainer._metrics["train"]["chosen_reward"] == pytest.approx([s.item() for s in single[:2]], abs=1e-5)
    assert trainer._metrics["train"]["rejected_reward"] == pytest.approx([s.item() for s in single[2:]], abs=1e-5)


def test_eval_chosen_and_rejected_rewards_are_means_over_pairs_whatever_the_batches():
    """3 eval pairs in batches of 2: a mean of batch means counted the third pair as much as the other two."""
    import datasets
    from trl import RewardConfig

    from rlvr.trainers.reward import PreferenceRewardTrainer

    model, tokenizer = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)
    pairs = [
        {
            "prompt": [{"role": "user", "content": f"{a}+1="}],
            "chosen": [{"role": "assistant", "content": str(a + 1)}],
            "rejected": [{"role": "assistant", "content": f"{a} and then some"}],
        }
        for a in range(3)
    ]

    def evaluated(batch_size: int) -> dict:
        args = RewardConfig(output_dir="/tmp/rlvr-rm-test", use_cpu=True, report_to=[], per_device_eval_batch_size=batch_size)
        data = datasets.Dataset.from_list(pairs)
        trainer = PreferenceRewardTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
        return trainer.evaluate()

    one, two = evaluated(1), evaluated(2)
    for name in ("eval_chosen_reward", "eval_rejected_reward"):
        assert two[name] == pytest.approx(one[name], abs=1e-5), name


@pytest.mark.parametrize(
    ("verified", "r", "expected"),
    [
        (True, 0.0, 0.5),  # correct, lowest RM score -> 1 - beta
        (True, 10.0, 1.5),  # correct, highest -> 1 + beta (n = 10/10.01, so a hair below)
        (False, 0.0, -0.5),  # wrong, lowest -> -alpha
        (False, 10.0, 0.5),  # wrong, highest -> +alpha
        (True, -5.0, 0.5),  # below the calibrated range: clipped to n = 0
        (False, 99.0, 0.5),  # above: clipped to n = 1, still not above a correct answer's minimum
    ],
)
def test_hybrid_formula_edges(verified, r, expected):
    value = hybrid_value(verified, r, r_min=0.0, r_max=10.0, alpha=0.5, beta=0.5, eps=0.01)
    assert value == pytest.approx(expected, abs=0.001)


def test_hybrid_keeps_every_correct_answer_at_or_above_every_wrong_one():
    grid = [x / 4 for x in range(-8, 49)]
    correct = min(hybrid_value(True, r, 0.0, 10.0, 0.5, 0.5, 0.01) for r in grid)
    wrong = max(hybrid_value(False, r, 0.0, 10.0, 0.5, 0.5, 0.01) for r in grid)
    assert correct >= wrong


def test_reward_model_paths_without_a_model_are_named(tmp_path):
    from rlvr.errors import ConfigError
    from rlvr.rewards.hybrid import resolve_reward_model_path

    with pytest.raises(ConfigError, match="is a directory with neither final_model/ nor config.json"):
        resolve_reward_model_path(str(tmp_path))
    (tmp_path / "final_adapter").mkdir()
    with pytest.raises(ConfigError, match="kept only its LoRA adapter"):
        resolve_reward_model_path(str(tmp_path))
    (tmp_path / "final_adapter" / "adapter_config.json").write_text("{}")  # or a LoRA run's checkpoint
    with pytest.raises(ConfigError, match=r"final_adapter' is a LoRA adapter, not a model: name its run dir \(final_model/"):
        resolve_reward_model_path(str(tmp_path / "final_adapter"))
    (tmp_path / "final_model").mkdir()
    (tmp_path / "final_model" / "config.json").write_text("{}")
    assert resolve_reward_model_path(str(tmp_path)) == str(tmp_path / "final_model")


@pytest.mark.slow
def test_a_reward_model_without_eval_pairs_trains_on_every_pair_without_evals(tmp_path, rows_file):
    """dataset.eval_holdout=0 with a file of pairs: TRL refused it after loading ("eval_strategy STEPS but
    you didn't pass an eval_dataset"). Every pair trains, as asked; the run has no eval_* metrics."""
    pairs = rows_file([{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)} for a in range(4) for b in range(5)])
    run = completed_run(
        tmp_path / "run",
        "algorithm=reward_model",
        "logging=disabled",
        f"dataset.source={pairs}",
        "dataset.eval_holdout=0",
        "algorithm.max_steps=2",
        "algorithm.eval_steps=1",
        "algorithm.per_device_train_batch_size=4",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train_steps"], metrics["train_kept"]) == (2, 20)
    assert not [key for key in metrics if key.startswith("eval_")]
    assert "no eval pairs (dataset.eval_holdout=0" in (run / "run.log").read_text()


def test_the_policy_settings_a_reward_model_ignores_are_named():
    """They were ignored silently (the run trained and exited 0); a warning names them, as a sweep over
    algorithm=grpo,reward_model shares them."""
    from rlvr.eval import compose
    from rlvr.recipes.reward_model import policy_settings

    cfg = compose(["algorithm=reward_model", "algorithm.beta=0.3", "algorithm.num_generations=4", "eval.n=4"], None)
    assert policy_settings(cfg, ["reward=fgrpo_spans", "eval.n=4", "algorithm.learning_rate=1e-4"]) == [
        "reward=fgrpo_spans",
        "eval.n=4",
        "algorithm.num_generations=4",
        "algorithm.beta=0.3",
    ]
    assert policy_settings(compose(["experiment=rm_hh"], None), []) == []
