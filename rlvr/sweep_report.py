"""A report of a `-m` sweep in the sweep dir: sweep_summary.csv, sweep_summary.md, sweep_summary.png
(the final metric per job), for GRPO-family jobs sweep_rewards.png (their reward curves, overlaid)
and, where jobs evaluated n samples per prompt, sweep_eval.png (mean@n / pass@k / maj@k per job, 95% intervals).

Runs by itself at the end of every multirun (a Hydra callback), whatever the launcher; also by hand:
    python -m rlvr.sweep_report multirun/DATE/TIME
Jobs without metrics.json are listed as failed, with the logs to read, as stopped (a Ctrl-C or
SIGTERM), with the command that continues them, or as running.
"""

from __future__ import annotations

import csv
from collections import Counter
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from rlvr.config import override_key
from rlvr.errors import RlvrError
from rlvr.evaluation.metrics import interval95, sample_metric_names, with_uncertainty


EVAL_PREFIX = "eval_after_"


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir: its overrides, status, final metrics (or the logs of a failed job: its
    run.log and its own `.submitit` error streams, else those no job claimed; or how a stopped job
    continues). The status is how the latest start ended: completed, stopped, or failed (also a start
    with no end recorded that no live process of this host holds: killed, or running on another host;
    a metrics.json an earlier start wrote is not its); running while a live process of this host holds it.
    `overrides` is the job's list of them."""
    from rlvr.launcher import submitit_logs_by_job
    from rlvr.tracking.run_dir import RUN_INFO, RunDirLock, latest_end

    submitit_logs = submitit_logs_by_job(sweep_dir)
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        row: dict[str, Any] = {"job": int(job.name), "overrides": []}
        reading = job / ".hydra" / "overrides.yaml"
        try:  # a file torn or written by hand fails its job's row, not the report of the others
            row["overrides"] = [str(o) for o in (yaml.safe_load(reading.read_text()) if reading.exists() else None) or []]
            reading = job / RUN_INFO
            end = latest_end(job)  # None: the latest start has not ended (running, or killed)
            reading = job / "metrics.json"
            if end is None and RunDirLock(job).running_here():
                row |= {"status": "running", "logs": " ".join([str(job / "run.log")] * (job / "run.log").exists())}
            elif reading.exists() and (end or {}).get("ended") == "completed":
                row |= {"status": "completed", **final_metrics(reading)}
            elif (end or {}).get("ended", "").startswith("stopped"):
                row |= {"status": "stopped", "logs": f"{end['ended']}; {end['continue']}"}
            else:
                own = submitit_logs.get(int(job.name)) or submitit_logs.get(None, [])
                logs = [str(job / "run.log")] * (job / "run.log").exists() + own
                row |= {"status": "failed", "logs": " ".join(logs)}
        except (RlvrError, OSError, ValueError, yaml.YAMLError) as exc:
            row |= {"status": "failed", "logs": f"{reading} unreadable: {' '.join(str(exc).split())}"}
        rows.append(row)
    return rows


def final_metrics(path: Path) -> dict[str, Any]:
    """A job's metrics.json: an object of numbers (a null read as NaN: `json_text` writes NaN so), else
    ValueError saying what it holds."""
    from rlvr.tracking.outputs import nulls_as_nan, number_problem

    metrics = json.loads(path.read_text())
    if not isinstance(metrics, dict):
        raise ValueError(f"a JSON {type(metrics).__name__}, not an object of metrics")
    if problem := number_problem(metrics):
        raise ValueError(problem)
    return nulls_as_nan(metrics)


def write_report(sweep_dir: Path, objective: str | None = None) -> list[dict[str, Any]]:
    """The report's files written in `sweep_dir`; its rows (`collect`'s, `overrides` one string, and
    `swept`: the job's overrides of the keys the sweep varied). Nothing written where no job is."""
    rows = collect(sweep_dir)
    if not rows:
        return rows
    swept = swept_keys_of(sweep_dir, [r["overrides"] for r in rows])
    for r in rows:  # the csv keeps every override
        r["swept"] = " ".join(o for o in r["overrides"] if override_key(o) in swept)
        r["overrides"] = " ".join(r["overrides"])
    fixed = {"job", "swept", "overrides", "status", "logs"}
    columns = ["job", "swept", "status"] + sorted({k for r in rows for k in r} - fixed) + ["overrides", "logs"]
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in (objective, "eval_after_accuracy", "eval_pair_accuracy", "train_reward_last20", "train_seconds") if c]
    shown = list(dict.fromkeys(c for c in shown if any(c in r for r in rows)))
    sampled = sample_metric_names({k for r in rows for k in r}, EVAL_PREFIX)
    header = ["job", "swept", "status", *shown, *sampled]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        values = [with_uncertainty(r, c) if isinstance(r.get(c), float) else str(r.get(c, "")) for c in shown + sampled]
        lines.append("| " + " | ".join([str(r["job"]), r["swept"].replace("|", "\\|"), r["status"], *values]) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if sampled:
        lines += ["", "accuracy, mean@n, pass@k: value ± standard error over prompts; maj@k: value [95% bootstrap interval]."]
    if failed:
        lines += ["", "Failed jobs:"] + [f"- job {r['job']} ({r['overrides']}): {r['logs'] or 'no log found'}" for r in failed]
    if stopped := [r for r in rows if r["status"] == "stopped"]:
        lines += ["", "Stopped jobs:"] + [f"- job {r['job']} ({r['overrides']}): {r['logs']}" for r in stopped]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    metric = next((c for c in shown if any(isinstance(r.get(c), float) for r in rows)), None)
    if metric:
        plot(rows, metric, sweep_dir / "sweep_summary.png")
    plot_reward_curves(sweep_dir, rows, sweep_dir / "sweep_rewards.png")
    if sampled:
        plotted = sample_metric_names(sampled, EVAL_PREFIX, plotted=True)
        plot_eval_comparison(
            rows, [c for c in ("eval_after_accuracy", *plotted) if any(c in r for r in rows)], sweep_dir / "sweep_eval.png"
        )
    return rows


def swept_keys_of(sweep_dir: Path, overrides: list[list[str]]) -> set[str]:
    """The keys the sweep in `sweep_dir` varied: those its command swept (known to the process that
    launched it, else from its multirun.yaml, which Optuna's sweeper does not write) and those whose
    value differs between the jobs' `overrides` (a job that died before recording them left out)."""
    from omegaconf import OmegaConf

    from rlvr.launcher import SWEPT_KEYS_VAR, swept_keys

    keys = {key for key in os.environ.get(SWEPT_KEYS_VAR, "").split(",") if key}
    if not keys and (sweep_dir / "multirun.yaml").is_file():
        try:
            record = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
            keys = set(swept_keys(list(record.overrides.task), record.sweeper.get("params")))
        except Exception as exc:  # a record torn or edited by hand: the jobs' overrides still tell
            print(f"sweep report: {sweep_dir / 'multirun.yaml'} left out: {' '.join(str(exc).split())[:200]}", file=sys.stderr)
    known = [dict((override_key(o), o) for o in job) for job in overrides if job]
    every = set().union(*known) if known else set()
    return keys | {key for key in every if len({job.get(key) for job in known}) > 1}


def plot(rows: list[dict], metric: str, path: Path) -> None:
    from rlvr.plots import _pyplot, _save

    plt = _pyplot()
    done = [r for r in rows if isinstance(r.get(metric), float)]
    fig, ax = plt.subplots(figsize=(max(5, len(done) * 0.9), 4))
    ax.bar(range(len(done)), [r[metric] for r in done])
    ax.set_xticks(range(len(done)), [r["swept"].replace(" ", "\n") or str(r["job"]) for r in done], fontsize=7)
    ax.set(ylabel=metric, title=f"sweep: {metric}")
    _save(fig, path)


def plot_eval_comparison(rows: list[dict], metrics: list[str], path: Path) -> None:
    """Grouped bars: one group per eval metric, one bar per job, 95% intervals as error bars."""
    from rlvr.plots import _legend, _pyplot, _save

    plt = _pyplot()
    done = [r for r in rows if any(isinstance(r.get(m), (int, float)) for m in metrics)]
    width = 0.8 / len(done)
    fig, ax = plt.subplots(figsize=(max(6, len(metrics) * (0.6 + 0.25 * len(done))), 4.5))
    for j, r in enumerate(done):
        present = [i for i, m in enumerate(metrics) if isinstance(r.get(m), (int, float))]
        values = [r[metrics[i]] for i in present]
        bounds = [interval95(r, metrics[i]) or (r[metrics[i]],) * 2 for i in present]
        errors = [[max(v - lo, 0.0) for v, (lo, _) in zip(values, bounds)], [max(hi - v, 0.0) for v, (_, hi) in zip(values, bounds)]]
        ax.bar([i - 0.4 + width * (j + 0.5) for i in present], values, width, yerr=errors, capsize=3, label=r["swept"] or f"job {r['job']}")
    ax.set_xticks(range(len(metrics)), [m.removeprefix(EVAL_PREFIX) for m in metrics], fontsize=8)
    ax.set(ylabel="after training (95% intervals)", ylim=(0, 1.05), title="sweep: eval metrics")
    _legend(ax, fontsize=7)
    _save(fig, path)


def plot_reward_curves(sweep_dir: Path, rows: list[dict], path: Path) -> None:
    """Each job's training reward (rolling mean) on one set of axes, labelled by what the sweep varied; a
    job whose metrics.jsonl is corrupt is left out, in a line on stderr."""
    from rlvr.errors import DataError
    from rlvr.plots import _legend, _pyplot, _save, rolling_mean
    from rlvr.tracking.outputs import read_metrics

    curves = []
    for r in rows:
        metrics_file = sweep_dir / str(r["job"]) / "metrics.jsonl"
        try:
            logged = [m for m in read_metrics(metrics_file) if "reward" in m] if metrics_file.exists() else []
        except DataError as exc:
            print(f"sweep report: job {r['job']}'s reward curve left out: {exc}", file=sys.stderr)
            continue
        if logged:
            curves.append((r["swept"] or str(r["job"]), [m["step"] for m in logged], [m["reward"] for m in logged]))
    if not curves:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, steps, rewards in curves:
        ax.plot(steps, rolling_mean(rewards, max(1, len(rewards) // 20)), label=label)
    ax.set(xlabel="step", ylabel="mean reward (rolling mean, 5% of steps)", title="sweep: training reward")
    _legend(ax, fontsize=7)
    _save(fig, path)


class SweepReport(Callback):
    """Hydra callback: write the report when a multirun ends. A sweeper that goes on past a failed
    or stopped job (Optuna's marks the trial failed and draws the next) ends the command with exit
    code 1 after its last job, so that a script sees it (the basic sweeper's failed job ends it itself)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_report(sweep_dir, config.get("objective"))
        if not rows:  # no numbered job dir: none at all, or jobs in dirs of other names (hydra.sweep.subdir), not reported
            if not any(p.is_dir() and not p.name.startswith(".") for p in sweep_dir.iterdir()):
                print(f"rlvr: error: the sweep ran no job (a sweep of no values, e.g. range(0,0)): nothing in {sweep_dir}", file=sys.stderr)
                sys.exit(2)
            return
        report = sweep_dir / "sweep_summary.md"
        print(f"sweep report: {report} ({statuses(rows)})")
        if line := unfinished_line(rows, report):
            print(line, file=sys.stderr)
            sys.exit(1)  # a callback's exception would be a warning to Hydra; this ends the command


def unfinished_line(rows: list[dict], report: Path, prog: str = "rlvr") -> str | None:
    """ "<prog>: N of M jobs did not complete: ..." when any job of the report's `rows` did not."""
    if unfinished := [row for row in rows if row["status"] != "completed"]:
        return f"{prog}: {len(unfinished)} of {len(rows)} jobs did not complete: their logs are listed in {report}"
    return None


def statuses(rows: list[dict]) -> str:
    """Each status's count, in the order first met: "3 jobs: 2 completed, 1 failed"."""
    counts = Counter(row["status"] for row in rows)
    return f"{len(rows)} jobs: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="rlvr-sweep-report",
        description="sweep_summary.csv/.md/.png of a -m sweep's dir (written after "
        "every sweep; this writes them again, e.g. while jobs still run)",
    )
    parser.add_argument("sweep_dir", type=Path)
    sweep_dir = parser.parse_args(argv).sweep_dir
    if not sweep_dir.is_dir():
        parser.error(f"{sweep_dir} is not a directory")
    rows = write_report(sweep_dir)
    if not rows:
        parser.error(f"{sweep_dir} holds no job dirs (0/, 1/, ...): name the sweep dir of a -m run (hydra.sweep.dir)")
    print((sweep_dir / "sweep_summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
