"""hardware.sharding in the config: what it maps to, and what it refuses in one line."""

import pytest
from omegaconf import OmegaConf

from conftest import one_line_error, run_cli
from rlvr.config import HardwareConfig
from rlvr.errors import ConfigError
from rlvr.hardware.device import trainer_arguments
from rlvr.hardware.sharding import check_running, sharding_asked
from rlvr.hardware.sharding import sharding_arguments


def hardware(**values):
    return OmegaConf.merge(OmegaConf.structured(HardwareConfig), values)


def test_none_adds_nothing_and_fsdp_asks_transformers_for_fsdp2():
    assert "fsdp" not in trainer_arguments(hardware())
    arguments = trainer_arguments(hardware(sharding="fsdp", tasks_per_node=2))
    assert arguments["fsdp"] is True and arguments["fsdp_config"]["version"] == 2


def test_a_sharded_checkpoint_config_builds_transformers_fsdp2_plugin():
    from trl import GRPOConfig

    config = GRPOConfig(output_dir="/tmp/unused", report_to=[], **trainer_arguments(hardware(sharding="fsdp", tasks_per_node=2)))
    assert config.fsdp_plugin_args["fsdp_version"] == 2
    assert config.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"


@pytest.mark.parametrize("values, message", [({"sharding": "fsdp"}, "asks for one"), ({"sharding": "zero3"}, "asks for one")])
def test_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        trainer_arguments(hardware(**values))


def test_fsdp_through_algorithm_trl_is_refused_naming_the_knob():
    error = one_line_error(run_cli("rlvr.run", "+algorithm.trl.fsdp=full_shard"))
    assert "hardware.sharding" in error


@pytest.mark.parametrize("asked", ["fsdp", "zero2", "zero3"])
def test_a_run_that_is_not_sharded_is_stopped(asked):
    from accelerate.utils import DistributedType

    class Trainer:
        class accelerator:
            distributed_type, num_processes, process_index = DistributedType.MULTI_CPU, 2, 0

    with pytest.raises(ConfigError, match=f"sharding={asked} was asked, but accelerate runs MULTI_CPU with 2 process"):
        check_running(Trainer, asked)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_asks_transformers_for_deepspeed_with_the_trainers_values(stage):
    from trl import GRPOConfig

    arguments = trainer_arguments(hardware(sharding=f"zero{stage}", tasks_per_node=2))
    assert arguments["use_cpu"] is True and "fsdp" not in arguments
    config = GRPOConfig(
        output_dir="/tmp/unused", report_to=[], per_device_train_batch_size=4, num_generations=4, max_grad_norm=0.5, **arguments
    )
    assert sharding_asked(config) == f"zero{stage}"
    filled = config.hf_deepspeed_config.config  # "auto" filled from the arguments by transformers
    assert filled["zero_optimization"]["stage"] == stage and filled["gradient_clipping"] == 0.5
    assert filled["train_micro_batch_size_per_gpu"] == 4
    if stage == 3:  # else the tiny test model (hidden size 64) would not be split; a whole model is saved
        assert filled["zero_optimization"]["stage3_param_persistence_threshold"] == 0
        assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_zero3_keeps_small_parameters_whole_on_a_gpu_only():
    threshold = lambda device: sharding_arguments(hardware(sharding="zero3", tasks_per_node=2, device=device))[  # noqa: E731
        "deepspeed"
    ]["zero_optimization"]["stage3_param_persistence_threshold"]
    assert threshold("cpu") == 0 and threshold("cuda") == "auto"


def test_zero_without_deepspeed_installed_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if not installed: its import fails
    monkeypatch.setitem(sys.modules, "deepspeed.ops", None)
    with pytest.raises(ConfigError, match=r"hardware.sharding=zero2 needs DeepSpeed, .*pip install 'rlvr\[deepspeed\]'"):
        trainer_arguments(hardware(sharding="zero2", tasks_per_node=2))


def test_deepspeed_does_not_compile_its_inference_only_shm_op():
    from deepspeed.comm.torch import build_shm_op

    sharding_arguments(hardware(sharding="zero2", tasks_per_node=2))
    assert build_shm_op() is None  # would JIT-compile for a minute (g++) on a machine without its cache


def test_activation_checkpointing_under_fsdp_is_fsdps_own():
    from trl import GRPOConfig

    arguments = trainer_arguments(hardware(sharding="fsdp", tasks_per_node=2, activation_checkpointing=True))
    assert arguments["activation_checkpointing"] is False and arguments["fsdp_config"]["activation_checkpointing"] is True
    config = GRPOConfig(output_dir="/tmp/unused", report_to=[], **arguments)  # transformers refuses both at once
    assert config.fsdp_plugin_args["activation_checkpointing"] is True


def test_the_warm_ups_arguments_are_unsharded_and_keep_activation_checkpointing():
    arguments = trainer_arguments(hardware(sharding="fsdp", tasks_per_node=2, activation_checkpointing=True), shard=False)
    assert "fsdp" not in arguments and "fsdp_config" not in arguments
    assert arguments["activation_checkpointing"] is True  # the sharded arguments hand it to FSDP instead


def test_a_torchrun_launch_of_two_processes_shards_whatever_the_hardware_asks_for():
    """torchrun starts the processes: hardware.tasks_per_node (1 by default) need not say so."""
    from rlvr.hardware.sharding import check_sharding

    check_sharding(hardware(sharding="fsdp"), processes=2)
    with pytest.raises(ConfigError, match="asks for one"):
        check_sharding(hardware(sharding="fsdp"), processes=1)


@pytest.mark.parametrize("variable, flag", [("ACCELERATE_USE_DEEPSPEED", "--use_deepspeed"), ("ACCELERATE_USE_FSDP", "--use_fsdp")])
def test_a_launchers_own_sharding_flag_is_refused(monkeypatch, variable, flag):
    """accelerate launch --use_deepspeed trained ZeRO-2 while rlvr recorded hardware.sharding=none (a
    resume as DDP then lost the optimizer state); --use_fsdp ended in a traceback from FSDP on CPU."""
    from rlvr.hardware.sharding import check_sharding

    monkeypatch.setenv(variable, "false")
    check_sharding(hardware(sharding="none"), processes=2)
    monkeypatch.setenv(variable, "true")
    for sharding in ("none", "zero2"):
        with pytest.raises(ConfigError, match=f"^accelerate launch {flag} sets up a sharding of its own"):
            check_sharding(hardware(sharding=sharding), processes=2)


def test_the_trainer_arguments_of_a_torchrun_launch_shard(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert trainer_arguments(hardware(sharding="fsdp"))["fsdp"] is True
