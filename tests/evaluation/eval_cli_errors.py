"""The one-line refusal of `python -m rlvr.eval`, as its CLI tests read it."""

from rlvr import eval as rlvr_eval


def error_of(capsys, *argv) -> str:
    """rlvr.eval's stderr for `argv`: exit 2 and exactly one line starting 'rlvr.eval: error: '."""
    assert rlvr_eval.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rlvr.eval: error: "), err
    return err
