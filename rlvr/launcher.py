"""How a run, or a job of a `-m` run, starts and ends as its user sees it, whatever launches it: the
Python side of `hydra/launcher` (presets in conf/hydra/launcher/, shell scripts in launchers/).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from rlvr.errors import modules_raised_through

log = logging.getLogger(__name__)
# The directories the current single run's start created (deepest first), removed if it is refused.
_created: list[Path] = []
# The sweep dir of the `-m` run this process launched, for the report of a sweep that ends in a failure.
_sweep_dirs: list[Path] = []
# The summaries of the jobs of that run that ended without a result in this process (the basic launcher's):
# the sweeper raises the first one only.
_ended_here: list[str] = []
# "pid:start time" of the process that launched a hydra/launcher=local run, in its jobs' environment.
LOCAL_LAUNCHER_VAR = "RLVR_LOCAL_LAUNCHER"
# The keys a `-m` run sweeps, comma-separated, in its jobs' environment: a job dir is one point of the sweep.
SWEPT_KEYS_VAR = "RLVR_SWEPT_KEYS"


class RunEnded(Exception):
    """A job of a `-m` run that ended without its metrics. `line`: the rlvr line the job printed
    (by process `pid`), if any; `summary`: what the job was, how it ended, where its logs are and, for
    a stop, the command that continues it; `code`: the exit code of the `-m` command. Picklable:
    a submitit job's comes back to the process that launched it."""

    def __init__(self, code: int, line: str | None, summary: str, pid: int | None = None):
        pid = os.getpid() if pid is None else pid
        super().__init__(code, line, summary, pid)  # the arguments it is unpickled with
        self.code, self.line, self.summary, self.pid = code, line, summary, pid

    def __str__(self) -> str:
        return self.line or self.summary


def dir_problem(path: Path) -> str | None:
    """Why `path` cannot be a dir rlvr writes in (a file, a parent that is a file, no permission), or
    None once it exists as a directory this process can write."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{path} is a file, not a directory"
    except NotADirectoryError:
        return f"{next((p for p in path.parents if p.is_file()), path)} is a file, not a directory"
    except OSError as exc:
        return f"it cannot be created ({exc.strerror}: {exc.filename})"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def held_problem(path: Path) -> str | None:
    """What in the run or sweep dir `path` this process cannot write (a read-only run.log in a shared
    folder): a run continued there appends to its files."""
    if held := next((p for p in sorted(path.iterdir()) if not os.access(p, os.W_OK | (os.X_OK if p.is_dir() else 0))), None):
        return f"{held} is not writable"
    return None


def prepare_dir(key: str, path: Path) -> list[Path]:
    """Create `path` (the value of `key`); returns the directories this created, deepest first. One
    line on stderr and exit code 2 if it cannot be a directory that rlvr writes."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    if (problem := dir_problem(path) or held_problem(path)) is not None:
        print(f"rlvr: error: {key}={path}: {problem}: pick another {key}", file=sys.stderr)
        sys.exit(2)  # a callback's exception would be a warning to Hydra; this ends the command
    return created


class RunDirCheck(Callback):
    """Hydra callback (conf/config.yaml): the run dir (sweep dir) is checked and created before Hydra
    goes on; Hydra's own attempt would end in a traceback."""

    def on_run_start(self, config, **kwargs) -> None:
        check_working_dir_kept(config)
        _created[:] = prepare_dir("hydra.run.dir", Path(config.hydra.run.dir))

    def on_multirun_start(self, config, **kwargs) -> None:
        check_working_dir_kept(config)
        check_one_sweep_per_launch()
        overrides, params = list(config.hydra.overrides.task), config.hydra.sweeper.get("params")
        check_swept_once(overrides, params)
        check_searched_keys(config, params)
        check_objective_direction(config)
        check_objective_evaluated(config)
        os.environ[SWEPT_KEYS_VAR] = ",".join(swept_keys(overrides, params))
        check_launcher_resources(config)
        if is_local_launcher(config.hydra.launcher):  # its jobs watch this process
            from rlvr.tracking.run_dir import process_start_time

            os.environ[LOCAL_LAUNCHER_VAR] = f"{os.getpid()}:{process_start_time(os.getpid()) or ''}"
        sweep_dir = Path(config.hydra.sweep.dir)
        prepare_dir("hydra.sweep.dir", sweep_dir)
        keep_other_sweeps_record(sweep_dir, list(config.hydra.overrides.task))
        _sweep_dirs[:] = [sweep_dir]
        _ended_here.clear()


def keep_other_sweeps_record(sweep_dir: Path, overrides: list[str]) -> None:
    """Hydra's basic sweeper writes multirun.yaml (the sweep's config and command line) at every `-m` run,
    over an earlier one: the record of a sweep continued one job at a time, or rerun at other points (and
    refused), would describe the last command only. An earlier record of other overrides is kept, renamed
    multirun-<n>.yaml (n = 1, 2, ...: oldest first); one of the same command is left to be rewritten."""
    from omegaconf import OmegaConf

    record = sweep_dir / "multirun.yaml"
    if not record.exists():
        return
    try:
        earlier = list(OmegaConf.load(record).hydra.overrides.task)
    except Exception:  # torn, or no record of Hydra's: kept as it is, beside the new one
        earlier = None
    if earlier == overrides:
        return
    number = 1 + max((int(p.stem.split("-")[1]) for p in sweep_dir.glob("multirun-*.yaml") if p.stem.split("-")[1].isdigit()), default=0)
    record.rename(sweep_dir / f"multirun-{number}.yaml")


def check_working_dir_kept(config) -> None:
    """Refuse `hydra.job.chdir=true` in one line, exit code 2: relative paths in the config (data files,
    presets' models) are the launch directory's, and a job moved into its run dir would not find them."""
    if config.hydra.job.get("chdir"):
        print(
            "rlvr: error: hydra.job.chdir=true: rlvr runs in the directory it is launched from (relative paths in the "
            "config are read from there; the run's files go to hydra.run.dir): leave it false",
            file=sys.stderr,
        )
        sys.exit(2)


# The `hardware` values conf/hydra/launcher/{local,slurm}.yaml hand to submitit.
LAUNCHER_RESOURCES = ("hardware.nodes", "hardware.tasks_per_node", "hardware.gpus_per_node", "hardware.cpus_per_task", "hardware.mem_gb")


def check_swept_once(overrides: list[str], params=None) -> None:
    """Refuse a `-m` command line that sweeps a key and also fixes it (`max_steps=4 'max_steps=interval(2, 8)'`,
    or a key of the sweeper's `params` given a fixed value): Optuna's sweeper keeps the fixed value and
    searches nothing, the basic one takes the later. One line, exit code 2, before any job starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given: dict[str, list] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        given.setdefault(override.get_key_element().lstrip("+~"), []).append(override)
    for key, each in given.items():
        if len(each) > 1 and any(o.is_sweep_override() for o in each):
            print(f"rlvr: error: {key} is given {len(each)} times ({', '.join(o.input_line for o in each)}): give it once", file=sys.stderr)
            sys.exit(2)
        if str(key) in (params or {}) and not any(o.is_sweep_override() for o in each):  # a search space replaces it
            print(
                f"rlvr: error: {key} is searched (hydra.sweeper.params.{key}: {params[key]}) and given on the command line "
                f"({each[0].input_line}): give it once",
                file=sys.stderr,
            )
            sys.exit(2)


def check_searched_keys(config, params) -> None:
    """Refuse a key of the sweeper's `params` (`+hydra.sweeper.params={algorithm.learning_rat: ...}`) that
    the config does not hold, as Hydra refuses it on the command line: one line, exit code 2, before the
    study starts (each trial's job would compose it and fail, the first after its submission). A key
    written with `+` adds one; group choices and `hydra.*` keys are Hydra's."""
    from omegaconf import DictConfig, OmegaConf

    from rlvr.config import did_you_mean

    for written in map(str, params or {}):
        if written.startswith("+") or written.startswith("hydra") or written in config.hydra.runtime.choices or "/" in written:
            continue
        node, parts = config, written.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig) or part in node:
                node = node[part] if isinstance(node, DictConfig) else None
                continue
            if OmegaConf.is_struct(node):
                parent, keys = ".".join(parts[:depth]) or "the config", [str(k) for k in node]
                print(
                    f"rlvr: error: hydra.sweeper.params.{written}: {parent} has no '{part}'{did_you_mean(part, keys)}; "
                    f"its keys: {', '.join(keys)} (to add a key, start it with +)",
                    file=sys.stderr,
                )
                sys.exit(2)
            break


def swept_keys(overrides: list[str], params) -> list[str]:
    """The keys a `-m` run sweeps: those given a sweep on its command line (`seed=1,2`, Optuna's
    `interval(...)`) and those of the sweeper's `params` (a search space in a config)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = [o.get_key_element().lstrip("+~") for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    return list(dict.fromkeys(swept + [str(key) for key in params or {}]))


def swept_in_this_job() -> list[str]:
    """The keys of `swept_keys` for a job of a `-m` run (its launching process set them); [] otherwise."""
    return [key for key in os.environ.get(SWEPT_KEYS_VAR, "").split(",") if key] if is_multirun() else []


def check_objective_direction(config) -> None:
    """Refuse, before any job starts, a search (a sweeper that reads `objective`) that minimises an
    objective higher for better models (`hydra/sweeper=optuna`, the plugin's own config, minimises).
    One line, exit code 2."""
    if not reads_objective(config.hydra.sweeper):
        return
    objective = str(config.get("objective", ""))
    direction = config.hydra.sweeper.get("direction")  # Optuna's: an Enum, a name or (several objectives) a list
    higher_is_better = re.search(r"accuracy|reward|(pass|maj|mean)@", objective) and not objective.endswith("_se")
    if getattr(direction, "name", direction) == "minimize" and higher_is_better:
        print(
            f"rlvr: error: hydra.sweeper.direction=minimize would search for the lowest objective={objective}, which is "
            f"higher for better models: use hydra/sweeper=optuna_maximize (or hydra.sweeper.direction=maximize)",
            file=sys.stderr,
        )
        sys.exit(2)


def check_objective_evaluated(config) -> None:
    """Refuse, before any job starts, a search (a sweeper that reads `objective`, not the basic one)
    whose objective is an eval that the config turns off (`eval_after_*` with eval.after=false): every
    trial would train, then fail. One line, exit code 2."""
    if not reads_objective(config.hydra.sweeper):
        return
    objective = str(config.get("objective", ""))
    for when in ("before", "after"):
        if objective.startswith(f"eval_{when}_") and not config.eval[when]:
            print(
                f"rlvr: error: objective={objective} is a metric of the eval {when} training, which "
                f"eval.{when}=false turns off: set eval.{when}=true or another objective",
                file=sys.stderr,
            )
            sys.exit(2)


def check_launcher_resources(config) -> None:
    """What a submitit launcher reads before any job starts, in one line and exit code 2 (the jobs'
    own start-up check would come after submitit's traceback): LAUNCHER_RESOURCES within their
    ranges, and one node for hydra/launcher=local."""
    from rlvr.config import range_problem

    if not is_submitit(config.hydra.launcher):
        return
    problems = [problem for key in LAUNCHER_RESOURCES if (problem := range_problem(config, key)) is not None]
    if is_local_launcher(config.hydra.launcher) and config.hardware.nodes != 1:
        problems.append(
            f"hardware.nodes={config.hardware.nodes}: hydra/launcher=local runs on this machine, one node "
            f"(hydra/launcher=slurm for several)"
        )
    if problems:
        print(f"rlvr: error: {problems[0]}", file=sys.stderr)
        sys.exit(2)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def check_one_sweep_per_launch() -> None:
    """Refuse a `-m` run in a process that is one of several started by torchrun, accelerate launch or
    an srun step, before any job starts: each process would run the whole sweep (under the basic
    launcher the first job's end closes the process group, and the second job waits for its peers
    forever). One line per node (its local rank 0 says it), exit code 2. A batch script's own process
    (sbatch, no srun) is one process, whatever the job's task count."""
    processes = max(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")))
    if processes <= 1:
        return
    if int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))) == 0:
        print(
            f"rlvr: error: a -m run inside a {processes}-process launch (torchrun, accelerate launch, srun) would run the "
            "whole sweep in each process: launch one run at a time, or let Hydra start each job's processes "
            "(-m hydra/launcher=local or slurm, hardware.tasks_per_node=N)",
            file=sys.stderr,
        )
    sys.exit(2)


def own_process() -> bool:
    """This job of a `-m` run has its process(es) to itself (submitit, local or SLURM): a stop ends it
    alone, rather than the whole sweep that a basic launcher runs in one process."""
    from hydra.core.hydra_config import HydraConfig

    return is_multirun() and is_submitit(HydraConfig.get().launcher)


def is_submitit(launcher) -> bool:
    """Whether `hydra.launcher` is one of submitit's (hydra/launcher=local or slurm)."""
    return "submitit" in str(launcher.get("_target_", ""))


def is_local_launcher(launcher) -> bool:
    """Whether `hydra.launcher` is submitit's local one (hydra/launcher=local)."""
    return "LocalLauncher" in str(launcher.get("_target_", ""))


JOB_ANNOUNCED = re.compile(r"^rlvr: sweep job (\d+), run dir (.*)$", re.MULTILINE)


def announce_job(run_dir: Path) -> None:
    """A job of a `-m` run in its own process(es) (submitit) says first, on every rank's error stream,
    which job it is: `submitit_logs_by_job` finds a failed job's own `.submitit` logs by it."""
    from hydra.core.hydra_config import HydraConfig

    if own_process():
        print(f"rlvr: sweep job {job_name(HydraConfig.get())}, run dir {run_dir}", file=sys.stderr, flush=True)


def job_name(hydra_cfg) -> str:
    """What the sweep report calls this job of a `-m` run: its dir under the sweep dir (the job's number,
    but where `hydra.sweep.subdir` names another, as a one-job continue command does)."""
    run_dir, sweep_dir = Path(hydra_cfg.runtime.output_dir).absolute(), Path(hydra_cfg.sweep.dir).absolute()
    return str(run_dir.relative_to(sweep_dir)) if run_dir.is_relative_to(sweep_dir) else str(hydra_cfg.job.num)


def stop_when_launcher_gone() -> None:
    """A job of a hydra/launcher=local run stops as SIGTERM stops it (a checkpoint at the end of the
    step, its run dir's lock given back) once the process that launched it is gone. Killed on its
    own (not with its process group, as a terminal's Ctrl-C is), that process leaves its jobs
    running, and submitit does not tell them."""
    import signal
    import threading
    import time

    from rlvr.tracking.run_dir import is_alive

    launcher = os.environ.get(LOCAL_LAUNCHER_VAR)
    if not launcher or not own_process():
        return
    pid, started = launcher.split(":", 1)

    def watch() -> None:
        while is_alive(int(pid), started or None):
            time.sleep(1)
        log.warning("the process that launched this job (pid %s) is gone: stopping as SIGTERM stops it", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="rlvr-launcher-watch", daemon=True).start()


def submitit_logs_by_job(sweep_dir: Path) -> dict[int | None, list[str]]:
    """A sweep's `.submitit/*/*.err` streams by the job number each announced in its first 64 KiB
    (None: a process that ended before it announced its job)."""
    logs: dict[int | None, list[str]] = {}
    for path in sorted((sweep_dir / ".submitit").glob("*/*.err")):
        found = announced_job(path)
        logs.setdefault(int(found[0]) if found else None, []).append(str(path))
    return logs


def announced_job(error_stream: Path) -> tuple[str, str] | None:
    """(job number, run dir) that a submitit task's error stream announced in its first 64 KiB (`announce_job`)."""
    try:
        with open(error_stream, errors="replace") as handle:
            found = JOB_ANNOUNCED.search(handle.read(65536))
    except OSError:
        return None
    return (found[1], found[2]) if found else None


def forget_refused_start(run_dir: Path) -> bool:
    """A refused start leaves nothing: a single run's dir that its start created goes (it is empty:
    rlvr writes nothing before the start is accepted); a `-m` job's own new dir keeps the start's
    log in run.log and its overrides, for the sweep report to show (rank 0 writes them: the job dir
    is new when it holds nothing else, whichever rank got there first). An existing run dir is left
    as it was. Whether run.log is the refused start's own (a `-m` job's new dir)."""
    from rlvr.hardware.distributed import task_rank
    from rlvr.tracking.outputs import start_run_log
    from rlvr.tracking.run_dir import save_overrides

    if is_multirun():
        new = run_dir.is_dir() and {entry.name for entry in run_dir.iterdir()} <= {"run.log", ".hydra"}
        if new and task_rank() == 0:
            start_run_log(run_dir)
            save_overrides(run_dir)
        return new
    for path in _created:
        try:
            path.rmdir()
        except OSError:  # not empty: something else lives there now
            break
    _created.clear()
    return False


def override_arg(key: str, value) -> str:
    """`key=value` as one shell argument that Hydra reads back as `value`: quoted for Hydra's grammar
    where it would read it otherwise (a `,` makes a sweep, brackets a list), then for the shell."""
    text = str(value)
    if re.search(r"[\s,\[\]{}()'\"=:]", text):
        text = "'" + text.replace("'", "\\'") + "'"
    return shlex.quote(f"{key}={text}")


def continue_command(hydra_cfg) -> str:
    """The command that runs this job of a `-m` run again, alone, in the same run dir and the same
    way: its launcher and launcher settings, its config dir, its own overrides (an Optuna trial's drawn
    values, not the search), `hydra.sweep.dir` and `hydra.sweep.subdir` pointing at it."""
    dropped = ("hydra.sweep.dir=", "hydra.sweep.subdir=", "hydra/sweeper=", "hydra.sweeper.", "hydra.mode=")
    sweep_dir = Path(hydra_cfg.sweep.dir).absolute()
    args = ["python", "-m", "rlvr.run", "-m"]
    args += [f"--config-dir={s.path}" for s in hydra_cfg.runtime.config_sources if s.provider == "command-line"]
    if hydra_cfg.job.config_name != "config":
        args.append(f"--config-name={hydra_cfg.job.config_name}")
    args += [o for o in hydra_cfg.overrides.hydra if not o.lstrip("+~").startswith(dropped)]
    dirs = [override_arg("hydra.sweep.dir", sweep_dir), override_arg("hydra.sweep.subdir", job_name(hydra_cfg))]
    return " ".join([shlex.join([*args, *hydra_cfg.overrides.task]), *dirs])


def job_logs(run_dir: Path) -> list[str]:
    """Where a job's logs are: its run.log, and the error stream of a submitit task."""
    logs = [str(run_dir / "run.log")] if (run_dir / "run.log").exists() else []
    if os.environ.get("SUBMITIT_FOLDER"):
        import submitit

        logs.append(str(submitit.JobEnvironment().paths.stderr))
    return logs


def job_ended(code: int, line: str | None, how: str, resume: bool = False, logs: bool = True) -> RunEnded:
    """This job's end, as the process that launched the sweep reports it (with its logs, if `logs`)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    summary = f"job {job_name(hydra_cfg)} ({' '.join(hydra_cfg.overrides.task)}) {how}"
    if logs and (paths := job_logs(run_dir)):
        summary += f"; its log: {', '.join(paths)}"
    if resume:
        summary += f"; this continues it from its newest complete checkpoint, if any: {continue_command(hydra_cfg)}"
    _ended_here.append(summary)
    return RunEnded(code, line, summary)


def end_run(code: int, line: str | None, logs: bool = True) -> None:
    """A run that failed or was refused, its line printed: exit with `code`; a job of a `-m` run
    raises `RunEnded` instead, so that the sweep goes on and the launching process reports it (naming
    the job's logs if `logs`, where they hold its end: not an existing run dir's, which a refused
    start leaves alone)."""
    if not is_multirun():
        sys.exit(code)
    raise job_ended(code, line, "failed", logs=logs)


def end_stopped_job(stop: SystemExit) -> None:
    """A stop (Ctrl-C, SIGTERM) of a job in a process of its own: `RunEnded`, whose report says how
    to continue it; any other exit goes on (a requeue's, or a sweep's that runs in one process)."""
    from rlvr.hardware.stops import STOP_EXITS, STOPPED_BY

    if stop.code not in STOP_EXITS.values() or not own_process():
        if stop.code in STOP_EXITS.values():  # the whole sweep stops here: its report first
            write_sweep_report()
        raise stop
    raise job_ended(stop.code, None, f"stopped by {STOPPED_BY[stop.code]}", resume=True) from None


def objective_value(cfg, metrics: dict[str, float]) -> float:
    """What the run returns to the sweeper: its `objective` metric. A sweeper that reads it (Optuna)
    cannot take NaN (it would end the search): the job fails in one line instead. An objective that
    is a misspelling of one of the run's metrics would fail every trial after its training: a search
    whose trials run in this process stops at the first, its report written. (A metric absent for
    another reason, e.g. no accuracy where a swept reward judges no correctness, fails its trial.)"""
    from hydra.core.hydra_config import HydraConfig

    from rlvr.config import did_you_mean

    value = metrics.get(cfg.objective)
    value = math.nan if value is None else value  # None: NaN as metrics.json writes it (null), read back
    if not math.isnan(value) or not is_multirun() or not reads_objective(HydraConfig.get().sweeper):
        return value
    meant = did_you_mean(cfg.objective, metrics)  # "": no metric is close
    problem = "is NaN" if cfg.objective in metrics else f"is not among this run's metrics{meant}"
    line = f"rlvr: error: objective={cfg.objective} {problem}: the sweeper needs a number (set objective to one of metrics.json's keys)"
    print(line, file=sys.stderr)
    if cfg.objective in metrics or not meant or own_process() or not _sweep_dirs:
        raise job_ended(2, line, "failed")
    write_sweep_report()
    report = _sweep_dirs[0] / "sweep_summary.md"
    print(
        f"rlvr: error: the search stopped: objective={cfg.objective} is misspelt, every trial would fail (its trials: {report})",
        file=sys.stderr,
    )
    sys.exit(2)


def reads_objective(sweeper) -> bool:
    """Whether `sweeper` (hydra.sweeper) reads each job's `objective` (Optuna's); the basic one does not."""
    return "BasicSweeper" not in str(sweeper.get("_target_", ""))


def write_sweep_report() -> list[dict]:
    """The report of the sweep this process launched (rlvr.sweep_report), written now, with its rows;
    [] where this process launched none."""
    from rlvr.sweep_report import write_report

    return write_report(_sweep_dirs[0]) if _sweep_dirs and _sweep_dirs[0].is_dir() else []


def report_ended_jobs_once() -> None:
    """Hydra prints "Error executing job with overrides: [...]" whenever a sweeper reads a failed job's
    result, above anything rlvr says: for a job that ended with `RunEnded` (its line printed, its
    overrides in `report_end`'s line) the result is raised without it (rlvr._compat.raise_failed_job_results)."""
    from rlvr._compat import raise_failed_job_results

    raise_failed_job_results(lambda exc: isinstance(exc, RunEnded))


def report_end(exc: BaseException, prog: str = "rlvr") -> int | None:
    """In the process that launched a `-m` run of `prog`: report a job's end and give the command's
    exit code (None: not a job's end, left to Hydra). The sweep report is written first (Hydra skips
    it when a sweep raises)."""
    from rlvr.sweep_report import unfinished_line

    rows = write_sweep_report()
    if isinstance(exc, RunEnded):
        if exc.line and exc.pid != os.getpid():  # a submitit job's: printed in its own log only
            print(exc.line, file=sys.stderr)
        for summary in dict.fromkeys([exc.summary, *_ended_here]):  # every job of this process that ended so
            print(f"{prog}: {summary}", file=sys.stderr)
        if sum(row["status"] != "completed" for row in rows) > 1:  # the basic sweeper raises the first failed job's end
            print(unfinished_line(rows, _sweep_dirs[0] / "sweep_summary.md", prog), file=sys.stderr)
        return exc.code
    if type(exc).__module__.startswith("submitit"):  # a job that died without a result (killed, out of memory)
        # submitit's first two lines: "Job J (task: T) with path P", "has not produced any output (state: S)"
        where = " ".join(str(exc).splitlines()[:2])
        task = re.match(r"Job (\S+) \(task: (\d+)\)", where)
        who = f"rank {task[2]} of job {task[1]}" if task else "a job"  # submitit's task = the global rank
        result = re.search(r" with path (.+)_result\.pkl", where)
        if task and result and (announced := announced_job(Path(f"{result[1]}_log.err"))):  # which sweep job it was
            who = f"job {announced[0]} (run dir {announced[1]}): rank {task[2]} of submitit job {task[1]}"
        print(
            f"{prog}: {who} ended without a result (killed, or it died outside rlvr; the scheduler stops the "
            f"job's other ranks, and the job's newest complete checkpoint continues it): {where}",
            file=sys.stderr,
        )
        return 1
    # raised by optuna: e.g. a search that went past failed trials, to none completed
    if _sweep_dirs and any(m.startswith("optuna.") for m in modules_raised_through(exc)):
        report = _sweep_dirs[0] / "sweep_summary.md"
        trials = f" (its trials: {report})" if report.exists() else " (before any trial ran)"
        print(f"{prog}: error: the search stopped: {exc}{trials}", file=sys.stderr)
        return 2
    return None
