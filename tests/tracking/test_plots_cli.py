"""`python -m rlvr.plots`: refusals are one line, exit 2, naming what to do instead; a run dir with
nothing to plot yet is said so on one line, exit 0."""

import json

import pytest

from rlvr.plots import main

REWARD_ROWS = [{"step": 1, "reward": 0.25}, {"step": 2, "reward": 0.5}]
ROLLOUTS = [
    {"step": step, "prompt_id": pid, "prompt": f"prompt {pid}", "correct": (step + n) % 2 == 0}
    for step in (1, 2)
    for pid in ("a", "b", "c")
    for n in range(2 if pid == "a" else 1)
]


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def refusal(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_a_missing_dir_and_a_sweep_dir_are_named_as_such(tmp_path, capsys):
    assert refusal(capsys, str(tmp_path / "missing")) == f"rlvr-plots: error: {tmp_path / 'missing'}: no such directory"
    (tmp_path / "run.log").write_text("")
    assert refusal(capsys, str(tmp_path / "run.log")) == f"rlvr-plots: error: {tmp_path / 'run.log'}: a file, not a run dir"
    (tmp_path / "0").mkdir()
    assert refusal(capsys, str(tmp_path)) == (
        f"rlvr-plots: error: {tmp_path} has no metrics.jsonl or rollouts.jsonl "
        "(a -m run's sweep dir: python -m rlvr.sweep_report DIR plots its jobs)"
    )


def test_per_prompt_without_rollouts_is_refused_before_anything_is_written(tmp_path, capsys):
    write_jsonl(tmp_path / "metrics.jsonl", REWARD_ROWS)
    assert refusal(capsys, str(tmp_path), "--per-prompt") == (
        f"rlvr-plots: error: {tmp_path} has no rollouts.jsonl (logging.rollouts=false?): --per-prompt plots from it"
    )
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("name", ["metrics.jsonl", "rollouts.jsonl"])
def test_a_corrupt_line_before_the_last_is_one_line_naming_file_and_line(tmp_path, capsys, name):
    write_jsonl(tmp_path / "metrics.jsonl", REWARD_ROWS)
    write_jsonl(tmp_path / "rollouts.jsonl", ROLLOUTS)
    (tmp_path / name).write_text("{not json\n" + (tmp_path / name).read_text())
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), "--per-prompt"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"rlvr-plots: error: {tmp_path / name} line 1 is not a JSON row ("), err


@pytest.mark.parametrize(
    ("name", "row", "problem"),
    [
        ("metrics.jsonl", {"step": "2", "reward": 0.5}, 'step is "2", not a whole number'),
        ("metrics.jsonl", {"step": 1.5, "reward": 0.5}, "step is 1.5, not a whole number"),
        ("metrics.jsonl", {"reward": 0.5}, "no step"),
        ("metrics.jsonl", {"step": 2, "reward": "0.5"}, 'reward is "0.5", not a number'),
        ("metrics.jsonl", {"step": 2, "reward": True}, "reward is true, not a number"),
        ("rollouts.jsonl", {"step": 1, "prompt_id": "a", "correct": "false"}, 'correct is "false", not true, false or null'),
        ("rollouts.jsonl", {"step": 1, "prompt_id": "a", "correct": 0}, "correct is 0, not true, false or null"),
        ("rollouts.jsonl", {"step": "1", "prompt_id": "a", "correct": True}, 'step is "1", not a whole number'),
        ("rollouts.jsonl", {"prompt_id": "a", "correct": True}, "no step"),
        ("rollouts.jsonl", {"step": 1, "correct": True}, "no prompt_id"),
    ],
)
def test_a_hand_edited_row_is_one_line_naming_file_line_and_field(tmp_path, capsys, name, row, problem):
    """A string step or reward, a row without step or prompt_id were tracebacks; a verdict "false"
    (a string) was counted as correct."""
    write_jsonl(tmp_path / "metrics.jsonl", REWARD_ROWS)
    write_jsonl(tmp_path / "rollouts.jsonl", ROLLOUTS)
    with open(tmp_path / name, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    lines = len((tmp_path / name).read_text().splitlines())
    expected = f"rlvr-plots: error: {tmp_path / name} line {lines}: {problem}: delete or fix that line"
    assert refusal(capsys, str(tmp_path), "--per-prompt") == expected


def test_unjudged_rollouts_need_no_step_or_prompt_id_and_a_null_metric_is_nan(tmp_path, capsys):
    write_jsonl(tmp_path / "metrics.jsonl", [*REWARD_ROWS, {"step": 3, "reward": None, "loss": 0.1}])
    write_jsonl(tmp_path / "rollouts.jsonl", [*ROLLOUTS, {"correct": None}, {"completion": "x"}])
    assert main([str(tmp_path), "--per-prompt"]) == 0
    assert len(capsys.readouterr().out.split()) == 3


@pytest.mark.parametrize(
    "rows", [[], [{"step": 1, "loss": 0.5}], [{"step": 1, "loss": 0.5, "reward": None}]], ids=["empty", "no reward", "no verdict"]
)
def test_a_run_with_nothing_to_plot_says_so(tmp_path, capsys, rows):
    write_jsonl(tmp_path / "metrics.jsonl", rows)
    assert main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"rlvr-plots: nothing to plot yet: {tmp_path / 'metrics.jsonl'} holds no reward, accuracy or eval/ values"]
    (tmp_path / "rollouts.jsonl").write_text("")
    assert main([str(tmp_path), "--per-prompt"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"rlvr-plots: nothing to plot yet: {tmp_path / 'metrics.jsonl'} holds no reward, accuracy or eval/ values; "
        f"{tmp_path / 'rollouts.jsonl'} holds no verdicts (correct)"
    ]


def test_rollouts_without_verdicts_leave_no_per_prompt_plot_and_say_so(tmp_path, capsys):
    write_jsonl(tmp_path / "metrics.jsonl", REWARD_ROWS)
    write_jsonl(tmp_path / "rollouts.jsonl", [{**row, "correct": None} for row in ROLLOUTS])
    assert main([str(tmp_path), "--per-prompt"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(tmp_path / "plots" / "reward.png")]
    assert err.splitlines() == [
        f"rlvr-plots: nothing to plot per prompt: {tmp_path / 'rollouts.jsonl'} holds no verdicts (correct): "
        "none logged yet, or no reward of the run judges correctness"
    ]
    assert not (tmp_path / "plots" / "per_prompt_accuracy.png").exists()


@pytest.mark.parametrize(
    ("top", "problem"), [("-3", "must be at least 1, not -3"), ("0", "must be at least 1, not 0"), ("x", "'x' is not an integer")]
)
def test_top_below_one_is_refused(tmp_path, capsys, top, problem):
    write_jsonl(tmp_path / "metrics.jsonl", REWARD_ROWS)
    write_jsonl(tmp_path / "rollouts.jsonl", ROLLOUTS)
    assert refusal(capsys, str(tmp_path), "--per-prompt", "--top", top) == f"rlvr-plots: error: argument --top: {problem}"
    assert not (tmp_path / "plots").exists()


def test_per_prompt_plots_the_top_prompts(tmp_path, capsys, monkeypatch):
    write_jsonl(tmp_path / "metrics.jsonl", REWARD_ROWS)
    write_jsonl(tmp_path / "rollouts.jsonl", ROLLOUTS)
    import matplotlib.axes

    legends = []
    legend = matplotlib.axes.Axes.legend
    monkeypatch.setattr(
        matplotlib.axes.Axes, "legend", lambda ax, *a, **k: legends.append(ax.get_legend_handles_labels()[1]) or legend(ax, *a, **k)
    )
    assert main([str(tmp_path), "--per-prompt", "--top", "1"]) == 0
    plots = tmp_path / "plots"
    assert capsys.readouterr().out.splitlines() == [str(plots / n) for n in ("reward.png", "accuracy.png", "per_prompt_accuracy.png")]
    assert legends[-1] == ["prompt a"]  # the prompt with the most judged completions


def test_a_reward_model_run_shorter_than_its_logging_steps_plots_its_eval_accuracy(tmp_path, capsys):
    """Evals logged, no training row (max_steps < logging_steps): 'nothing to plot yet' was printed."""
    write_jsonl(tmp_path / "metrics.jsonl", [{"step": 2, "eval_accuracy": 0.5}, {"step": 4, "eval_accuracy": 0.75}])
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "plots" / "rm_accuracy.png")]


def test_an_eval_curve_with_nothing_labelled_draws_no_legend_and_no_warning(tmp_path, recwarn):
    """matplotlib's "No artists with labels found to put in legend" reached rlvr.eval's console."""
    from rlvr.plots import plot_eval_curve

    plot_eval_curve([{"step": 1, "eval/reward": 0.5}], tmp_path / "eval.png")
    assert (tmp_path / "eval.png").exists() and not [str(w.message) for w in recwarn]
