"""A failing job of a `-m` run does not end the sweep: the other jobs run, an Optuna search records the
trial as failed and goes on, the sweep's reports are written, and the command's exit code says a job failed."""

import csv
import importlib.util

import pytest
import yaml

from conftest import TINY_RUN, one_line_error, run_cli

OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not OPTUNA, reason="needs the optuna extra")]
SHORT = [*TINY_RUN, "algorithm.max_steps=1", "algorithm.save_steps=0", "eval.before=false", "logging.plots=false"]


def statuses(sweep_dir) -> dict[str, str]:
    with open(sweep_dir / "sweep_summary.csv") as handle:
        return {row["job"]: row["status"] for row in csv.DictReader(handle)}


def test_one_failing_optuna_trial_is_recorded_and_the_search_goes_on(tmp_path):
    # Optuna's sampler, seeded by `seed`, draws 1e-4, -1, 1e-4: the second trial is refused in one line.
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "hydra.sweeper.n_trials=3",
        "algorithm.learning_rate=choice(-1.0, 1e-4)",
        *SHORT,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "rlvr: error: algorithm.learning_rate=-1.0 must be > 0" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"rlvr: 1 of 3 jobs did not complete: their logs are listed in {tmp_path / 'sweep_summary.md'}"
    )
    assert "Failed experiment: rlvr: error: algorithm.learning_rate=-1.0 must be > 0" in result.stdout
    assert statuses(tmp_path) == {"0": "completed", "1": "failed", "2": "completed"}
    assert f"sweep report: {tmp_path / 'sweep_summary.md'} (3 jobs: 2 completed, 1 failed)" in result.stdout  # the search's last line
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"algorithm.learning_rate": 1e-4}


def test_a_search_whose_every_trial_fails_is_one_line(tmp_path):
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "hydra.sweeper.n_trials=2",
        "algorithm.learning_rate=choice(-1.0, -2.0)",
        *SHORT,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (
        f"rlvr: error: the search stopped: No trials are completed yet. (its trials: "
        f"{tmp_path / 'sweep_summary.md'})" in result.stderr.splitlines()
    )
    assert statuses(tmp_path) == {"0": "failed", "1": "failed"}


def test_a_search_space_optuna_refuses_is_one_line_that_points_at_no_report(tmp_path):
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "algorithm.learning_rate=interval(1e-2, 1e-5)",
        *SHORT,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == (
        "rlvr: error: the search stopped: The `low` value must be smaller than or equal to the `high` value "
        "(low=0.01, high=1e-05). (before any trial ran)"
    )


def test_a_search_whose_objective_is_an_eval_turned_off_is_refused_before_any_trial(tmp_path):
    """Optuna cannot take NaN: every trial trained, then failed, for want of its `objective` metric."""
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "hydra.sweeper.n_trials=2",
        *SHORT,
        "eval.after=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert one_line_error(result) == (
        "rlvr: error: objective=eval_after_accuracy is a metric of the eval after training, which eval.after=false "
        "turns off: set eval.after=true or another objective"
    )
    assert not (tmp_path / "0").exists()


def test_a_failing_job_of_a_grid_sweep_leaves_the_next_to_run(tmp_path):
    result = run_cli("rlvr.run", "-m", "algorithm.learning_rate=-1,1e-4", *SHORT, f"hydra.sweep.dir={tmp_path}")
    assert one_line_error(result) == "rlvr: error: algorithm.learning_rate=-1.0 must be > 0"
    [job_line] = [line for line in result.stderr.splitlines() if line.startswith("rlvr: job 0 (")]
    assert job_line.startswith("rlvr: job 0 (algorithm.learning_rate=-1 ") and str(tmp_path / "0" / "run.log") in job_line
    assert statuses(tmp_path) == {"0": "failed", "1": "completed"}
    assert "did not complete" not in result.stderr  # one failed job: its own line says it


def test_a_grid_sweep_with_several_failed_jobs_counts_them(tmp_path):
    result = run_cli("rlvr.run", "-m", "algorithm.learning_rate=-1,1e-4,-2", *SHORT, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == (
        f"rlvr: 2 of 3 jobs did not complete: their logs are listed in {tmp_path / 'sweep_summary.md'}"
    )
    assert statuses(tmp_path) == {"0": "failed", "1": "completed", "2": "failed"}


def test_an_objective_that_is_no_metric_stops_the_search_after_its_first_trial(tmp_path):
    result = run_cli(
        "rlvr.run",
        "-m",
        "hydra/sweeper=optuna_maximize",
        "hydra.sweeper.n_trials=3",
        "algorithm.learning_rate=choice(1e-4, 2e-4)",
        "objective=eval_after_acuracy",
        *SHORT,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rlvr: error:")]
    assert errors == [
        "rlvr: error: objective=eval_after_acuracy is not among this run's metrics (did you mean 'eval_after_accuracy'?): "
        "the sweeper needs a number (set objective to one of metrics.json's keys)",
        f"rlvr: error: the search stopped: objective=eval_after_acuracy is misspelt, every trial would fail (its trials: "
        f"{tmp_path / 'sweep_summary.md'})",
    ]
    assert list(statuses(tmp_path)) == ["0"]  # one trial trained, not three


def test_an_unexpected_error_in_a_job_keeps_its_traceback_in_the_jobs_run_log(tmp_path):
    """A job that died of a bug (here a recipe patched to raise AttributeError) reached the launching
    process without its frames, and its run.log ended without a word of it."""
    (tmp_path / "patch").mkdir()
    (tmp_path / "patch" / "sitecustomize.py").write_text(
        "import rlvr.recipes.grpo\ndef train(cfg, run_dir, start):\n    raise AttributeError('boom')\nrlvr.recipes.grpo.train = train\n"
    )
    sweep = tmp_path / "sweep"
    result = run_cli(
        "rlvr.run", "-m", "hydra/launcher=local", *SHORT, f"hydra.sweep.dir={sweep}", env={"PYTHONPATH": str(tmp_path / "patch")}
    )
    assert result.returncode == 1, result.stderr[-3000:]
    said = (sweep / "0" / "run.log").read_text()
    assert "stopped by an unexpected error (a bug: please report it with this traceback)" in said
    assert "sitecustomize.py" in said and "AttributeError: boom" in said
    assert statuses(sweep) == {"0": "failed"}
