"""Mistakes caught before anything runs, each in one line (exit code 2, no traceback): a preset of the
user's that is not valid YAML, and a run dir or sweep dir that cannot be one. Nothing here imports torch."""

from pathlib import Path

import pytest

from conftest import one_line_error, run_cli


def broken_preset(tmp_path):
    """A user's config tree whose experiment preset does not parse (a list left open)."""
    preset = tmp_path / "conf" / "experiment" / "mine.yaml"
    preset.parent.mkdir(parents=True)
    preset.write_text("# @package _global_\nalgorithm:\n  learning_rate: [1e-4\n")
    return preset


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath", "--cfg job"])
def test_a_yaml_syntax_error_in_a_user_preset_is_one_line(tmp_path, how):
    preset = broken_preset(tmp_path)
    conf = tmp_path / "conf"
    args = {
        "--config-dir": ["--config-dir", str(conf), "-m", "seed=1,2"],
        "hydra.searchpath": [f"hydra.searchpath=[file://{conf}]", f"hydra.run.dir={tmp_path / 'run'}"],
        "--cfg job": ["--config-dir", str(conf), "--cfg", "job"],
    }[how]
    line = one_line_error(run_cli("rlvr.run", *args, "experiment=mine", timeout=60))
    assert line == (
        f"rlvr: error: {preset} is not valid YAML: line 4, column 1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence at line 3, column 18)"
    )
    assert not (tmp_path / "run").exists()


def test_an_experiment_preset_without_its_package_header_is_told_to_add_it(tmp_path):
    """Its keys land under `experiment` (a string): the line said "Cannot convert 'DictConfig' to string" alone;
    with a defaults list (docs/your-own-presets.md's layout), Hydra's "Could not override" alone."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text("algorithm: {beta: 0.2}\n")
    (tmp_path / "conf" / "experiment" / "listed.yaml").write_text("defaults:\n  - override /dataset: arithmetic\nalgorithm: {beta: 0.2}\n")
    hint = "(an experiment preset sets keys of the whole config: start it with the line '# @package _global_')"
    line = one_line_error(run_cli("rlvr.run", "--config-dir", str(tmp_path / "conf"), "experiment=mine", "--cfg", "job", timeout=60))
    assert line.startswith("rlvr: error: experiment/mine.yaml: experiment: Cannot convert 'DictConfig' to string") and line.endswith(hint)
    line = one_line_error(run_cli("rlvr.run", "--config-dir", str(tmp_path / "conf"), "experiment=listed", "--cfg", "job", timeout=60))
    assert line == f"rlvr: error: experiment/listed.yaml: Could not override 'dataset@experiment.dataset' {hint}"


def test_a_user_preset_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    """Hydra's UnicodeDecodeError traceback, with `--cfg job` too."""
    preset = tmp_path / "conf" / "dataset" / "latin1.yaml"
    preset.parent.mkdir(parents=True)
    preset.write_bytes("name: café\n".encode("latin-1"))
    line = one_line_error(run_cli("rlvr.run", "--config-dir", str(tmp_path / "conf"), "dataset=latin1", "--cfg", "job", timeout=60))
    assert line == f"rlvr: error: {preset} is not UTF-8 text (byte 0xe9 at offset 9): save it as UTF-8"


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("afile", "{tmp}/afile is a file, not a directory"),
        ("afile/run", "{tmp}/afile is a file, not a directory"),
        ("/proc/rlvr/run", "it cannot be created (No such file or directory: /proc/rlvr)"),
    ],
)
def test_a_run_dir_that_cannot_be_one_is_one_line(tmp_path, where, problem):
    (tmp_path / "afile").write_text("not a directory\n")
    run_dir = tmp_path / where
    line = one_line_error(run_cli("rlvr.run", f"hydra.run.dir={run_dir}", timeout=60))
    assert line == f"rlvr: error: hydra.run.dir={run_dir}: {problem.format(tmp=tmp_path)}: pick another hydra.run.dir"
    assert (tmp_path / "afile").read_text() == "not a directory\n"


def test_a_run_dir_holding_a_file_this_process_cannot_write_is_refused(tmp_path, monkeypatch):
    """A read-only run.log in a writable dir (a shared group folder): PermissionError from the run log,
    after the start was recorded. The tests run as root, which may write anything: the permission
    check answers as for another user."""
    import os

    from rlvr.launcher import held_problem

    (tmp_path / "run.log").write_text("someone's\n")
    assert held_problem(tmp_path) is None
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and not str(path).endswith("run.log"))
    assert held_problem(tmp_path) == f"{tmp_path / 'run.log'} is not writable"


def test_a_sweep_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory\n")
    line = one_line_error(run_cli("rlvr.run", "-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'afile'}", timeout=60))
    assert (
        line == f"rlvr: error: hydra.sweep.dir={tmp_path}/afile: {tmp_path}/afile is a file, not a directory: pick another hydra.sweep.dir"
    )


@pytest.mark.parametrize("sweep", [[], ["-m", "seed=1,2"]])
def test_moving_into_the_run_dir_is_refused_before_it_is_made(tmp_path, sweep):
    """hydra.job.chdir=true: a relative data path then named a file in the run dir (`dataset file not found`)."""
    dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    line = one_line_error(run_cli("rlvr.run", *sweep, "hydra.job.chdir=true", *dirs, timeout=60))
    assert line.startswith("rlvr: error: hydra.job.chdir=true: rlvr runs in the directory it is launched from") and line.endswith("false")
    assert list(tmp_path.iterdir()) == []


def test_a_job_that_ended_without_a_result_is_one_line_naming_its_rank_and_state(tmp_path, capsys):
    """submitit's error (its message as submitit words it: the result file, the state, then the job's
    whole error stream) becomes one line in the launching command's output, exit code 1."""
    from submitit.core.utils import UncompletedJobError

    from rlvr.launcher import report_end

    error_stream = "Traceback (most recent call last):\n  ...\nKilled"
    lines = ["Job 56 (task: 1) with path /j/56_1_result.pkl", "has not produced any output (state: FAILED)", "Error stream produced:"]
    exc = UncompletedJobError("\n".join([*lines, error_stream]))
    assert report_end(exc) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("rlvr: rank 1 of job 56 ended without a result (")
    assert line.endswith(": Job 56 (task: 1) with path /j/56_1_result.pkl has not produced any output (state: FAILED)")
    # its error stream says which job of the sweep it ran: named (a path with a space too)
    (folder := tmp_path / "sweep dir").mkdir()
    (folder / "56_1_log.err").write_text(f"rlvr: sweep job 3, run dir {folder / '3'}\nKilled\n")
    lines[0] = f"Job 56 (task: 1) with path {folder / '56_1_result.pkl'}"
    assert report_end(UncompletedJobError("\n".join(lines))) == 1
    assert capsys.readouterr().err.startswith(f"rlvr: job 3 (run dir {folder / '3'}): rank 1 of submitit job 56 ended without a result (")


@pytest.mark.parametrize(
    ("resource", "line"),
    [
        ("hardware.tasks_per_node=0", "hardware.tasks_per_node=0 must be > 0"),
        ("hardware.nodes=2", "hardware.nodes=2: hydra/launcher=local runs on this machine, one node (hydra/launcher=slurm for several)"),
    ],
)
def test_resources_the_launcher_cannot_start_are_one_line_before_any_job(tmp_path, resource, line):
    """submitit would fail first, in a traceback, before any job's own start-up check."""
    result = run_cli("rlvr.run", "-m", "hydra/launcher=local", resource, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert one_line_error(result) == f"rlvr: error: {line}"
    assert list(tmp_path.iterdir()) == []


def test_a_key_swept_and_fixed_on_one_command_line_is_refused(capsys):
    """Optuna's sweeper kept the fixed value and searched nothing ("Best parameters: {}"), exit 0."""
    from rlvr.launcher import check_swept_once

    check_swept_once(["seed=1,2", "algorithm.max_steps=4", "algorithm.beta=0.0", "algorithm.beta=0.1"])  # a fixed key twice: the later wins
    with pytest.raises(SystemExit) as info:
        check_swept_once(["algorithm.max_steps=4", "seed=1,2", "+algorithm.max_steps=interval(2, 8)"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "rlvr: error: algorithm.max_steps is given 2 times (algorithm.max_steps=4, +algorithm.max_steps=interval(2, 8)): give it once\n"
    )


def test_a_key_of_the_sweepers_params_fixed_on_the_command_line_is_refused(capsys):
    """A config's search space (hydra.sweeper.params) and a fixed value of its key: Optuna searched
    nothing. Another search space on the command line replaces the config's: allowed."""
    from rlvr.launcher import check_swept_once

    params = {"algorithm.learning_rate": "tag(log, interval(1e-5, 1e-2))"}
    check_swept_once(["algorithm.learning_rate=tag(log, interval(1e-6, 1e-3))", "seed=3"], params)
    with pytest.raises(SystemExit) as info:
        check_swept_once(["seed=3", "algorithm.learning_rate=1e-3"], params)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "rlvr: error: algorithm.learning_rate is searched (hydra.sweeper.params.algorithm.learning_rate: "
        "tag(log, interval(1e-5, 1e-2))) and given on the command line (algorithm.learning_rate=1e-3): give it once\n"
    )


def test_the_swept_keys_are_the_command_lines_sweeps_and_the_sweepers_params():
    from rlvr.launcher import swept_keys

    overrides = ["seed=1,2", "+algorithm.beta=interval(0, 0.1)", "reward=choice(gsm8k_strict,math_verify)", "algorithm.max_steps=4"]
    assert swept_keys(overrides, {"algorithm.learning_rate": "tag(log, interval(1e-5, 1e-2))", "seed": "range(1, 3)"}) == [
        "seed",
        "algorithm.beta",
        "reward",
        "algorithm.learning_rate",
    ]
    assert swept_keys(["algorithm.max_steps=4"], None) == []


def test_a_sweep_dirs_record_of_another_command_is_kept_beside_the_new_one(tmp_path):
    """Hydra rewrote multirun.yaml at each -m run in the dir: a sweep continued one job at a time, or rerun
    at other points and refused, left the record of that last command only."""
    from omegaconf import OmegaConf

    from rlvr.launcher import keep_other_sweeps_record

    def record(*overrides):
        OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": list(overrides)}}}), tmp_path / "multirun.yaml")

    keep_other_sweeps_record(tmp_path, ["seed=1,2"])  # no record yet
    record("seed=1,2")
    keep_other_sweeps_record(tmp_path, ["seed=1,2"])  # the same command: Hydra writes the same record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun.yaml"]
    keep_other_sweeps_record(tmp_path, ["seed=2,1"])
    record("seed=2,1")
    keep_other_sweeps_record(tmp_path, ["seed=3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun-1.yaml", "multirun-2.yaml"]
    assert [OmegaConf.load(tmp_path / f"multirun-{n}.yaml").hydra.overrides.task for n in (1, 2)] == [["seed=1,2"], ["seed=2,1"]]


def test_a_job_is_named_by_its_dir_in_the_sweep_as_the_report_names_it(tmp_path):
    """A stopped job's one-job continue command (`hydra.sweep.subdir=1`) runs as Hydra's job 0: its
    failure was reported as "job 0", another job of the sweep."""
    from omegaconf import OmegaConf

    from rlvr.launcher import job_name

    def hydra(subdir: str, num: int):
        return OmegaConf.create({"runtime": {"output_dir": str(tmp_path / subdir)}, "sweep": {"dir": str(tmp_path)}, "job": {"num": num}})

    assert [job_name(hydra("1", 0)), job_name(hydra("0", 0)), job_name(hydra("a/b", 2))] == ["1", "0", "a/b"]
    absolute = str(Path.cwd() / "multirun/x/1")
    relative = OmegaConf.create({"runtime": {"output_dir": absolute}, "sweep": {"dir": "multirun/x"}, "job": {"num": 0}})
    assert job_name(relative) == "1"  # Hydra's output dir is absolute, the sweep dir as given
    elsewhere = OmegaConf.create({"runtime": {"output_dir": "/elsewhere"}, "sweep": {"dir": str(tmp_path)}, "job": {"num": 4}})
    assert job_name(elsewhere) == "4"
