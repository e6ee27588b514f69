"""The `eval` config group: its options compose, today's overrides still apply, bad values fail in one line."""

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR
from rlvr.config import check_ranges
from rlvr.errors import ConfigError
import rlvr.run  # noqa: F401  registers the schema and the rlvr_data resolver


def compose_with(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_the_default_is_greedy_before_and_after_and_pass_at_k_adds_samples():
    greedy = compose_with().eval
    assert (greedy.before, greedy.after, greedy.greedy, greedy.n, greedy.every_steps) == (True, True, True, 0, 0)
    sampled = compose_with("eval=pass_at_k", "eval.batch_size=4", "eval.before=false").eval
    assert (sampled.n, list(sampled.ks), sampled.greedy, sampled.batch_size, sampled.before) == (8, [1, 2, 4, 8], True, 4, False)
    check_ranges(compose_with("eval=pass_at_k", "eval.n=4", "eval.ks=[1,4]", "eval.every_steps=10", "eval.split=train"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval=pass_at_k", "eval.n=4"], "eval.ks=[1, 2, 4, 8]: each k must be in [1, eval.n=4]"),
        (
            ["eval.ks=[1]"],
            "eval.n=0 samples no completion, and eval.ks=[1] takes k of the n samples (pass@k, maj@k): set eval.n to at least 1",
        ),
        (["eval=pass_at_k", "eval.n=0"], "eval.n=0 samples no completion, and eval.ks=[1, 2, 4, 8] takes k of the n samples"),
        (["eval=pass_at_k", "eval.ks=[0]"], "eval.ks=[0]: each k must be in [1, eval.n=8]"),
        (["eval.n=-1"], "eval.n=-1 must be >= 0"),
        (["eval=pass_at_k", "eval.temperature=0"], "eval.temperature=0.0 must be > 0"),
        (["eval.top_p=0"], "eval.top_p=0.0 must be in (0, 1]"),
        (["eval.every_steps=-1"], "eval.every_steps=-1 must be >= 0"),
        (["eval.limit=0"], "eval.limit=0 must be > 0"),
        (["eval.split=test"], "eval.split='test' must be one of eval, train"),
        (["eval.greedy=false"], "eval.greedy=false and eval.n=0 leave nothing to evaluate"),
        (["eval.temperature=0.5"], "eval.temperature=0.5 sets the sampled completions, and eval.n=0 samples none"),
        (["eval.seed=1"], "eval.seed=1 sets the sampled completions, and eval.n=0 samples none"),
    ],
)
def test_bad_eval_values_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as caught:
        check_ranges(compose_with(*overrides))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
