"""`python -m rlvr.score`: debug rewards on a JSONL file without a model."""

import json

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


def test_score_with_combined_presets_and_a_custom_gold_column(rows_file):
    rows = [{"completion": "<think>2+2</think> \\boxed{4}", "gold": "4"}]
    result = run_cli("rlvr.score", "reward=[math_verify,think_format]", f"input={rows_file(rows)}",
                     "answer_column=gold")
    assert result.returncode == 0, result.stderr
    assert "1 rows, mean reward 2.0000" in result.stdout


@pytest.mark.parametrize(("content", "problem"), [
    ('{"completion": "x", "answer": "1"}\nnot json\n', "line 2: not JSON (Expecting value)"),
    ("\n", "has no rows"),
])
def test_score_bad_input_is_one_line(tmp_path, content, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    result = run_cli("rlvr.score", f"input={bad}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"rlvr.score: error: {bad} {problem}"
