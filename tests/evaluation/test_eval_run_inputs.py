"""`python -m rlvr.eval` and what a run's rewards read: a result is redone when a reward's local input
(a hybrid reward's reward model, a file a reward argument names) is written anew, and a key override
of a run's target composes on the run's own group choices (`reward.functions.hybrid.*` of a hybrid run)."""

import os
import shutil

import pytest
from omegaconf import OmegaConf

from eval_cli_errors import error_of
from rlvr import eval as rlvr_eval
from test_eval_cli import fake_run_dir
from test_eval_saved_model_settings import model_dir, run_eval

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Evaluated(list):
    configs: list


@pytest.fixture
def evaluated(monkeypatch):
    """The labels evaluated (no model loads), each with the config it was evaluated with (`configs`)."""
    labels = Evaluated()
    labels.configs = []

    def fake_eval(cfg, label, *_):
        labels.append(label)
        labels.configs.append(cfg)
        return {f"eval_{label}_accuracy": 0.5}, 0

    monkeypatch.setattr(rlvr_eval, "evaluate_model", fake_eval)
    return labels


def rewritten(path, content="{}"):
    """`path` written again (another model copied over it), with a newer modification time."""
    path.write_text(content)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))


def test_an_adapters_result_is_redone_when_its_base_is_saved_anew(tmp_path, evaluated):
    """A LoRA checkpoint holds the adapter alone: its base at model.name_or_path written again (the run it
    came from continued) gave the old result back, `done, skipped`, for an adapter now on other weights."""
    base = model_dir(tmp_path / "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    target = rlvr_eval.resolve_target(str(adapter))

    def evaluate():
        cfg = rlvr_eval.compose([f"model.name_or_path={base}", "model.warmup_sft_steps=0"], None)
        [result] = rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
        return result

    first = evaluate()
    assert evaluate() == first and len(evaluated) == 1  # the same base: reused
    rewritten(base / "config.json")
    assert evaluate() != first and len(evaluated) == 2


def test_a_result_is_redone_when_its_reward_model_is_another(tmp_path, evaluated):
    """A reward-model run dir named by the hybrid reward: its final_model/ written again (another seed,
    another shape, copied to the same path) gave the old result back, `done, skipped`."""
    model = model_dir(tmp_path / "final_model")
    rm = tmp_path / "rm"
    model_dir(rm / "final_model")
    target = rlvr_eval.resolve_target(str(model))

    def evaluate(*overrides):
        cfg = rlvr_eval.compose(["reward=hybrid", f"reward.functions.hybrid.reward_model={rm}", *overrides], None)
        [result] = rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
        return result

    first = evaluate()
    assert evaluate() == first and len(evaluated) == 1  # the same reward model: reused
    rewritten(rm / "final_model" / "config.json")
    assert evaluate() != first and len(evaluated) == 2
    (rm / "final_model" / "model.safetensors").write_bytes(b"weights")  # a file more
    evaluate()
    evaluate()
    assert len(evaluated) == 3
    (rm / "plots").mkdir()  # `rlvr.plots` on the reward-model run: not what the hybrid reward loads
    (rm / "plots" / "reward.png").write_bytes(b"png")
    (rm / "metrics.jsonl").write_text("{}\n")
    evaluate()
    assert len(evaluated) == 3


def test_a_result_is_redone_when_a_file_a_reward_argument_names_changes(tmp_path, evaluated):
    """Any reward's arguments, nested ones too; "/" and "." name no input (no walk of the disk)."""
    model = model_dir(tmp_path / "final_model")
    words = tmp_path / "words.txt"
    words.write_text("yes\n")
    lexicon = f"+reward.functions.lexicon={{_target_: my.Lexicon, weight: 1.0, options: {{words: '{words}', sep: /, here: .}}}}"
    target = rlvr_eval.resolve_target(str(model))
    cfg = rlvr_eval.compose([lexicon], None)
    for content in ("yes\n", "yes\n", "no\n"):
        if content != words.read_text():
            rewritten(words, content)
        rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
    assert len(evaluated) == 2
    assert {key for key in rlvr_eval.eval_inputs(cfg).get("reward_files") if not key.endswith(" (code)")} == {str(words)}


def test_a_result_is_redone_when_the_code_of_a_reward_is_edited(tmp_path, evaluated, monkeypatch):
    """A user's reward function edited between two evals (0.25 -> 0.75) gave the old result back."""
    (tmp_path / "my_rewards.py").write_text("def score(completions, **_):\n    return [0.25] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = model_dir(tmp_path / "final_model")
    cfg = rlvr_eval.compose(["+reward.functions.mine={_target_: my_rewards.score, weight: 1.0}"], None)
    target = rlvr_eval.resolve_target(str(model))
    rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
    rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
    assert len(evaluated) == 1
    rewritten(tmp_path / "my_rewards.py", "def score(completions, **_):\n    return [0.75] * len(completions)\n")
    rlvr_eval.evaluate_target(target, cfg, tmp_path / "out", rlvr_eval.eval_inputs(cfg))
    assert len(evaluated) == 2
    assert "my_rewards (code)" in rlvr_eval.eval_inputs(cfg)["reward_files"]


def chose(run, choices: dict, *preset_dirs):
    """`run`'s .hydra/hydra.yaml, as Hydra writes it: the group options it chose, and the preset dirs
    (`--config-dir`) its command line named."""
    sources = [{"path": "/another/checkout/conf", "schema": "file", "provider": "main"}]
    sources += [{"path": str(path), "schema": "file", "provider": "command-line"} for path in preset_dirs]
    runtime = {"cwd": str(run.parent), "choices": {"experiment": None, **choices}, "config_sources": sources}
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"runtime": runtime}}))
    return model_dir(run / "final_model")


def test_a_key_of_the_runs_own_reward_group_is_overridden_on_the_runs_settings(tmp_path, evaluated):
    """`reward.functions.hybrid.reward_model=...` of a hybrid run was refused: Hydra composed it on the
    tree's default reward (gsm8k_flexible). The run's other reward settings stay; the group chosen
    on the command line is the preset's whole group, as before."""
    rm, other = model_dir(tmp_path / "rm"), model_dir(tmp_path / "other_rm")
    run = fake_run_dir(
        tmp_path / "run", "reward=hybrid", f"reward.functions.hybrid.reward_model={rm}", "reward.functions.hybrid.alpha=0.25"
    )
    final = chose(run, {"reward": "hybrid", "model": "tiny"})
    run_eval(f"target={final}", f"reward.functions.hybrid.reward_model={other}", f"output_dir={tmp_path / 'out'}")
    hybrid = evaluated.configs[-1].reward.functions.hybrid
    assert (hybrid.reward_model, hybrid.alpha, list(evaluated.configs[-1].reward.functions)) == (str(other), 0.25, ["hybrid"])
    run_eval(f"target={final}", "reward=hybrid", f"reward.functions.hybrid.reward_model={other}", f"output_dir={tmp_path / 'out2'}")
    assert evaluated.configs[-1].reward.functions.hybrid.alpha == 0.5


def test_a_key_an_experiments_group_holds_is_overridden_on_the_runs_settings(tmp_path, evaluated):
    """experiment=vocab_reasoning chose reward=flexible_think, which holds think_format."""
    run = fake_run_dir(tmp_path / "run", "experiment=vocab_reasoning", "reward.functions.gsm8k_flexible.weight=0.7")
    final = chose(run, {"experiment": "vocab_reasoning", "reward": "flexible_think", "model": "tiny", "dataset": "arithmetic"})
    run_eval(f"target={final}", "reward.functions.think_format.weight=0.5", f"output_dir={tmp_path / 'out'}")
    functions = evaluated.configs[-1].reward.functions
    assert (functions.gsm8k_flexible.weight, functions.think_format.weight) == (0.7, 0.5)
    assert evaluated.configs[-1].model.reasoning_vocab_size == 64


def test_a_runs_preset_dir_is_found_again_and_a_preset_gone_is_one_line(tmp_path, capsys, evaluated):
    """The run named its own reward preset with --config-dir: the eval finds it there; once that dir
    is gone, a key of it is refused in one line (not composed on the tree's default reward, which lacks it)."""
    presets = tmp_path / "presets"
    (presets / "reward").mkdir(parents=True)
    (presets / "reward" / "mine.yaml").write_text(
        "functions:\n  mine:\n    _target_: rlvr.rewards.numeric.LastNumberReward\n    weight: 1.0\n"
    )
    run = fake_run_dir(tmp_path / "run", "+reward.functions={mine: {_target_: rlvr.rewards.numeric.LastNumberReward, weight: 1.0}}")
    final = chose(run, {"reward": "mine"}, presets)
    run_eval(f"target={final}", "reward.functions.mine.weight=2", f"output_dir={tmp_path / 'out'}")
    assert evaluated.configs[-1].reward.functions.mine.weight == 2
    shutil.rmtree(presets)
    assert error_of(capsys, f"target={final}", "reward.functions.mine.weight=2") == (
        f"rlvr.eval: error: reward.functions.mine.weight: a key of reward=mine, which the run of target {final} chose, and no config "
        "dir here holds reward/mine.yaml: name the preset dir that does (--config-dir DIR), or choose the group (reward=...)"
    )


def test_the_runs_choices_are_added_only_where_every_target_is_in_a_run_that_made_them(tmp_path):
    hybrid = chose(fake_run_dir(tmp_path / "a", "reward=hybrid", "reward.functions.hybrid.reward_model=rm"), {"reward": "hybrid"})
    plain = chose(fake_run_dir(tmp_path / "b"), {"reward": "gsm8k_flexible"})
    bare = model_dir(tmp_path / "model")
    key = "reward.functions.hybrid.weight=2"
    added = ["reward=hybrid", AS_RUN.format("reward")]
    assert rlvr_eval.with_run_choices([f"target={hybrid}", key, "--cfg", "job"]) == [*added, f"target={hybrid}", key, "--cfg", "job"]
    for args in (
        ["-m", f"target={hybrid},{plain}", key],
        ["-m", f"target={hybrid},{bare}", key],
        [f"target={hybrid}", "reward=hybrid", key],
    ):
        assert rlvr_eval.with_run_choices(args) == args
    assert rlvr_eval.with_run_choices([f"target={hybrid}", "eval.n=2"]) == [
        f"target={hybrid}",
        "eval.n=2",
    ]  # a group the run's record leaves out


AS_RUN = "++hydra.job.env_set.RLVR_EVAL_RUN_GROUPS='{}'"


def test_a_deletion_on_the_command_line_removes_the_runs_key(tmp_path, monkeypatch):
    """`~reward.functions.answer_spans` (docs/fine-grained.md) on a run's target was set to None, then
    refused as "None is not a reward entry"."""
    rewards = []
    monkeypatch.setattr(rlvr_eval, "evaluate_model", lambda cfg, label, *_: (rewards.append(cfg.reward.functions) or {}, 0))
    run = fake_run_dir(tmp_path / "run", "algorithm=fgrpo", "+reward.functions.again={_target_: rlvr.rewards.spans.answer_spans}")
    final = chose(run, {"reward": "fgrpo_spans", "algorithm": "fgrpo"})
    run_eval(f"target={final}", "~reward.functions.answer_spans", f"output_dir={tmp_path / 'out'}")
    assert list(rewards[0]) == ["again"]
