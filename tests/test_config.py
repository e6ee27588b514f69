"""Every option of every config group composes and validates; bad keys fail fast with one line."""

import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, GROUPS, one_line_error, refused_in_process, run_cli
from rlvr.config import CHOICES, Config, allowed_values, check_hydra_modes, check_key, check_overrides, check_ranges, trl_choices
from rlvr.errors import ConfigError
from rlvr.recipes import TRL_CONFIGS
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
    assert merged.algorithm.name in TRL_CONFIGS
    check_ranges(cfg)  # every shipped option is within the ranges and TRL's choices
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
    with pytest.raises(ConfigError, match=r"'eval.kz' \(did you mean 'eval.ks'\?\)"):  # a short key's one letter
        check_key("eval.kz")
    check_key("algorithm.trl.anything_goes")  # free-form dict: TRL checks it at start-up
    check_key("dataset.generator.max_operand")


def test_check_overrides_leaves_groups_and_hydra_keys_alone():
    check_overrides(
        [
            "model=tiny",
            "hydra.run.dir=/tmp/x",
            "+reward.functions.mine.weight=1",
            "~seed",
            "-m",
            "seed=1,2",
            "+hydra/launcher=slurm",
            "+experiment=gsm8k_grpo",
        ],
        groups=frozenset(GROUPS),
    )
    with pytest.raises(ConfigError, match="unknown config key 'sed'"):
        check_overrides(["sed=1"])


@pytest.mark.parametrize("override", ["experiment=null", "model= null", "hydra/launcher=null"])
def test_a_group_set_to_null_is_one_line_naming_how_to_leave_it_out(override):
    """`experiment=null` (what `--cfg job` shows when no experiment is chosen) was Hydra's 29-line ValueError traceback."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as refused:
        check_overrides([override], groups=frozenset(GROUPS))
    assert str(refused.value) == f"'{override}': a config group takes the name of one of its options; to leave the group out, write ~{key}"


@pytest.mark.parametrize(
    "key, refusal",
    [
        ("max_steps", "unknown config key 'max_steps' (did you mean 'algorithm.max_steps'?)"),
        ("eval.max_eval_samples", "unknown config key 'eval.max_eval_samples' (did you mean 'dataset.max_eval_samples'?)"),
        ("fine_grained.strict", "unknown config key 'fine_grained' (did you mean 'algorithm.fine_grained.strict'?)"),
    ],
)
def test_a_key_without_its_group_or_in_another_names_where_it_is(key, refusal):
    """TRL's flat names (max_steps=3) got no hint: the close matches were looked for at the same level only."""
    from rlvr.config import check_key

    with pytest.raises(ConfigError) as refused:
        check_key(key)
    assert str(refused.value) == refusal


@pytest.mark.parametrize("module", ["rlvr.run", "rlvr.eval", "rlvr.score"])
def test_help_into_a_closed_pipe_ends_without_a_traceback(module):
    """`rlvr --help | head -1` printed a BrokenPipeError traceback from Hydra's print (4 times in 5), exit 1."""
    import subprocess
    import sys

    help_command = subprocess.Popen([sys.executable, "-m", module, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    help_command.stdout.close()  # the reader gone before the help is written
    _, stderr = help_command.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr.decode()[-2000:]


def test_unknown_key_fails_in_one_line_without_torch():
    result = run_cli("rlvr.run", "algorithm.lerning_rate=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["rlvr: error: unknown config key 'algorithm.lerning_rate' (did you mean 'algorithm.learning_rate'?)"]


@pytest.mark.parametrize(
    "args, modes", [(["-m", "seed=1,2", "--cfg", "hydra"], "-m and --cfg"), (["--info", "--cfg=job"], "--cfg and --info")]
)
def test_two_hydra_modes_are_one_line(args, modes):
    with pytest.raises(ConfigError, match=f"^{modes}: Hydra does one of these at a time"):
        check_hydra_modes(args)
    check_hydra_modes(["--cfg", "job", "seed=1"])


def test_cfg_job_prints_config_without_importing_torch():
    code = (
        "import sys; sys.argv=['rlvr.run','--cfg','job']; import rlvr.run as r\n"
        "try:\n    r.main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CONF_DIR.parent)
    assert result.returncode == 0, result.stderr
    assert "name_or_path: tiny" in result.stdout


def test_yaml_typo_is_caught_by_the_schema(tmp_path):
    (tmp_path / "algorithm").mkdir()
    (tmp_path / "algorithm" / "typo.yaml").write_text("name: grpo\nnum_generatoins: 4\n")
    result = run_cli("rlvr.run", f"hydra.searchpath=[file://{tmp_path}]", "algorithm=typo", "--cfg", "job")
    assert one_line_error(result) == (
        "rlvr: error: algorithm/typo.yaml: unknown config key 'algorithm.num_generatoins' (did you mean 'algorithm.num_generations'?)"
    )


@pytest.mark.parametrize(
    "app, args, line",
    [
        (
            "rlvr.run",
            ["reward=gsm8k_strct"],
            "reward=gsm8k_strct: no such option (did you mean 'reward=gsm8k_strict'?); the reward options: ",
        ),
        ("rlvr.run", ["hydra/launcher=slurmm"], "hydra/launcher=slurmm: no such option (did you mean 'hydra/launcher=slurm'?); the "),
        ("rlvr.eval", ["target=x", "model=tinyy"], "model=tinyy: no such option (did you mean 'model=tiny'?); the model options: "),
        (
            "rlvr.score",
            ["input=x", "reward=[gsm8k_strict,think_formt]"],
            "reward=think_formt: no such option (did you mean 'reward=think_format'?)",
        ),
    ],
)
def test_a_group_option_that_does_not_exist_is_one_line_with_the_closest(app, args, line):
    result = run_cli(app, *args, "--cfg", "job")
    prog = "rlvr" if app == "rlvr.run" else app
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(f"{prog}: error: {line}")


def test_a_group_option_that_does_not_exist_in_a_presets_defaults_says_so(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /model: tinyy\n")
    result = run_cli("rlvr.run", f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine", "--cfg", "job")
    preset = tmp_path / "experiment" / "mine.yaml"
    assert one_line_error(result).startswith(f"rlvr: error: model=tinyy (named in {preset}'s defaults list): no such option (did you")


@pytest.mark.parametrize("preset", ["h100x8", "h100x16", "a100x4"])
def test_multi_gpu_presets_shard(preset):
    assert compose_with(f"hardware={preset}").hardware.sharding == "fsdp"


def test_the_two_node_preset_is_h100x8_on_two_nodes():
    two_nodes = OmegaConf.to_container(compose_with("hardware=h100x16").hardware)
    assert two_nodes == OmegaConf.to_container(compose_with("hardware=h100x8", "hardware.nodes=2").hardware)
    assert two_nodes["nodes"] * two_nodes["tasks_per_node"] == 16


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_presets_take_resources_from_hardware(launcher):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}", "hardware=h100x8"], return_hydra_config=True)
    hydra_launcher = cfg.hydra.launcher
    assert (hydra_launcher.nodes, hydra_launcher.tasks_per_node, hydra_launcher.gpus_per_node) == (1, 8, 8)
    assert hydra_launcher.mem_gb == cfg.hardware.mem_gb and hydra_launcher.cpus_per_task == cfg.hardware.cpus_per_task
    if launcher == "slurm":
        assert hydra_launcher.signal_delay_s > 0 and "setup" in hydra_launcher and "account" in hydra_launcher


@pytest.mark.parametrize("written", ["algorithm.lerning_rate=0.5", "+algorithm.lerning_rate=0.5", "++algorithm.lerning_rate=0.5"])
def test_a_typo_behind_plus_gets_the_same_line(written):
    with pytest.raises(
        ConfigError,
        match=r"^unknown config key 'algorithm.lerning_rate' "
        r"\(did you mean 'algorithm.learning_rate'\?\)$",
    ):
        check_overrides([written])


def test_plus_on_a_schema_key_is_one_line():
    with pytest.raises(ConfigError, match=r"'\+algorithm.beta': algorithm.beta is already a config key: drop the '\+'"):
        check_overrides(["+algorithm.beta=0.1"])
    check_overrides(["++algorithm.beta=0.1"])  # Hydra's add-or-override


@pytest.mark.parametrize(
    ("field", "owner"),
    [("learning_rate", "algorithm.learning_rate"), ("loss_type", "algorithm.loss_type"), ("seed", "seed"), ("bf16", "hardware.precision")],
)
def test_trl_passthrough_of_a_field_rlvr_sets_names_the_rlvr_key(field, owner):
    with pytest.raises(ConfigError, match=f"'\\+algorithm.trl.{field}' repeats {owner}: set {owner} instead"):
        check_overrides([f"+algorithm.trl.{field}=1"])
    with pytest.raises(ConfigError, match=f"^algorithm.trl.{field}=1 repeats {owner}"):  # from YAML, past the pre-flight
        check_ranges(compose_with(f"+algorithm.trl.{field}=1"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.epsilon=-1", "algorithm.epsilon=-1.0 must be > 0"),
        ("algorithm.beta=-1", "algorithm.beta=-1.0 must be >= 0"),
        ("algorithm.top_p=1.5", "algorithm.top_p=1.5 must be in (0, 1]"),
        ("algorithm.top_p=0", "algorithm.top_p=0.0 must be in (0, 1]"),
        ("algorithm.top_k=-1", "algorithm.top_k=-1 must be >= 0"),
        ("algorithm.max_steps=0", "algorithm.max_steps=0 must be > 0, or -1"),
        ("algorithm.save_steps=-5", "algorithm.save_steps=-5 must be >= 0"),
        ("dataset.eval_holdout=-1", "dataset.eval_holdout=-1 must be >= 0"),
        ("algorithm.num_generations=0", "algorithm.num_generations=0 must be >= 2"),
        ("algorithm.num_generations=1", "algorithm.num_generations=1 must be >= 2"),
        ("seed=-5", "seed=-5 must be in [0, 4294967295]"),
        ("eval.max_new_tokens=0", "eval.max_new_tokens=0 must be > 0"),
        ("model.warmup_sft_batch_size=0", "model.warmup_sft_batch_size=0 must be > 0"),
    ],
)
def test_out_of_range_values_are_one_line(override, message):
    with pytest.raises(ConfigError) as caught:
        check_ranges(compose_with(override))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_max_steps_minus_one_trains_epochs():
    check_ranges(compose_with("algorithm.max_steps=-1", "algorithm.num_train_epochs=2"))


def test_an_interpolation_that_is_no_number_names_the_key():
    with pytest.raises(ConfigError, match=r"^algorithm.learning_rate: .*'\$\{oc.env:HOME\}'.*could not be converted to Float$"):
        check_ranges(compose_with("algorithm.learning_rate=${oc.env:HOME}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.loss_type=dpo", "algorithm.loss_type='dpo' must be one of bnpo, cispo, dapo,"),
        ("algorithm.scale_rewards=std", "algorithm.scale_rewards='std' must be one of batch, group, none (TRL's GRPOConfig choices)"),
        ("algorithm.importance_sampling_level=seq", "must be one of sequence, token (did you mean 'sequence'?) (TRL's GRPOConfig"),
        ("+algorithm.trl.multi_objective_aggregation=mean", "algorithm.trl.multi_objective_aggregation='mean' must be one of"),
    ],
)
def test_choices_are_checked_against_trl(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_ranges(compose_with(override))
    check_ranges(compose_with("algorithm.loss_type=dr_grpo", "algorithm.scale_rewards=none"))


@pytest.mark.parametrize("key", list(CHOICES))
def test_a_typo_in_any_string_knob_is_refused_in_one_line_with_a_suggestion(key):
    value = allowed_values(key)[0]
    with pytest.raises(ConfigError) as caught:
        check_ranges(compose_with(f"{key}={value}x"))
    message = str(caught.value)
    assert message.startswith(f"{key}='{value}x' must be one of {value}, ")
    assert message.endswith(f"(did you mean '{value}'?)") and "\n" not in message


def test_every_choice_in_the_schema_is_a_string_knob_and_its_default_is_allowed():
    defaults = OmegaConf.structured(Config)
    for key in CHOICES:
        default = OmegaConf.select(defaults, key, throw_on_missing=False)
        assert isinstance(default, str) and default in allowed_values(key), key


def _trainer_literals(attribute: str) -> set[str]:
    """The strings GRPOTrainer's code compares `<x>.<attribute>` with: the values it acts on."""
    import ast
    import inspect

    import trl.trainer.grpo_trainer as module

    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == attribute:
            for side in node.comparators:
                items = side.elts if isinstance(side, (ast.List, ast.Tuple, ast.Set)) else [side]
                found |= {item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)}
    return found


@pytest.mark.parametrize("field", ["loss_type", "scale_rewards", "importance_sampling_level"])
def test_choices_read_from_trls_docs_are_the_values_its_trainer_handles(field):
    """Breaks if TRL's docstring changes shape (the derivation would read nothing or too much)."""
    from trl import GRPOConfig

    documented = trl_choices(GRPOConfig, field)
    assert documented == _trainer_literals(field), (field, documented)
    assert getattr(GRPOConfig, field) in documented


# bfan05/simple_grpo: gpu_config.yaml's values, and TRL 0.26.2's defaults (the version it pins) for the
# GRPOConfig fields it leaves unset; its system prompt and reward, verbatim.
SIMPLE_GRPO = {
    "model.name_or_path": "Qwen/Qwen2.5-0.5B-Instruct",
    "dataset.source": "openai/gsm8k",
    "dataset.subset": "main",
    "dataset.train_split": "train[:128]",
    "dataset.eval_split": "test[:64]",
    "dataset.system_prompt": "You are a helpful assistant. Solve the problem.\nShow your reasoning briefly.\nAt the end, "
    "output exactly one line in this format:\nFinal: <number>\nDo not write anything after the Final line.",
    "algorithm.learning_rate": 5e-6,
    "algorithm.max_completion_length": 256,
    "algorithm.num_generations": 8,
    "algorithm.max_steps": 128,
    "algorithm.per_device_train_batch_size": 8,
    "algorithm.gradient_accumulation_steps": 8,
    "algorithm.generation_batch_size": 64,
    "algorithm.beta": 0.0,
    "algorithm.temperature": 1.0,
    "algorithm.lr_scheduler_type": "linear",
    "algorithm.warmup_steps": 0,
    "algorithm.loss_type": "dapo",
    "algorithm.scale_rewards": "group",
    "algorithm.epsilon": 0.2,
    "algorithm.top_p": 1.0,
    "algorithm.num_iterations": 1,
    "algorithm.mask_truncated_completions": False,
    "eval.greedy": True,
}


def test_simple_grpo_preset_is_the_seed_systems_setup():
    cfg = compose_with("experiment=simple_grpo")
    got = {key: OmegaConf.select(cfg, key) for key in SIMPLE_GRPO}
    assert got == SIMPLE_GRPO
    [reward] = cfg.reward.functions.values()
    assert (reward._target_, reward.correct, reward.wrong, reward.missing) == ("rlvr.rewards.numeric.FinalLineReward", 1.0, 0.1, 0.0)


def test_no_preset_claims_to_mirror_a_system_it_does_not_reproduce():
    """Only presets with a test pinning them to their seed's settings may say they reproduce one."""
    pinned = {"simple_grpo"}
    for path in (CONF_DIR / "experiment").glob("*.yaml"):
        claims = any(word in path.read_text().lower() for word in ("mirrors", "reproduced", "reproduces"))
        assert not claims or path.stem in pinned, path


@pytest.mark.parametrize(
    "argument, line",
    [
        ("algorithm.max_steps=ten", "algorithm.max_steps=ten: Value 'ten' of type 'str' could not be converted to Integer"),
        ("offline=maybe", "offline=maybe: Value 'maybe' is not a valid bool (type str)"),
        (
            "reward.functions.gsm8k_flexible.wieght=0.2",
            "reward.functions.gsm8k_flexible.wieght: reward.functions.gsm8k_flexible has no 'wieght' (did you mean 'weight'?); "
            "its keys: _target_, weight (to add a key, start the override with +)",
        ),
        ("seed=1,2", "Ambiguous value for argument 'seed=1,2'; 1. To use it as a list, use key=[value1,value2]; "),
        (
            "algorithm.trl.foo=1",
            "algorithm.trl.foo: algorithm.trl holds no keys yet: to add one, start the override with + (+algorithm.trl.foo=...)",
        ),
        (
            "dataset.mixer={/data/a.jsonl: 30}",
            "dataset.mixer: to set the whole mapping, write '++dataset.mixer={...}' (Hydra merges a plain dataset.mixer= key by key)",
        ),
        (
            "dataset.prompt_template={qestion}",
            "'dataset.prompt_template={qestion}': no viable alternative at input '{qestion}'; See https://hydra.cc/docs/",
        ),
        (
            "dataset.prompt_template=Q: {q",
            "'dataset.prompt_template=Q: {q': mismatched input '{' expecting <EOF>; See https://hydra.cc/docs/1.2/advanced/"
            "override_grammar/basic for details; a value with spaces, braces or ~ goes in quotes: key='\"...\"'",
        ),
        (
            "model.name_or_path=~/models/qwen",
            "'model.name_or_path=~/models/qwen': LexerNoViableAltException: model.name_or_path=~/models/qwen; ^; See https://hydra.cc/docs/1.2/advanced/"
            "override_grammar/basic for details; a value with spaces, braces or ~ goes in quotes: key='\"...\"'",
        ),
        ("algorithm.beta=[0.1", "'algorithm.beta=[0.1': no viable alternative at input '[0.1'"),
        ("hydra.searchpath=[file:///nonexistent/presets]", "hydra.searchpath: /nonexistent/presets is not a directory"),
        ("--config-dir=/nonexistent/presets", "Additional config directory '/nonexistent/presets' not found"),
        ("experiment=gsm8k_grp", "experiment=gsm8k_grp: no such option (did you mean 'experiment=gsm8k_grpo'?); the experiment options: "),
    ],
)
def test_a_command_line_that_hydra_refuses_is_one_line(argument, line, tmp_path):
    """A wrong type, a key the config lacks, the override grammar, a missing --config-dir, an
    experiment that does not exist (an optional group would skip it silently and run the default)."""
    result = refused_in_process(argument, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.strip().startswith(f"rlvr: error: {line}"), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
