"""`torchrun --standalone --nproc_per_node=2 two_rank_eval.py OUT_DIR`: run_eval of the tiny model on
two ranks, then again with a reward that fails on rank 1 only (tests/evaluation/test_evaluation.py
compares the first with one process, and checks that the second stops both ranks)."""

import json
import sys
from pathlib import Path

from evaluation_setup import EVAL, MAX_NEW, TinySetup, failing_rewards

from rlvr.hardware.distributed import close_process_group, rank
from rlvr.errors import RlvrError
from rlvr.evaluation.engine import run_eval

out = Path(sys.argv[1])
setup = TinySetup()
metrics = run_eval(setup.model, setup.tokenizer, setup.dataset, setup.rewards, EVAL, MAX_NEW, out / "two.jsonl", "two", 0)
(out / f"metrics-{rank()}.json").write_text(json.dumps(metrics))
try:
    run_eval(setup.model, setup.tokenizer, setup.dataset, failing_rewards(1), EVAL, MAX_NEW, out / "failed.jsonl", "two", 0)
except RlvrError as exc:
    (out / f"error-{rank()}.txt").write_text(str(exc))
close_process_group()  # as a run ends: left to the interpreter's exit, gloo's teardown may abort a rank
