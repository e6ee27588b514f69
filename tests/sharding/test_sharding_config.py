"""hardware.sharding in the config: what it maps to, and what it refuses in one line."""

import pytest
from omegaconf import OmegaConf

from conftest import one_line_error, run_cli
from rlvr.config import HardwareConfig
from rlvr.errors import ConfigError
from rlvr.hardware import trainer_arguments
from rlvr.sharding import check_running


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


@pytest.mark.parametrize("values, message", [
    ({"sharding": "zero4"}, "hardware.sharding='zero4' must be one of none, fsdp"),
    ({"sharding": "fsdp"}, "asks for one"),
])
def test_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        trainer_arguments(hardware(**values))


def test_fsdp_through_algorithm_trl_is_refused_naming_the_knob():
    error = one_line_error(run_cli("rlvr.run", "+algorithm.trl.fsdp=full_shard"))
    assert "hardware.sharding" in error


def test_a_run_that_is_not_sharded_is_stopped():
    from accelerate.utils import DistributedType

    class Accelerator:
        distributed_type, num_processes, process_index = DistributedType.MULTI_CPU, 2, 0

    with pytest.raises(ConfigError, match="accelerate runs MULTI_CPU with 2 process"):
        check_running(Accelerator, model=None)


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
