"""`hydra/sweeper=optuna_maximize` (the optuna extra): a search over the learning rate that
maximises the objective each run returns, its trials in the sweep report."""

import csv
import importlib.util

import pytest
import yaml

from conftest import TINY_RUN, run_cli
from rlvr.config import check_extras
from rlvr.errors import ConfigError


@pytest.mark.slow
def test_optuna_search_maximises_the_objective(tmp_path):
    # Full warm-up (the tiny preset's 100 steps) so the eval accuracy is not 0, and a range in which
    # large learning rates wreck it in 2 GRPO steps: trials then differ in their objective.
    short = [arg for arg in TINY_RUN if not arg.startswith(("model.warmup_sft_steps", "dataset.max_eval_samples"))]
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "hydra.sweeper.n_trials=4",
        "algorithm.learning_rate=tag(log, interval(1e-8, 1e-1))",
        *short,
        "algorithm.max_steps=2",
        "dataset.max_eval_samples=32",
        "eval.before=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "sweep_summary.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert [t["job"] for t in trials] == ["0", "1", "2", "3"] and {t["status"] for t in trials} == {"completed"}
    accuracy = {float(t["swept"].split("=")[1]): float(t["eval_after_accuracy"]) for t in trials}
    assert len(set(accuracy.values())) > 1, accuracy  # otherwise any direction would pass
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(accuracy.values())
    assert accuracy[best["best_params"]["algorithm.learning_rate"]] == max(accuracy.values())


def test_optuna_without_its_extra_is_one_line(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("hydra_plugins.hydra_optuna") else find_spec(name, *a)
    )
    with pytest.raises(
        ConfigError,
        match=r"^hydra/sweeper=optuna_maximize needs the 'optuna' extra: "
        r"pip install 'rlvr\[optuna\]'$",
    ):
        check_extras(["seed=1", "hydra/sweeper=optuna_maximize"])
    check_extras(["hydra/sweeper=basic"])
