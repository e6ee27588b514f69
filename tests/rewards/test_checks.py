"""The checked path of every reward's output (rlvr/rewards/checks.py): what passes, what stops a run, what warns."""

import logging
import math
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlvr.errors import ConfigError, RewardError
from rlvr.rewards import build_rewards
from rlvr.rewards.checks import TRL_REWARD_KEYWORDS, CheckedReward, checked_rewards, reward_columns

PROMPTS = ["1+1=", "2+2=", "3+3="]
COMPLETIONS = ["2", "4", "6"]


def returning(value):
    def reward(completions, **kwargs):
        return value(completions) if callable(value) else value

    return reward


def call(fn, **settings):
    return CheckedReward(fn, "mine", **settings)(prompts=PROMPTS, completions=COMPLETIONS)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([1.0, math.inf, 0.0], "reward 'mine' returned inf for row 1 (prompt '2+2=')"),
        ([1.0, 0.0, math.nan], "reward 'mine' returned nan for row 2 (prompt '3+3=')"),
        ([1.0, "0.5", 0.0], "reward 'mine' returned '0.5' for row 1"),
        ([1.0, [0.5], 0.0], "reward 'mine' returned [0.5] for row 1"),
        ([1.0, -1e300, 0.0], "reward 'mine' returned -1e+300 for row 1 (prompt '2+2='): a reward must be a finite float (float32's range"),
        ([[(1.0, (0, 1), "accuracy")]] * 3, "or None (spans: a span reward trains with algorithm=fgrpo)"),
        ([1.0, 0.0], "reward 'mine' returned 2 rewards for 3 completions"),
        (1.0, "reward 'mine' returned 1.0 (float), not a list of 3 rewards"),
        ("1,0,1", "reward 'mine' returned '1,0,1' (str), not a list of 3 rewards"),
        ({"a": 1.0}, "reward 'mine' returned {'a': 1.0} (dict)"),
        (None, "reward 'mine' returned None (NoneType), not a list of 3 rewards"),
    ],
)
def test_bad_outputs_stop_in_one_line_naming_reward_row_and_value(output, message):
    with pytest.raises(RewardError) as info:
        call(returning(output))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_floats_none_and_numeric_scalars_pass_as_floats_or_none():
    output = [np.float32(0.5), None, torch.tensor(-3.4e38)]
    assert call(returning(output)) == [0.5, None, float(torch.tensor(-3.4e38))]
    assert call(returning(np.array([1, 0, 1]))) == [1.0, 0.0, 1.0]
    assert call(returning(torch.tensor([0.25, 0.5, 1.0]))) == [0.25, 0.5, 1.0]


def test_a_raising_reward_is_one_line_pointing_at_its_code(monkeypatch, tmp_path):
    """The file from the working directory where it is under it (tests/rewards/test_checks.py), else whole:
    not its base name alone, which two of a user's modules can share."""

    def broken(completions, **kwargs):
        return [1 / 0 for _ in completions]

    line = broken.__code__.co_firstlineno + 1
    monkeypatch.chdir(Path(__file__).parents[2])
    with pytest.raises(RewardError) as info:
        call(broken)
    assert str(info.value) == f"reward 'mine' raised ZeroDivisionError: division by zero (at tests/rewards/test_checks.py:{line})"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardError, match=re.escape(f"(at {Path(__file__).resolve()}:{line})")):
        call(broken)


def test_no_verdict_share_is_a_metric_and_a_warning(caplog):
    logged = {}
    reward = CheckedReward(returning([None, None, 1.0]), "mine", failure_warn_frac=0.5)
    with caplog.at_level(logging.WARNING, logger="rlvr.rewards.checks"):
        reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__)
    assert logged["rewards/mine/no_verdict_frac"] == pytest.approx(2 / 3)
    assert "rewards/mine/call_s" in logged
    assert "reward 'mine' gave no verdict (None, timeout or error) on 2 of 3 completions" in caplog.text


def test_builtin_timeouts_count_as_no_verdict():
    from rlvr.rewards.base import Outcome

    class Judge:
        last_outcomes = [Outcome(0.0, "timeout"), Outcome(1.0, "correct"), Outcome(0.0, "error")]

        def __call__(self, completions, **kwargs):
            return [o.reward for o in self.last_outcomes]

    logged = {}
    CheckedReward(Judge(), "judge")(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__)
    assert logged["rewards/judge/no_verdict_frac"] == pytest.approx(2 / 3)


def test_a_reward_that_scores_nothing_for_none_patience_training_steps_stops_the_run():
    answers = iter([[None] * 3, [1.0, None, None], [None] * 3, [None] * 3, [None] * 3])
    reward = CheckedReward(lambda completions, **_: next(answers), "mine", none_patience=2)
    training = {"trainer_state": SimpleNamespace(global_step=1)}  # what TRL passes; eval calls do not count
    for _ in range(2):  # the second call judged one completion: the streak starts again
        reward(prompts=PROMPTS, completions=COMPLETIONS, **training)
    reward(prompts=PROMPTS, completions=COMPLETIONS)  # an eval batch of Nones: not a training step
    reward(prompts=PROMPTS, completions=COMPLETIONS, **training)
    with pytest.raises(RewardError, match="reward 'mine' returned None for every completion in 2 training steps in a row"):
        reward(prompts=PROMPTS, completions=COMPLETIONS, **training)


def test_a_slow_call_is_named_while_it_runs_and_when_it_returns(caplog):
    def slow(completions, **kwargs):
        time.sleep(0.6)
        return [0.0] * len(completions)

    with caplog.at_level(logging.WARNING, logger="rlvr.rewards.checks"):
        call(slow, slow_call_s=0.2)
    assert "reward 'mine' has been running for 0 s on 3 completions and has not returned" in caplog.text
    assert "reward 'mine' is slow: 0.6 s for a call of 3 completions" in caplog.text


def test_multi_process_errors_are_deferred_until_every_rank_gathered():
    reward = CheckedReward(returning([1.0, math.inf, 0.0]), "mine")
    reward.defer_errors = True
    assert reward(prompts=PROMPTS, completions=COMPLETIONS) == [None, None, None]
    assert "returned inf for row 1" in str(reward.take_pending_error())
    assert reward.take_pending_error() is None


# Rewards that run in a worker process (`timeout_s`) must be importable there: module-level here.
def sleeps(completions, **kwargs):
    time.sleep(30)
    return [1.0] * len(completions)


def exits(completions, **kwargs):
    os._exit(3)


def raises(completions, **kwargs):
    raise KeyError("gold")


def echoes_length(completions, trainer_state=None, **kwargs):
    return [float(len(c)) + (trainer_state.global_step if trainer_state else 0) for c in completions]


def isolated(fn, timeout_s=2.0):
    [reward] = checked_rewards(build_rewards({"mine": {"_target_": f"{__name__}.{fn.__name__}", "timeout_s": timeout_s}}))
    return reward.fn


@pytest.fixture
def closes_pools():
    rewards = []
    yield rewards.append
    for reward in rewards:
        reward.pool.close()


def test_timeout_s_runs_the_reward_in_a_worker_and_passes_trl_kwargs(closes_pools):
    reward = isolated(echoes_length)
    closes_pools(reward)
    state = SimpleNamespace(global_step=10)
    assert reward(prompts=PROMPTS, completions=["ab", "c", ""], trainer_state=state, log_metric=lambda k, v: None) == [12.0, 11.0, 10.0]
    assert reward.pool._pool is not None  # it ran in the pool, not in this process


def test_an_isolated_reward_gets_the_trainer_states_attributes_without_importing_transformers(closes_pools):
    from transformers import TrainerState

    [reward] = checked_rewards(build_rewards({"mine": {"_target_": "tests.rewards.worker_reward.sees_trainer_state", "timeout_s": 30}}))
    closes_pools(reward.fn)
    state = TrainerState(global_step=7, max_steps=9)
    assert reward.fn(prompts=PROMPTS, completions=COMPLETIONS, trainer_state=state) == [7.0, 9.0, 0.0]


def test_a_hanging_isolated_reward_is_killed_and_scores_none(closes_pools, caplog):
    reward = isolated(sleeps, timeout_s=0.5)
    closes_pools(reward)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="rlvr.rewards.checks"):
        assert reward(prompts=PROMPTS, completions=COMPLETIONS) == [None, None, None]
    assert time.perf_counter() - started < 15  # killed: the reward sleeps 30 s (room left for a loaded machine)
    assert "reward 'mine' timed out after 0.5 s on a call of 3 completions" in caplog.text


def test_an_isolated_reward_whose_process_dies_is_reported(closes_pools, caplog):
    reward = isolated(exits)
    closes_pools(reward)
    with caplog.at_level(logging.WARNING, logger="rlvr.rewards.checks"):
        assert reward(prompts=PROMPTS, completions=COMPLETIONS) == [None, None, None]
    assert "reward 'mine' its worker process died (exit code 3)" in caplog.text
    assert reward(prompts=PROMPTS, completions=["a"]) is not None  # a fresh worker takes its place


def test_an_isolated_reward_that_raises_is_one_line(closes_pools):
    reward = isolated(raises)
    closes_pools(reward)
    with pytest.raises(RewardError, match="reward 'mine' raised KeyError: 'gold'"):
        reward(prompts=PROMPTS, completions=COMPLETIONS)


@pytest.mark.parametrize(
    ("timeout_s", "message"),
    [(0, "timeout_s=0 must be a finite number > 0 \\(seconds\\)"), ("soon", "timeout_s='soon' must be a finite number > 0 \\(seconds\\)")],
)
def test_bad_timeout_s_is_a_config_error(timeout_s, message):
    with pytest.raises(ConfigError, match=message):
        build_rewards({"mine": {"_target_": f"{__name__}.sleeps", "timeout_s": timeout_s}})


def test_trl_reward_keywords_are_the_ones_trl_passes():
    """Call TRL's own `_calculate_rewards` with a recording reward: fails the day TRL adds a keyword."""
    from trl import GRPOTrainer

    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        return [1.0] * len(kwargs["completions"])

    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(device="cpu", is_main_process=True),
        reward_funcs=[record],
        reward_processing_classes=[None],
        reward_func_names=["record"],
        state=SimpleNamespace(global_step=0),
        args=SimpleNamespace(report_to=[]),
        _log_completion_extra=print,
        _log_metric=print,
        environments=[None],
        chat_template_kwargs={},
    )
    inputs = [{"prompt": "p", "answer": "1", "my_column": 3}]
    GRPOTrainer._calculate_rewards(trainer, inputs, ["p"], ["c"], [[1]])
    assert set(seen) - {"answer", "my_column"} == set(TRL_REWARD_KEYWORDS)


def by_difficulty(prompts, completions, answer, difficulty, trainer_state=None, **kwargs):
    return [1.0 / d for d in difficulty]


def test_reward_columns_are_the_data_columns_rewards_name():
    """What rollouts and eval rows carry for `rlvr.score`: columns named as parameters, looked up through
    the wrappers, never TRL's keywords or the gold answer."""
    from rlvr.rewards.spans import SpanReward

    rewards = checked_rewards(
        build_rewards(
            {
                "code": {"_target_": "rlvr.rewards.code.CodeTestsReward", "sandbox": "none"},
                "mine": {"_target_": f"{__name__}.by_difficulty"},
                "strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"},
            }
        )
    )
    rewards.append(SimpleNamespace(name="spans", fn=SpanReward("spans", by_difficulty)))
    assert reward_columns(rewards) == ["entry_point", "code_prelude", "difficulty"]


def test_a_function_parameter_no_column_gives_is_refused_naming_the_reward_and_the_columns():
    """A user function's `difficulty` that the data lacks failed at the first reward call, after the
    model loaded: refused as the data loads. A default, a configured value, a column, TRL's keywords
    and a Reward class (no required parameter) pass."""
    from rlvr.errors import DataError
    from rlvr.rewards.checks import check_reward_parameters

    def rewards(**entry):
        return checked_rewards(
            build_rewards(
                {"mine": {"_target_": f"{__name__}.by_difficulty", **entry}, "strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward"}}
            )
        )

    with pytest.raises(DataError) as refused:
        check_reward_parameters(rewards(), ["prompt", "answer", "level"], "the train data")
    assert str(refused.value) == (
        "reward.functions.mine: by_difficulty takes 'difficulty' (no default), which no column of the train data gives "
        "(columns: answer, level): give it a default, or set it (reward.functions.mine.difficulty=...)"
    )
    check_reward_parameters(rewards(), ["prompt", "answer", "difficulty"], "the train data")
    check_reward_parameters(rewards(difficulty=[2.0]), ["prompt", "answer"], "the train data")
    check_reward_parameters(rewards(timeout_s=5), ["prompt", "answer", "difficulty"], "the train data")
    with pytest.raises(DataError, match="takes 'difficulty'"):
        check_reward_parameters(rewards(timeout_s=5), ["prompt", "answer"], "the eval data")


def by_index(completions, index, **kwargs):
    return [float(i) for i in index]


def by_gold(completions, gold, **kwargs):
    return [float(g == c) for g, c in zip(gold, completions)]


def test_a_function_parameter_named_like_a_field_of_rlvrs_rows_is_refused():
    """A data column `index` read by a reward: eval rows wrote rlvr's own index over it (the data's value
    lost beside the reward it gave), and rlvr.score said no column gave it."""
    from rlvr.errors import DataError
    from rlvr.rewards.checks import check_reward_parameters

    rewards = checked_rewards(build_rewards({"idx": {"_target_": f"{__name__}.by_index"}}))
    with pytest.raises(DataError, match=r"^reward.functions.idx: by_index takes 'index', the name of a field rlvr writes in its rollout"):
        check_reward_parameters(rewards, ["prompt", "answer", "index"], "the train data")
    gold = checked_rewards(build_rewards({"g": {"_target_": f"{__name__}.by_gold"}}))  # rows write the gold answer as `gold`
    with pytest.raises(DataError, match=r"^reward.functions.g: by_gold takes 'gold', the name of a field rlvr writes"):
        check_reward_parameters(gold, ["prompt", "answer", "gold"], "the train data")
    settings = checked_rewards(build_rewards({"spans": {"_target_": "rlvr.rewards.spans.answer_spans"}}))
    check_reward_parameters(settings, ["prompt", "answer"], "the train data")  # its `correct` is a setting, with a default


def test_a_reward_that_edits_its_inputs_changes_neither_the_next_reward_nor_the_logs():
    """A reward overwriting `completions` in place made every later reward score 'MUTATED', and the rollouts log it."""

    def overwrites(prompts, completions, answer, **kwargs):
        completions[:] = ["MUTATED"] * len(completions)
        prompts[0]["content"] = "MUTATED"
        answer[:] = ["0"] * len(answer)
        return [0.0] * len(completions)

    prompts, completions, answer = [{"role": "user", "content": "1+1="}], ["2"], ["2"]
    CheckedReward(overwrites, "overwrites")(prompts=prompts, completions=completions, answer=answer)
    assert (prompts, completions, answer) == ([{"role": "user", "content": "1+1="}], ["2"], ["2"])


def test_span_lists_are_known_as_such_when_the_first_row_has_none():
    """A span function whose first row had no span ([]) was refused as returning a non-float, where
    the same rows in another order were scored as spans (rlvr.score's detection of span rewards)."""
    from rlvr.rewards.checks import SpansReturned

    def polite(completions, **kwargs):
        return [[(0.5, (0, 6), "politeness")] if text.startswith("thanks") else [] for text in completions]

    for order in (["7", "thanks, 7"], ["thanks, 7", "7"]):
        with pytest.raises(SpansReturned):
            CheckedReward(polite, "polite")(prompts=["q", "q"], completions=order)
    with pytest.raises(RewardError, match="returned \\[\\] for row 0") as refused:
        CheckedReward(lambda completions, **kwargs: [[] for _ in completions], "none")(prompts=["q"], completions=["7"])
    assert refused.type is RewardError  # no span anywhere: nothing says it is a span reward


def test_the_built_in_answer_spans_read_a_chat_completion_by_its_text():
    """rlvr.score hands a chat run's completions on as messages: answer_spans raised TypeError on them."""
    from rlvr.rewards.spans import answer_spans

    chat = [[{"role": "assistant", "content": "so\nFinal: 8"}]]
    assert answer_spans(chat, ["8"]) == answer_spans(["so\nFinal: 8"], ["8"])
