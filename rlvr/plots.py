"""PNG curves from a run dir: reward, accuracy, eval metrics and per-prompt accuracy versus step.

python -m rlvr.plots RUN_DIR               # reward.png, accuracy.png (eval.png if it evaluated while training) into RUN_DIR/plots/
python -m rlvr.plots RUN_DIR --per-prompt  # also per_prompt_accuracy.png (top prompts by count)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from rlvr.errors import RlvrError
from rlvr.tracking.outputs import read_jsonl, read_metrics, step_problem


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax, **kwargs) -> None:
    """A legend of the axes' labelled lines, where there are any (matplotlib warns of an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def rollout_row_problem(row: dict) -> str | None:
    """Why a rollouts.jsonl row cannot be plotted (see `read_jsonl`): a verdict (`correct`) other than
    true, false or null, or a judged row without a whole-number `step` or a `prompt_id`."""
    correct = row.get("correct")
    if correct is None:
        return None
    if not isinstance(correct, bool):
        return f"correct is {json.dumps(correct)[:40]}, not true, false or null"
    return step_problem(row) or (None if isinstance(row.get("prompt_id"), (str, int)) else "no prompt_id")


def accuracy_by_step(rollouts: list[dict]) -> dict[int, float]:
    by_step: dict[int, list[bool]] = defaultdict(list)
    for row in rollouts:
        if row.get("correct") is not None:
            by_step[row["step"]].append(bool(row["correct"]))
    return {step: sum(v) / len(v) for step, v in sorted(by_step.items())}


def rolling_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` values, so a trend shows through per-step noise."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_run(run_dir: Path) -> list[Path]:
    """The curves that `run_dir`'s metrics.jsonl and rollouts.jsonl hold data for, written into
    `run_dir/plots/`; returns their paths, none when the logs hold nothing to plot (no rows yet, or no
    reward, accuracy, eval/ values or rollout verdicts). A corrupt log raises DataError naming file and line."""
    plt = _pyplot()
    written = []
    logged = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    metrics = [m for m in logged if math.isfinite(m.get("reward", math.nan))]  # GRPO-family runs; a step no reward judged: NaN
    if metrics:
        fig, ax = plt.subplots(figsize=(6, 4))
        steps, rewards = [m["step"] for m in metrics], [m["reward"] for m in metrics]
        ax.plot(steps, rewards, alpha=0.35, label="mean reward")
        window = max(1, len(rewards) // 40)
        if window > 1:
            ax.plot(steps, rolling_mean(rewards, window), linewidth=2, label=f"mean reward, rolling mean of {window}")
        for key in sorted(k for k in metrics[0] if k.startswith("rewards/") and k.endswith("/mean")):
            ax.plot(steps, [m.get(key) for m in metrics], alpha=0.35, label=key)
        ax.set(xlabel="step", ylabel="reward", title="training reward")
        _legend(ax, fontsize=7)
        written.append(_save(fig, run_dir / "plots" / "reward.png"))
    train_acc = [(m["step"], m["accuracy"]) for m in logged if "accuracy" in m]  # reward-model runs
    eval_acc = [(m["step"], m["eval_accuracy"]) for m in logged if "eval_accuracy" in m]
    if train_acc or eval_acc:  # a run shorter than logging_steps logs evals only
        fig, ax = plt.subplots(figsize=(6, 4))
        if train_acc:
            ax.plot(*zip(*train_acc), label="train pair accuracy")
        if eval_acc:
            ax.plot(*zip(*eval_acc), marker="o", label="eval pair accuracy (TRL, batch-averaged)")
        ax.set(xlabel="step", ylabel="chosen > rejected", ylim=(0, 1), title="reward model accuracy")
        _legend(ax, fontsize=7)
        written.append(_save(fig, run_dir / "plots" / "rm_accuracy.png"))
    evals = [m for m in logged if any(k.startswith("eval/") for k in m)]  # eval.every_steps > 0
    if evals:
        written.append(plot_eval_curve(evals, run_dir / "plots" / "eval.png", title="evaluation during training"))
    if any("vocab/reasoning_share_in_think" in m for m in metrics):
        written += plot_reasoning_vocab(run_dir, metrics)
    rollouts_path = run_dir / "rollouts.jsonl"
    if rollouts_path.exists():
        accuracy = accuracy_by_step(read_jsonl(rollouts_path, rollout_row_problem))
        if accuracy:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(list(accuracy), list(accuracy.values()), label="sampled completions correct")
            ax.set(xlabel="step", ylabel="accuracy", ylim=(0, 1), title="training accuracy")
            _legend(ax, fontsize=7)
            written.append(_save(fig, run_dir / "plots" / "accuracy.png"))
    return written


def plot_eval_curve(rows: list[dict], path: Path, title: str = "eval") -> Path:
    """Eval metrics against step from rows of `step` and `eval/<metric>` (metrics.jsonl's eval rows,
    rlvr.eval's curve.jsonl): greedy accuracy, mean@n, pass@k, maj@k, each with its 95% interval."""
    from rlvr.evaluation.metrics import interval95, sample_metric_names

    plt = _pyplot()
    keys = {k for row in rows for k in row}
    names = [k for k in ("eval/accuracy", *sample_metric_names(keys, "eval/", plotted=True)) if k in keys]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        points = [row for row in rows if isinstance(row.get(name), (int, float))]
        steps = [row["step"] for row in points]
        (line,) = ax.plot(steps, [row[name] for row in points], marker="o", ms=3, label=name.removeprefix("eval/"))
        bands = [interval95({k.removeprefix("eval/"): v for k, v in row.items()}, name.removeprefix("eval/")) for row in points]
        if all(bands):
            ax.fill_between(steps, [lo for lo, _ in bands], [hi for _, hi in bands], color=line.get_color(), alpha=0.1)
    ax.set(xlabel="step", ylabel="share of eval prompts (95% intervals)", ylim=(-0.02, 1.02), title=title)
    _legend(ax, fontsize=7)
    return _save(fig, path)


def plot_reasoning_vocab(run_dir: Path, metrics: list[dict]) -> list[Path]:
    """vocab_usage.png: share of think tokens drawn from the reasoning vocabulary, and reasoning ids
    outside think (0 by construction); embedding_drift.png: how far the copies moved from their
    originals, over training and (from reasoning_vocab.json) per row at the end."""
    plt = _pyplot()
    rows = [m for m in metrics if "vocab/reasoning_share_in_think" in m]
    steps = [m["step"] for m in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [m["vocab/reasoning_share_in_think"] for m in rows], label="reasoning ids / think tokens")
    ax.plot(steps, [m["vocab/reasoning_outside_think"] for m in rows], label="reasoning ids outside think (count)")
    ax.set(xlabel="step", ylabel="share", title="reasoning vocabulary usage")
    _legend(ax, fontsize=7)
    written = [_save(fig, run_dir / "plots" / "vocab_usage.png")]
    final = run_dir / "reasoning_vocab.json"
    fig, axes = plt.subplots(1, 2 if final.exists() else 1, figsize=(10 if final.exists() else 6, 4), squeeze=False)
    axes[0][0].plot(steps, [m["vocab/embedding_drift"] for m in rows])
    axes[0][0].set(xlabel="step", ylabel="mean |e_reasoning - e_standard| / |e_standard|", title="embedding drift")
    if final.exists():
        norms = json.loads(final.read_text())
        axes[0][1].scatter(norms["standard_norm"], norms["reasoning_norm"], s=8)
        every = norms["standard_norm"] + norms["reasoning_norm"]
        axes[0][1].plot([min(every), max(every)], [min(every), max(every)], linewidth=0.8, color="grey")  # no drift
        axes[0][1].set(xlabel="norm of the standard row", ylabel="norm of its reasoning copy", title="rows at the end")
    written.append(_save(fig, run_dir / "plots" / "embedding_drift.png"))
    return written


def plot_per_prompt(run_dir: Path, top: int = 12) -> Path | None:
    """per_prompt_accuracy.png: the accuracy of each of the `top` prompts with the most judged
    completions in `run_dir/rollouts.jsonl` (which must exist), per step; None when no rollout has a
    verdict (`correct`). A corrupt log raises DataError naming file and line."""
    plt = _pyplot()
    rows = read_jsonl(run_dir / "rollouts.jsonl", rollout_row_problem)
    series: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    labels = {}
    for row in rows:
        if row.get("correct") is not None:
            series[row["prompt_id"]][row["step"]].append(bool(row["correct"]))
            labels[row["prompt_id"]] = str(row.get("prompt", row["prompt_id"]))[-40:]
    if not series:
        return None
    busiest = sorted(series, key=lambda pid: -sum(len(v) for v in series[pid].values()))[:top]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pid in busiest:
        steps = sorted(series[pid])
        ax.plot(steps, [sum(series[pid][s]) / len(series[pid][s]) for s in steps], marker="o", ms=3, label=labels[pid])
    ax.set(xlabel="step", ylabel="accuracy of its completions", ylim=(-0.05, 1.05), title="per-prompt accuracy")
    _legend(ax, fontsize=6, ncol=2)
    return _save(fig, run_dir / "plots" / "per_prompt_accuracy.png")


def plot_token_lengths(tokenized, pairs, tokenizer, path: Path) -> Path:
    """Histogram of token lengths: prompt, prompt + chosen, prompt + rejected (reward-model data)."""
    plt = _pyplot()
    chosen = [len(ids) for ids in tokenized["chosen_ids"]]
    rejected = [len(ids) for ids in tokenized["rejected_ids"]]
    prompts = [len(tokenizer.apply_chat_template(p, tokenize=True, return_dict=False)) if p else 0 for p in pairs["prompt"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for values, label in ((prompts, "prompt"), (chosen, "prompt + chosen"), (rejected, "prompt + rejected")):
        ax.hist(values, bins=40, alpha=0.5, label=label)
    ax.set(xlabel="tokens", ylabel="pairs", title="token lengths")
    _legend(ax, fontsize=7)
    return _save(fig, path)


def print_coloured_tokens(tokenizer, ids: list[int], limit: int = 200) -> None:
    """Print one tokenized sample with alternating background colours, so token boundaries show."""
    colours = ("\033[48;5;153m", "\033[48;5;223m")
    pieces = [f"{colours[i % 2]}{tokenizer.decode([t])}" for i, t in enumerate(ids[:limit])]
    more = f" … (+{len(ids) - limit} tokens)" if len(ids) > limit else ""
    print("sample tokens: " + "".join(pieces) + "\033[0m" + more, flush=True)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Writes the plots and prints their paths. A run dir with nothing to plot yet is said so on one
    line, exit 0; a missing run dir or log, a bad argument or a corrupt log is one line, exit 2."""
    parser = argparse.ArgumentParser(prog="rlvr-plots", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--per-prompt", action="store_true", help="also plot accuracy per prompt versus step")
    parser.add_argument("--top", type=positive_int, default=12, help="prompts in the per-prompt plot (at least 1)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir
    if not run_dir.is_dir():  # exit 2, as argparse's own errors
        parser.error(f"{run_dir}: {'a file, not a run dir' if run_dir.is_file() else 'no such directory'}")
    logs = [name for name in ("metrics.jsonl", "rollouts.jsonl") if (run_dir / name).exists()]
    if not logs:
        sweep = " (a -m run's sweep dir: python -m rlvr.sweep_report DIR plots its jobs)" if (run_dir / "0").is_dir() else ""
        parser.error(f"{run_dir} has no metrics.jsonl or rollouts.jsonl{sweep}")
    if args.per_prompt and "rollouts.jsonl" not in logs:
        parser.error(f"{run_dir} has no rollouts.jsonl (logging.rollouts=false?): --per-prompt plots from it")
    try:
        paths = plot_run(run_dir)
        per_prompt = plot_per_prompt(run_dir, args.top) if args.per_prompt else None
    except RlvrError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if not paths:
        plotted_from = {"metrics.jsonl": "reward, accuracy or eval/ values", "rollouts.jsonl": "verdicts (correct)"}
        found = "; ".join(f"{run_dir / name} holds no {plotted_from[name]}" for name in logs)
        print(f"{parser.prog}: nothing to plot yet: {found}", file=sys.stderr)
    elif args.per_prompt and per_prompt is None:  # with no paths, the line above said it
        print(
            f"{parser.prog}: nothing to plot per prompt: {run_dir / 'rollouts.jsonl'} holds no verdicts (correct): "
            "none logged yet, or no reward of the run judges correctness",
            file=sys.stderr,
        )
    for path in [*paths, *([per_prompt] if per_prompt else [])]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
