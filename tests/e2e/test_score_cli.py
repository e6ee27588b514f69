"""`python -m rlvr.score`: debug rewards on a JSONL file without a model."""

import json
import os

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def test_score_writes_rewards_and_prints_a_summary(rows_file, tmp_path):
    rows = [
        {"prompt": "p1", "completion": "work\nFinal: 18", "answer": "so... #### 18"},
        {"prompt": "p2", "completion": "work\nFinal: 17", "answer": "#### 18"},
        {"prompt": "p3", "completion": "no final line", "answer": "3"},
    ]
    out = tmp_path / "scored.jsonl"
    result = run_cli("rlvr.score", "reward=gsm8k_strict", f"input={rows_file(rows)}", f"output={out}")
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in scored] == [1.0, 0.1, 0.0]
    assert [r["reasons"]["gsm8k_strict"] for r in scored] == ["correct", "wrong", "missing"]
    assert scored[0]["prediction"] == "18" and scored[0]["prompt"] == "p1"
    assert "3 rows, mean reward 0.3667" in result.stdout
    assert not (ROOT / "score.log").exists()  # Hydra's job log goes to stdout, not into the current directory


def test_a_chat_completion_is_scored_by_its_message_text(rows_file):
    """Completions as TRL passes them for chat data: a list of messages, scored by the last one's text."""
    chat = [{"role": "assistant", "content": "work\nFinal: 18"}]
    rows = [{"prompt": [{"role": "user", "content": "q"}], "completion": chat, "answer": "#### 18"}]
    result = run_cli("rlvr.score", "reward=gsm8k_strict", f"input={rows_file(rows)}")
    assert result.returncode == 0, result.stderr
    assert "1 rows, mean reward 1.0000" in result.stdout


def test_score_with_combined_presets_and_a_custom_gold_column(rows_file):
    rows = [{"completion": "<think>2+2</think> \\boxed{4}", "gold": "4"}]
    result = run_cli("rlvr.score", "reward=[math_verify,think_format]", f"input={rows_file(rows)}", "answer_column=gold")
    assert result.returncode == 0, result.stderr
    assert "1 rows, mean reward 2.0000" in result.stdout


def test_score_runs_code_rows_in_the_sandbox(rows_file):
    tests = "assert add(1, 2) == 3\nassert add(0, 0) == 0\n"
    rows = [
        {"completion": "```python\ndef add(a, b):\n    return a + b\n```", "tests": tests, "entry_point": "add"},
        {"completion": "def add(a, b):\n    return 3\n", "tests": tests, "entry_point": "add"},
        {"completion": "import sys\nsys.exit(0)\n", "tests": tests, "entry_point": "add"},
    ]
    result = run_cli("rlvr.score", "reward=code_tests", f"input={rows_file(rows)}", "answer_column=tests")
    assert result.returncode == 0, result.stderr
    assert "3 rows, mean reward 0.3333" in result.stdout and "wrong 2, correct 1" in result.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"completion": "x", "answer": "1"}\nnot json\n', "line 2: not JSON (Expecting value at column 1)"),
        ("\n", "has no rows"),
        ('[1, 2]\n{"completion": "x"}\n', "line 1: [1, 2] is not an object of fields ({...})"),  # it said: no 'completion' field
    ],
)
def test_score_bad_input_is_one_line(tmp_path, content, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    result = run_cli("rlvr.score", f"input={bad}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"rlvr.score: error: {bad} {problem}"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["reward=gsm8k_strict"], "input must be set (it is ???): input=ROWS.jsonl, the rows to score"),
        (["reward=hybrid", "input=rows.jsonl"], "reward.functions.hybrid.reward_model must be set (it is ???)"),
        (  # before the reward model loads (this one is nowhere)
            ["reward=hybrid", "input=rows.jsonl", "reward.functions.hybrid.reward_model=/nowhere", "reward.functions.hybrid.r_min=0"],
            "reward 'hybrid' needs r_min and r_max: a run calibrates them on its policy's samples, rlvr.score has no policy; "
            "set reward.functions.hybrid.r_min and r_max (a run's are in its hybrid_calibration.json)",
        ),
        (["input=rows.jsonl", "reward.checks.slow_call_s=0"], "reward.checks.slow_call_s=0.0 must be > 0"),
        (["input=rows.jsonl", "reward.checks.failure_warn_frac=1.5"], "reward.checks.failure_warn_frac=1.5 must be in [0, 1]"),
    ],
)
def test_a_value_left_unset_or_out_of_range_is_one_line_naming_it(args, line):
    result = run_cli("rlvr.score", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"rlvr.score: error: {line}"


def test_score_input_that_is_not_utf8_is_one_line_naming_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"completion": "x", "answer": "1"}\n{"completion": "\xff\xfe", "answer": "1"}\n')
    out = tmp_path / "scored.jsonl"
    out.write_text("previous\n")
    result = run_cli("rlvr.score", f"input={bad}", f"output={out}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"rlvr.score: error: {bad} line 2: not UTF-8 (byte 0xff at column 17: invalid start byte)"
    assert out.read_text() == "previous\n"


def test_a_numeric_gold_is_scored_as_the_file_writes_it_and_written_back_a_number(tmp_path):
    """The output's gold was the number's text ("answer": 12 became "12"): a column of another type."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"completion": "Final: 12", "answer": 12}\n{"completion": "Final: 2.5", "answer": 2.50}\n')
    out = tmp_path / "scored.jsonl"
    result = run_cli("rlvr.score", f"input={rows}", f"output={out}")
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["answer"], row["reward"]) for row in scored] == [(12, 1.0), (2.5, 1.0)]


def test_score_keeps_a_lone_surrogate_as_its_json_escape(rows_file, tmp_path):
    # JSON allows "\ud800" (a model can emit half a surrogate pair); UTF-8 cannot encode it.
    rows = [{"completion": "Final: 3 \ud800", "answer": "3", "note": "é"}, {"completion": "Final: 4", "answer": "4"}]
    out = tmp_path / "scored.jsonl"
    result = run_cli("rlvr.score", f"input={rows_file(rows)}", f"output={out}")
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert '"Final: 3 \\ud800"' in text and '"é"' in text  # only the surrogate is escaped
    scored = [json.loads(line) for line in text.splitlines()]
    assert [(r["completion"], r["reward"]) for r in scored] == [("Final: 3 \ud800", 0.0), ("Final: 4", 1.0)]
    assert "2 rows, mean reward 0.5000" in result.stdout
    assert result.stderr.strip() == "rlvr.score: row 1: a lone surrogate is written as its JSON escape (\\ud8xx)"


def test_score_summary_prints_a_reason_holding_a_lone_surrogate(rows_file, tmp_path):
    (tmp_path / "echo_reward.py").write_text(
        "from rlvr.rewards.base import Outcome, Reward\n\n"
        "class Echo(Reward):\n"
        "    needs_gold = False\n\n"
        "    def score(self, completions, golds, prompts=None):\n"
        "        return [Outcome(0.0, c) for c in completions]\n"
    )
    rows = rows_file([{"completion": "half \ud800"}])
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    result = run_cli(
        "rlvr.score",
        "reward=think_format",
        "reward.functions.think_format._target_=echo_reward.Echo",
        f"input={rows}",
        env={"PYTHONPATH": path},
    )
    assert result.returncode == 0, result.stderr
    assert "think_format: mean 0.0000; half \\ud800 1" in result.stdout


def test_score_output_that_cannot_be_written_is_one_line(rows_file, tmp_path):
    out = tmp_path / "scored.jsonl"
    out.mkdir()
    result = run_cli("rlvr.score", f"input={rows_file([{'completion': 'Final: 1', 'answer': '1'}])}", f"output={out}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"rlvr.score: error: cannot write {out} (Is a directory)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "scored.jsonl"]  # no temp file left


def test_scoring_a_file_into_itself_is_refused_before_anything_is_written(rows_file, tmp_path):
    """The scored rows leave out what the file held that scoring does not make (an eval's `samples`)."""
    rows = rows_file([{"completion": "Final: 1", "answer": "1", "samples": [{"completion": "Final: 2"}]}])
    before = rows.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(rows)
    for output in (rows, tmp_path / "link.jsonl"):
        result = run_cli("rlvr.score", f"input={rows}", f"output={output}")
        assert result.returncode == 2
        refusal = f"rlvr.score: error: output={output} is the input file, which the scored rows would replace: name another output"
        assert result.stderr.strip() == refusal
        assert rows.read_bytes() == before


def test_score_with_math_verify_exits_without_a_traceback(rows_file):
    # More workers than cores: some are still starting when the run ends, and pebble's stop used to
    # unlink their channel's semaphores first (SemLock FileNotFoundError tracebacks, exit code 0).
    rows = [{"completion": "\\boxed{4}", "answer": "4"}, {"completion": "\\boxed{5}", "answer": "4"}]
    result = run_cli("rlvr.score", "reward=math_verify", "reward.functions.math_verify.workers=32", f"input={rows_file(rows)}")
    assert result.returncode == 0, result.stderr
    assert "2 rows, mean reward 0.5000" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_an_answer_column_the_input_lacks_is_one_line(rows_file):
    """Not silently the `answer` column instead."""
    rows = [{"completion": "The answer is 4.", "answer": "4"}]
    result = run_cli("rlvr.score", f"input={rows_file(rows)}", "answer_column=gold")
    assert result.returncode == 2
    assert result.stderr.strip() == "rlvr.score: error: answer_column=gold: the input has no such column (its columns: answer, completion)"


def test_a_runs_rollouts_without_answer_column_gold_are_told_it(rows_file):
    rows = [{"prompt": "p", "completion": "Final: 4", "gold": "4", "step": 1}]  # rollouts.jsonl's columns
    result = run_cli("rlvr.score", "reward=gsm8k_strict", f"input={rows_file(rows)}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rlvr.score: error: reward 'gsm8k_strict' needs an 'answer' column in the input "
        "(it has a 'gold' column, as a run's rollouts.jsonl does: answer_column=gold)"
    )
    without_gold = run_cli("rlvr.score", "reward=gsm8k_strict", f"input={rows_file([{'completion': 'Final: 4'}])}")
    assert without_gold.stderr.strip() == "rlvr.score: error: reward 'gsm8k_strict' needs an 'answer' column in the input"


def test_help_is_rlvr_scores_own():
    """Not Hydra's generic help, whose groups (model, dataset, ...) rlvr.score refuses."""
    shown = run_cli("rlvr.score", "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("rlvr.score: score a JSONL of completions")
    assert "== Configuration groups ==" not in shown.stdout and "gsm8k_strict:" in shown.stdout


def test_span_rewards_are_scored_as_fgrpo_sums_their_spans(rows_file, tmp_path):
    """reward=fgrpo_spans was refused: its spans are not a float. Accuracy (+1 right, -1 wrong or none)
    plus format (0.5 for a final line) per completion, as algorithm=fgrpo's logs sum them. Rows scored
    before (as a run's rollouts are) too: their `correct` set answer_spans's own `correct` argument."""
    rows = [
        {"completion": "3+5 is 8\nFinal: 8", "answer": "8", "correct": True, "reward": 1.5},
        {"completion": "Final: 7", "answer": "8", "correct": False, "reward": -0.5},
        {"completion": "no idea", "answer": "8"},
    ]
    out = tmp_path / "scored.jsonl"
    result = run_cli("rlvr.score", "reward=fgrpo_spans", f"input={rows_file(rows)}", f"output={out}")
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["reward"], row["prediction"], row["correct"]) for row in scored] == [
        (1.5, "8", True),
        (-0.5, "7", False),
        (-1.0, None, False),  # no number at all: missing, with no prediction, as the scalar rewards say
    ]


USER_REWARDS = """
import time


def hangs(completions, **kwargs):
    time.sleep(3600)


def raises(completions, **kwargs):
    raise ValueError("boom")


def by_level(completions, level, **kwargs):
    return [1.0 / level[0]] * len(completions)
"""


@pytest.mark.parametrize(
    ("function", "timeout", "expected"),
    [
        ("hangs", ", timeout_s: 1", "no verdict (None) 1"),  # a first call outside the checks never returned
        ("raises", "", "rlvr.score: error: reward 'mine' raised ValueError: boom (at {rewards}:10)"),  # outside the working dir: whole
        (  # it was the TypeError of the first call, naming checks.py
            "by_level",
            "",
            "rlvr.score: error: reward.functions.mine: by_level takes 'level' (no default), which no column of the input gives "
            "(columns: answer): give it a default, or set it (reward.functions.mine.level=...)",
        ),
    ],
)
def test_a_users_reward_is_scored_through_the_checks_as_in_training(rows_file, tmp_path, function, timeout, expected):
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}
    reward = f"+reward.functions.mine={{_target_: user_rewards.{function}{timeout}}}"
    result = run_cli("rlvr.score", f"input={rows_file([{'completion': 'c', 'answer': '1'}])}", reward, env=env, timeout=120)
    expected = expected.format(rewards=(tmp_path / "user_rewards.py").resolve())
    assert "Traceback" not in result.stderr and expected in (result.stdout + result.stderr), result.stderr[-2000:]


SLOW_REWARD = """
import pathlib, time
def slow(completions, **kwargs):
    pathlib.Path(__file__).with_name("started").touch()
    time.sleep(120)
    return [0.0] * len(completions)
"""


def test_a_ctrl_c_while_a_reward_runs_is_one_line_and_writes_nothing(rows_file, tmp_path):
    """It was KeyboardInterrupt's traceback through Hydra and the reward's call."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "slowreward.py").write_text(SLOW_REWARD)
    out = tmp_path / "scored.jsonl"
    args = ["+reward.functions.slow={_target_: slowreward.slow}", "~reward.functions.gsm8k_strict"]
    command = [sys.executable, "-m", "rlvr.score", *args, f"input={rows_file([{'completion': 'x', 'answer': '1'}])}", f"output={out}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    # SIGINT as a terminal sends it: handled by Python (a background job of a script would ignore it)
    score = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        restore_signals=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "started").exists() and score.poll() is None:
            time.sleep(0.1)
        score.send_signal(signal.SIGINT)
        _, stderr = score.communicate(timeout=60)
    finally:
        score.kill()
    assert score.returncode == 130 and stderr.strip().splitlines()[-1] == "rlvr.score: stopped by Ctrl-C: nothing written", stderr[-2000:]
    assert "Traceback" not in stderr and not out.exists()
