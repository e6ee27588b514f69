"""`reward.functions` entries become TRL-signature callables: built-in classes and users' plain functions."""

import pytest

from rlvr.errors import ConfigError
from rlvr.rewards import build_rewards
from rlvr.rewards.base import preflight_rewards
from rlvr.rewards.format import ThinkFormatReward


def brevity(completions, max_chars=200, **kwargs):
    return [1.0 if len(c) <= max_chars else 0.0 for c in completions]


def test_user_plain_function_with_arguments():
    [reward] = build_rewards({"brevity": {"_target_": f"{__name__}.brevity", "weight": 0.1, "max_chars": 3}})
    assert (reward.name, reward.weight, reward.fn.__name__) == ("brevity", 0.1, "brevity")
    assert reward.fn(prompts=["p", "p"], completions=["abc", "abcd"], completion_ids=None, answer=["1", "1"]) == [1.0, 0.0]


def test_builtin_class_gets_name_and_arguments():
    [reward] = build_rewards({"strict": {"_target_": "rlvr.rewards.numeric.FinalLineReward", "wrong": 0.25}})
    assert reward.fn(completions=["Final: 3"], answer=["4"]) == [0.25]
    assert reward.fn.__name__ == "strict" and reward.weight == 1.0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"_target_": "no.such.module.fn"}, "cannot import 'no.such.module.fn'"),
        ({"weight": 1.0}, "has no _target_"),
        ({"_target_": "rlvr.rewards.numeric.FinalLineReward", "weight": "abc"}, "mine.weight='abc' must be a finite number"),
        ({"_target_": "rlvr.rewards.numeric.FinalLineReward", "weight": float("nan")}, "mine.weight=nan must be a finite number"),
        ({"_target_": "rlvr.rewards.numeric.FinalLineReward", "weight": True}, "mine.weight=True must be a finite number"),
        ({"_target_": "rlvr.rewards.numeric.FinalLineReward", "wrnog": 0.1}, "unexpected keyword argument 'wrnog'"),
    ],
)
def test_bad_entries_name_the_reward(entry, message):
    with pytest.raises(ConfigError, match=message):
        build_rewards({"mine": entry})


def test_no_rewards_is_an_error():
    with pytest.raises(ConfigError, match="no reward functions configured"):
        build_rewards({})


@pytest.mark.parametrize(
    ("text", "reward", "reason"),
    [
        ("<think>add 2 and 2</think> 4", 1.0, "ok"),
        ("<think>a</think><think>b</think> 4", 0.0, "unparsable"),
        ("<think>no answer</think>   ", 0.0, "unparsable"),
        ("just 4", 0.0, "missing"),
    ],
)
def test_think_format(text, reward, reason):
    [outcome] = ThinkFormatReward().score([text], [None])
    assert (outcome.reward, outcome.reason) == (reward, reason)


def exact(completions, answer, strict=True):
    return [float(c == a) for c, a in zip(completions, answer)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"_target_": "rlvr.rewards.numeric.FinalLineReward", "wieght": 0.2},
            "reward.functions.mine.wieght: FinalLineReward takes no 'wieght' (did you mean 'weight'?)",
        ),
        (
            {"_target_": f"{__name__}.exact", "strickt": False},
            "reward.functions.mine.strickt: exact takes no 'strickt' (did you mean 'strict'?)",
        ),
    ],
)
def test_an_argument_the_reward_does_not_take_is_refused_at_start_up(entry, message):
    with pytest.raises(ConfigError) as info:
        preflight_rewards({"mine": entry})
    assert str(info.value) == message


def test_a_reward_that_takes_keyword_arguments_or_a_timeout_passes_the_start_up_check(caplog):
    preflight_rewards({"mine": {"_target_": f"{__name__}.brevity", "anything": 1}})
    assert not caplog.records
    for typo, meant in [("wieght", "weight"), ("timeout", "timeout_s")]:  # passed on in **kwargs: the setting meant is lost
        caplog.clear()
        preflight_rewards({"mine": {"_target_": f"{__name__}.brevity", typo: 1}})
        [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warning == f"reward.functions.mine.{typo} goes to brevity's **kwargs, not to rlvr (did you mean '{meant}'?)"
    preflight_rewards({"mine": {"_target_": f"{__name__}.exact", "strict": False, "timeout_s": 3, "weight": 2}})


@pytest.mark.parametrize(
    ("functions", "message"),
    [
        (
            {"brevity": "mypkg.rewards.brevity"},  # '+reward.functions.brevity=mypkg.rewards.brevity'
            "reward.functions.brevity='mypkg.rewards.brevity' is not a reward entry: it must be a mapping "
            "{_target_: dotted.path, weight: number, ...arguments}, "
            "e.g. '+reward.functions.brevity={_target_: mypkg.rewards.brevity, weight: 1.0}'",
        ),
        (
            {"f": 3},  # a preset's `functions: {f: 3}`
            "reward.functions.f=3 is not a reward entry: it must be a mapping {_target_: dotted.path, weight: number, ...arguments}",
        ),
    ],
)
def test_an_entry_that_is_not_a_mapping_is_one_line_naming_it(functions, message):
    from omegaconf import OmegaConf

    for given in (functions, OmegaConf.create(functions)):
        for check in (preflight_rewards, build_rewards):
            with pytest.raises(ConfigError) as info:
                check(given)
            assert str(info.value) == message


def test_a_weight_that_is_not_a_number_is_refused_at_start_up():
    """Before the run dir is written: preflight_rewards, not only build_rewards once the start is accepted."""
    with pytest.raises(ConfigError, match=r"^reward.functions.mine.weight='abc' must be a finite number$"):
        preflight_rewards({"mine": {"_target_": "rlvr.rewards.numeric.FinalLineReward", "weight": "abc"}})
    with pytest.raises(ConfigError, match=r"^reward.functions.mine.timeout_s=-1 must be a finite number > 0"):
        preflight_rewards({"mine": {"_target_": f"{__name__}.brevity", "timeout_s": -1}})


def test_a_near_miss_of_a_named_parameter_going_to_kwargs_is_a_warning(caplog):
    """`max_chrs: 2` went to **kwargs silently; max_chars stayed 200."""
    preflight_rewards({"mine": {"_target_": f"{__name__}.brevity", "max_chrs": 2}})
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == "reward.functions.mine.max_chrs goes to brevity's **kwargs, not to its parameter (did you mean 'max_chars'?)"


@pytest.mark.parametrize("preset", ["math_verify_think", "flexible_think"])
def test_the_think_presets_read_the_answer_after_the_reasoning(preset):
    """Their correctness reward read the whole completion: a \\boxed{4} the reasoning considered and dropped
    scored correct for gold 4 under 'The answer is 3' (the reader, shown no think block, sees 3)."""
    from hydra import compose, initialize_config_dir

    from rlvr.config import conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        functions = compose(config_name="config", overrides=[f"reward={preset}"]).reward.functions
    judge = next(r for r in build_rewards(functions) if r.name != "think_format")
    completions = [
        "<think>maybe \\boxed{4}? no.</think>The answer is $3$.",
        "<think>is it 4?</think>I do not know.",
        "<think>3 or 4?</think>\\boxed{4}",
        "\\boxed{4}",  # no think block: the whole completion
        "<think>8+0 is 4, or \\boxed{4}",  # cut inside its reasoning: no answer given
    ]
    judge.fn(completions=completions, answer=["4"] * 5)
    assert [o.correct for o in judge.fn.last_outcomes] == [False, False, True, True, False]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"_target_": f"{__name__}.brevity", "answer_after": "</think>"}, "answer_after is for rlvr's reward classes"),
        ({"_target_": "rlvr.rewards.numeric.LastNumberReward", "answer_after": ""}, "answer_after='' must be the text"),
    ],
)
def test_answer_after_is_refused_where_it_could_not_act(entry, message):
    for check in (preflight_rewards, build_rewards):
        with pytest.raises(ConfigError, match=message):
            check({"r": entry})
