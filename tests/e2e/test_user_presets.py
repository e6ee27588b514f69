"""A user's own config tree (`--config-dir`): their dataset, their reward function, their experiment,
composed with rlvr's presets and checked by the same schemas, without a change to rlvr."""

import json
import os

import pytest

from conftest import TINY_RUN, one_line_error, run_cli

REWARD_MODULE = '''
def first_word_is_gold(completions, answer, **kwargs):
    """1.0 when the completion's first word is the gold product."""
    return [float(c.split()[:1] == [a]) for c, a in zip(completions, answer)]
'''


@pytest.fixture
def user_tree(tmp_path):
    """What a user keeps in their own repository: presets, data and a reward module."""
    rows = [{"q": f"{a}*{b}=", "product": str(a * b)} for a in range(10) for b in range(10)]
    (tmp_path / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_rewards.py").write_text(REWARD_MODULE)
    presets = tmp_path / "presets"
    for group, text in {
        "dataset/products": f"name: products\nsource: {tmp_path / 'products.jsonl'}\neval_holdout: 16\n"
        "prompt_column: q\nanswer_column: product\n",  # the prompt: column q as it is
        "reward/first_word": "functions:\n  first_word:\n    _target_: my_rewards.first_word_is_gold\n    weight: 1.0\n",
        "experiment/products_grpo": "# @package _global_\ndefaults:\n  - override /dataset: products\n"
        "  - override /reward: first_word\n\nexperiment: products_grpo\n"
        "algorithm:\n  learning_rate: 3e-4\n",
    }.items():
        (presets / group).parent.mkdir(parents=True, exist_ok=True)
        (presets / f"{group}.yaml").write_text(text)
    return tmp_path


def run_with(tree, *args):
    pythonpath = os.pathsep.join(filter(None, [str(tree / "code"), os.environ.get("PYTHONPATH")]))
    return run_cli("rlvr.run", "--config-dir", str(tree / "presets"), *args, env={"PYTHONPATH": pythonpath})


def test_user_experiment_composes_with_rlvrs_presets(user_tree):
    result = run_with(user_tree, "experiment=products_grpo", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "source: " + str(user_tree / "products.jsonl") in result.stdout
    assert "_target_: my_rewards.first_word_is_gold" in result.stdout
    assert "learning_rate: 0.0003" in result.stdout and "name_or_path: tiny" in result.stdout  # rlvr's model preset


@pytest.mark.parametrize(
    ("preset", "text", "message"),
    [
        (
            "dataset/products",
            "name: products\nprompt_colum: q\n",
            "dataset/products.yaml: unknown config key 'dataset.prompt_colum' (did you mean 'dataset.prompt_column'?)",
        ),
        (
            "experiment/products_grpo",
            "# @package _global_\nalgorithm:\n  lerning_rate: 3e-4\n",
            "experiment/products_grpo.yaml: unknown config key 'algorithm.lerning_rate' (did you mean 'algorithm.learning_rate'?)",
        ),
        (
            "dataset/products",
            "name: products\nmax_train_samples: many\n",
            "dataset/products.yaml: dataset.max_train_samples: Value 'many' of type 'str' could not be converted to Integer",
        ),
    ],
)
def test_a_mistake_in_a_user_preset_is_one_line(user_tree, preset, text, message):
    (user_tree / "presets" / f"{preset}.yaml").write_text(text)
    result = run_with(user_tree, "experiment=products_grpo", "--cfg", "job")
    assert one_line_error(result) == f"rlvr: error: {message}"


@pytest.mark.slow
def test_user_experiment_trains_with_the_users_reward(user_tree):
    result = run_with(
        user_tree, "experiment=products_grpo", *TINY_RUN, "algorithm.max_steps=2", "eval.before=false", f"hydra.run.dir={user_tree / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (user_tree / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 16 and all(set(r["rewards"]) == {"first_word"} for r in rows)
    assert all("*" in r["prompt"] for r in rows)
    assert json.loads((user_tree / "run" / "metrics.json").read_text())["train_steps"] == 2
