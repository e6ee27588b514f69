"""Every option of every config group composes and validates; bad keys fail fast with one line."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, GROUPS, run_cli
from rlvr.config import Config, check_key, check_overrides
from rlvr.errors import ConfigError
from rlvr.recipes import RECIPES
import rlvr.run  # noqa: F401  registers the schema and the rlvr_data resolver

OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


def compose_with(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_with(f"{group}={option}")
    container = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(Config), container)  # schema-valid after resolution
    assert merged.algorithm.name in RECIPES
    if group == "experiment":
        assert cfg.experiment == option


def test_every_group_has_options():
    for group in GROUPS:
        assert any((CONF_DIR / group).glob("*.yaml")), group


def test_reward_presets_combine_with_weights():
    cfg = compose_with("reward=[gsm8k_strict,think_format]", "reward.functions.think_format.weight=0.5")
    assert set(cfg.reward.functions) == {"gsm8k_strict", "think_format"}
    assert cfg.reward.functions.think_format.weight == 0.5
    combo = compose_with("reward=math_verify_think")
    assert set(combo.reward.functions) == {"math_verify", "think_format"}


def test_experiment_preset_mirrors_simple_grpo():
    cfg = compose_with("experiment=gsm8k_grpo")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.algorithm.num_generations == 8
    assert "Final: <number>" in cfg.dataset.system_prompt
    strict = cfg.reward.functions.gsm8k_strict
    assert (strict.correct, strict.wrong, strict.missing) == (1.0, 0.1, 0.0)


def test_reward_model_algorithm_brings_preference_data():
    cfg = compose_with("algorithm=reward_model")
    assert cfg.algorithm.name == "reward_model" and cfg.dataset.name == "preferences_tiny"
    assert cfg.objective == "eval_pair_accuracy"
    assert compose_with("algorithm=reward_model", "dataset=hh_harmless").dataset.name == "hh_harmless"


def test_command_line_group_choice_beats_experiment():
    cfg = compose_with("experiment=gsm8k_grpo", "model=tiny")
    assert cfg.model.name_or_path == "tiny"


def test_check_key_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"'algorithm.lerning_rate' \(did you mean 'algorithm.learning_rate'\?\)"):
        check_key("algorithm.lerning_rate")
    check_key("algorithm.trl.anything_goes")  # free-form dict: TRL checks it at start-up
    check_key("dataset.generator.max_operand")


def test_check_overrides_leaves_groups_and_hydra_keys_alone():
    check_overrides(["model=tiny", "hydra.run.dir=/tmp/x", "+extra=1", "~seed", "-m", "seed=1,2"],
                    groups=frozenset(GROUPS))
    with pytest.raises(ConfigError, match="unknown config key 'sed'"):
        check_overrides(["sed=1"])


def test_unknown_key_fails_in_one_line_without_torch():
    result = run_cli("rlvr.run", "algorithm.lerning_rate=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["rlvr: error: unknown config key 'algorithm.lerning_rate' (did you mean 'algorithm.learning_rate'?)"]


def test_cfg_job_prints_config_without_importing_torch():
    code = ("import sys; sys.argv=['rlvr.run','--cfg','job']; import rlvr.run as r\n"
            "try:\n    r.main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    import subprocess, sys
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CONF_DIR.parent)
    assert result.returncode == 0, result.stderr
    assert "name_or_path: tiny" in result.stdout


def test_yaml_typo_is_caught_by_the_schema(tmp_path):
    (tmp_path / "algorithm").mkdir()
    (tmp_path / "algorithm" / "typo.yaml").write_text("name: grpo\nnum_generatoins: 4\n")
    result = run_cli("rlvr.run", f"hydra.searchpath=[file://{tmp_path}]", "algorithm=typo", "--cfg", "job")
    assert result.returncode != 0
    assert "num_generatoins" in result.stderr


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_presets_take_resources_from_hardware(launcher):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}", "hardware=h100x8"],
                      return_hydra_config=True)
    hydra_launcher = cfg.hydra.launcher
    assert (hydra_launcher.nodes, hydra_launcher.tasks_per_node, hydra_launcher.gpus_per_node) == (1, 8, 8)
    assert hydra_launcher.mem_gb == cfg.hardware.mem_gb and hydra_launcher.cpus_per_task == cfg.hardware.cpus_per_task
    if launcher == "slurm":
        assert hydra_launcher.signal_delay_s > 0 and "setup" in hydra_launcher and "account" in hydra_launcher
