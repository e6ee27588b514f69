"""The one-line refusal of `python -m rlvr.eval`, as its CLI tests read it."""

import re

import pytest

from conftest import process_state_kept
from rlvr import eval as rlvr_eval

# conf/hydra/job_logging/stderr.yaml's format; and the notice transformers prints once per process where
# WANDB_MODE=offline is set (rlvr._compat.wandb_offline_notice_to_stderr): the first test to import it sees it
LOG_RECORD = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+\]\[|\[INFO\] Running in WANDB offline mode$")


def error_of(capsys, *argv) -> str:
    """rlvr.eval's stderr for `argv`, less log records: exit 2 and exactly one line starting
    'rlvr.eval: error: '."""
    with process_state_kept(), pytest.raises(SystemExit) as ended:
        rlvr_eval.main(list(argv))
    assert ended.value.code == 2
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if not LOG_RECORD.match(line))
    assert len(err.splitlines()) == 1 and err.startswith("rlvr.eval: error: "), err
    return err
