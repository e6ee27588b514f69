"""What a stop between the end of training and the end of the run is reported as."""

import os
import signal
import time
from types import SimpleNamespace

import pytest

from rlvr.hardware.stops import stops_reported
from rlvr.recipes import grpo_family


def test_a_ctrl_c_between_trainings_end_and_the_final_save_names_the_save(tmp_path, monkeypatch, capsys):
    """The vLLM weight sync and the rollouts' closing come after training and before the save: a Ctrl-C
    there says what it interrupted, not "start-up"."""

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here

    monkeypatch.setattr(grpo_family, "trainer_completer", ctrl_c)
    setup = SimpleNamespace(rewards=[], model=None, tokenizer=None, step_evaluated=None)
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=4))
    with pytest.raises(SystemExit) as stopped, stops_reported(tmp_path):
        grpo_family.end_training(SimpleNamespace(eval=SimpleNamespace(after=True)), tmp_path, setup, trainer, None)
    assert stopped.value.code == 130
    assert capsys.readouterr().err.startswith("rlvr: Ctrl-C during saving the final model: stopped at once")


def test_the_eval_before_is_compared_only_with_an_eval_after_made_the_same_way(tmp_path):
    """A resume with another reward or other eval sampling left eval_before_* (scored by the first start)
    beside eval_after_* in metrics.json, which compares them: -1 before, -3 after, from the reward alone."""
    import json

    from rlvr.config import eval_token_limit
    from rlvr.eval import compose
    from rlvr.tracking.run_dir import trained_config

    first = compose(["algorithm=fgrpo"], None)
    (tmp_path / "run_info.jsonl").write_text(json.dumps({"mode": "new", "config": trained_config(first)}, default=str) + "\n")
    assert grpo_family.eval_settings_moved(first, tmp_path) == ""
    when_and_how_long = compose(["algorithm=fgrpo", "eval.every_steps=5", "algorithm.max_steps=9"], None)
    assert grpo_family.eval_settings_moved(when_and_how_long, tmp_path) == ""
    moved = compose(["algorithm=fgrpo", "reward.functions.answer_spans.wrong=-3", "eval.max_new_tokens=9"], None)
    assert grpo_family.eval_settings_moved(moved, tmp_path) == "reward.functions.answer_spans.wrong, eval.max_new_tokens"
    # eval.max_new_tokens unset: the eval's limit is the completions'
    shorter = compose(["algorithm=fgrpo", "algorithm.max_completion_length=3"], None)
    assert grpo_family.eval_settings_moved(shorter, tmp_path).startswith("algorithm.max_completion_length")
    same_limit = compose(["algorithm=fgrpo", "algorithm.max_completion_length=3", f"eval.max_new_tokens={eval_token_limit(first)}"], None)
    assert grpo_family.eval_settings_moved(same_limit, tmp_path) == ""


@pytest.mark.parametrize("saved", ["final_model/config.json", "final_adapter/adapter_config.json"])
def test_a_run_whose_final_weights_are_saved_is_finished_from_them(tmp_path, saved):
    """A LoRA run that saves its adapter alone (`save_merged=false`, a 4-bit base) writes no final_model/:
    stopped in its final eval, with its checkpoints gone, it was started over, its adapter overwritten."""
    from rlvr.eval import compose

    (tmp_path / "train_result.json").write_text('{"train_steps": 4}')
    (tmp_path / saved).parent.mkdir()
    (tmp_path / saved).write_text("{}")
    start = grpo_family.preflight(compose(["algorithm.max_steps=4"], None), tmp_path)
    assert (start.mode, start.checkpoint, start.step) == ("finish", None, 4)


def test_a_finished_run_by_epochs_is_told_how_to_continue_in_its_own_terms(tmp_path):
    """It said "(algorithm.max_steps=-1): raise algorithm.max_steps", which -1 (train by epochs) does not fit."""
    from rlvr.errors import ConfigError
    from rlvr.eval import compose

    run = tmp_path / "run"
    for path, text in [
        ("checkpoints/checkpoint-4/trainer_state.json", '{"global_step": 4}'),
        ("checkpoints/checkpoint-4/COMPLETE", "4\n"),
        ("final_model/config.json", "{}"),
        ("train_result.json", '{"train_steps": 4}'),
        ("metrics.json", "{}"),
    ]:
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text(text)
    with pytest.raises(
        ConfigError, match=r"trained to step 4 \(algorithm.num_train_epochs=2.0\): set algorithm.max_steps above 4 to continue"
    ):
        grpo_family.preflight(compose(["algorithm.max_steps=-1", "algorithm.num_train_epochs=2"], None), run)
