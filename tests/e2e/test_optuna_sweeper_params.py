"""`hydra/sweeper=optuna_maximize` takes its search space as one mapping too,
`+hydra.sweeper.params={key: "range"}`, beside the per-key form of docs/sweeps.md."""

import csv
import importlib.util

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, TINY_RUN, run_cli
import rlvr.run  # noqa: F401  registers the schema

OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
pytestmark = pytest.mark.skipif(not OPTUNA, reason="needs the optuna extra")
SPACE = '{algorithm.learning_rate: "tag(log, interval(1e-5, 1e-2))"}'


@pytest.mark.parametrize("prefix", ["+", "++"])
def test_the_search_space_as_one_mapping_composes(prefix):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hydra/sweeper=optuna_maximize", f"{prefix}hydra.sweeper.params={SPACE}"], return_hydra_config=True
        )
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == {"algorithm.learning_rate": "tag(log, interval(1e-5, 1e-2))"}


def test_the_mapping_without_a_plus_is_one_line(tmp_path):
    result = run_cli("rlvr.run", "-m", "hydra/sweeper=optuna_maximize", f"hydra.sweeper.params={SPACE}", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == (
        "rlvr: error: hydra.sweeper.params: to set the whole mapping, write '++hydra.sweeper.params={...}' "
        "(Hydra merges a plain hydra.sweeper.params= key by key)"
    ), result.stderr


def test_a_searched_key_the_config_lacks_is_refused_before_the_study_starts(tmp_path):
    """It was refused by the first trial's job (under SLURM, after its submission); a group choice
    and a key of the config pass, and the first key the config lacks is named."""
    space = '{model: "choice(tiny)", seed: "choice(1, 2)", algorithm.fine_graind.normalization: "choice(group)"}'
    result = run_cli(
        "rlvr.run", "-m", "hydra/sweeper=optuna_maximize", f"+hydra.sweeper.params={space}", f"hydra.sweep.dir={tmp_path / 'sweep'}"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(
        "rlvr: error: hydra.sweeper.params.algorithm.fine_graind.normalization: algorithm has no 'fine_graind' "
        "(did you mean 'fine_grained'?); its keys: name, learning_rate,"
    ), result.stderr
    assert "Study name" not in result.stderr + result.stdout and not (tmp_path / "sweep").exists()


def test_the_plugins_own_sweeper_minimising_an_accuracy_is_refused_before_the_study_starts(tmp_path):
    """`hydra/sweeper=optuna` (the plugin's config, an option rlvr lists) searched for the worst accuracy, silently."""
    result = run_cli("rlvr.run", "-m", "hydra/sweeper=optuna", "algorithm.beta=choice(0.0, 0.04)", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == (
        "rlvr: error: hydra.sweeper.direction=minimize would search for the lowest objective=eval_after_accuracy, which is "
        "higher for better models: use hydra/sweeper=optuna_maximize (or hydra.sweeper.direction=maximize)"
    ), result.stderr[-3000:]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(("direction", "objective"), [("maximize", "eval_after_accuracy"), ("minimize", "train_loss")])
def test_a_search_in_the_objectives_own_direction_passes(direction, objective):
    from rlvr.launcher import check_objective_direction

    sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "direction": direction}
    check_objective_direction(OmegaConf.create({"objective": objective, "eval": {"after": True}, "hydra": {"sweeper": sweeper}}))


@pytest.mark.slow
def test_a_search_over_the_mapping_searches_it(tmp_path):
    short = [*TINY_RUN, "model.warmup_sft_steps=0", "algorithm.max_steps=1", "algorithm.save_steps=0", "dataset.max_eval_samples=4"]
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "hydra.sweeper.n_trials=2",
        f"+hydra.sweeper.params={SPACE}",
        *short,
        "eval.before=false",
        "logging.plots=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "sweep_summary.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert [t["status"] for t in trials] == ["completed", "completed"]
    rates = [float(t["swept"].removeprefix("algorithm.learning_rate=")) for t in trials]
    assert len(set(rates)) == 2 and all(1e-5 <= rate <= 1e-2 for rate in rates), rates
