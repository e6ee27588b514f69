"""A report of a `-m` sweep in the sweep dir: sweep_summary.csv, sweep_summary.md, sweep_summary.png
(the final metric per job) and, for GRPO-family jobs, sweep_rewards.png (their reward curves, overlaid).

Runs by itself at the end of every multirun (a Hydra callback), whatever the launcher; also by hand:
    python -m rlvr.sweep_report multirun/DATE/TIME
Jobs without metrics.json are listed as failed, with the logs to read.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import yaml

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core < 1.2
    Callback = object


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir: its overrides, status, final metrics (or the logs of a failed job)."""
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        metrics_file = job / "metrics.json"
        row: dict[str, Any] = {"job": int(job.name), "overrides": " ".join(overrides or [])}
        if metrics_file.exists():
            row |= {"status": "completed", **json.loads(metrics_file.read_text())}
        else:
            logs = [str(p) for p in [job / "run.log", *sorted((sweep_dir / ".submitit").glob("*/*.err"))] if p.exists()]
            row |= {"status": "failed", "logs": " ".join(logs)}
        rows.append(row)
    return rows


def write_report(sweep_dir: Path, objective: str | None = None) -> list[dict[str, Any]]:
    rows = collect(sweep_dir)
    if not rows:
        return rows
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows))
    for r in rows:  # what the sweep varied; the csv keeps every override
        r["swept"] = " ".join(o for o in r["overrides"].split() if o not in shared)
    columns = ["job", "swept", "status"] + sorted({k for r in rows for k in r} - {"job", "swept", "overrides", "status", "logs"}) + ["overrides", "logs"]
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in (objective, "eval_after_accuracy", "eval_pair_accuracy", "train_reward_last20", "train_seconds") if c]
    shown = list(dict.fromkeys(c for c in shown if any(c in r for r in rows)))
    lines = ["| job | swept | status | " + " | ".join(shown) + " |", "|" + " --- |" * (3 + len(shown))]
    for r in rows:
        values = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in shown]
        lines.append(f"| {r['job']} | {r['swept']} | {r['status']} | " + " | ".join(values) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed jobs:"] + [f"- job {r['job']} ({r['overrides']}): {r['logs'] or 'no log found'}" for r in failed]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    metric = next((c for c in shown if any(isinstance(r.get(c), float) for r in rows)), None)
    if metric:
        plot(rows, metric, sweep_dir / "sweep_summary.png")
    plot_reward_curves(sweep_dir, rows, sweep_dir / "sweep_rewards.png")
    return rows


def plot(rows: list[dict], metric: str, path: Path) -> None:
    from rlvr.plots import _pyplot, _save

    plt = _pyplot()
    done = [r for r in rows if isinstance(r.get(metric), float)]
    fig, ax = plt.subplots(figsize=(max(5, len(done) * 0.9), 4))
    ax.bar(range(len(done)), [r[metric] for r in done])
    ax.set_xticks(range(len(done)), [r["swept"].replace(" ", "\n") or str(r["job"]) for r in done], fontsize=7)
    ax.set(ylabel=metric, title=f"sweep: {metric}")
    _save(fig, path)


def plot_reward_curves(sweep_dir: Path, rows: list[dict], path: Path) -> None:
    """Each job's training reward (rolling mean) on one set of axes, labelled by what the sweep varied."""
    from rlvr.plots import _pyplot, _save, rolling_mean
    from rlvr.tracking import read_jsonl

    curves = []
    for r in rows:
        metrics_file = sweep_dir / str(r["job"]) / "metrics.jsonl"
        logged = [m for m in read_jsonl(metrics_file) if "reward" in m] if metrics_file.exists() else []
        if logged:
            curves.append((r["swept"] or str(r["job"]), [m["step"] for m in logged], [m["reward"] for m in logged]))
    if not curves:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, steps, rewards in curves:
        ax.plot(steps, rolling_mean(rewards, max(1, len(rewards) // 20)), label=label)
    ax.set(xlabel="step", ylabel="mean reward (rolling mean, 5% of steps)", title="sweep: training reward")
    ax.legend(fontsize=7)
    _save(fig, path)


class SweepReport(Callback):
    """Hydra callback: write the report when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_report(sweep_dir, config.get("objective"))
            print(f"sweep report: {sweep_dir / 'sweep_summary.md'} ({len(rows)} jobs)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m rlvr.sweep_report SWEEP_DIR", file=sys.stderr)
        return 2
    rows = write_report(Path(args[0]))
    print((Path(args[0]) / "sweep_summary.md").read_text() if rows else "no job dirs found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
