"""rlvr._compat: each patch's upstream internals are still where and what the patch expects.

A failure here means a library upgrade moved something a patch relies on: read the patch's docstring
(its target version and removal condition) before changing anything else. The behaviour each patch
serves is tested where it is used (config, launcher, test_cpu_log_probs, vocab, sharding, QLoRA, vLLM).
"""

import dataclasses
import importlib
import io
import inspect
import os
import subprocess
import sys

from rlvr import _compat


def test_hydra_runs_every_command_through_run_and_report():
    import hydra._internal.utils as hydra_utils

    assert list(inspect.signature(hydra_utils.run_and_report).parameters) == ["func"]
    # read as a module global at each call, so the wrapped one is the one called
    assert "run_and_report(" in inspect.getsource(hydra_utils._run_hydra)


def test_hydra_reads_a_config_file_into_a_local_named_full_path(tmp_path):
    from hydra._internal.core_plugins.file_config_source import FileConfigSource

    from rlvr._compat import hydra_file_being_read

    (tmp_path / "latin1.yaml").write_bytes("name: café\n".encode("latin-1"))
    try:
        FileConfigSource(provider="test", path=str(tmp_path)).load_config("latin1.yaml")
    except UnicodeDecodeError as exc:
        assert hydra_file_being_read(exc) == str(tmp_path / "latin1.yaml")
    else:
        raise AssertionError("hydra read latin-1 as UTF-8")


def test_hydra_job_results_are_read_through_a_property():
    from hydra.core.utils import JobReturn

    assert isinstance(JobReturn.return_value, property) and JobReturn.return_value.fset is not None
    assert "_return_value" in {f.name for f in dataclasses.fields(JobReturn)}


def test_trls_fused_head_reads_the_tile_width_and_the_triton_switch_at_each_call():
    import trl.trainer.utils as trl_utils

    assert callable(trl_utils._use_triton) and isinstance(trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, int)
    source = inspect.getsource(trl_utils)
    assert "compact = _use_triton(" in source and "_CHUNKED_LOGPROB_CHUNK_SIZE," in source


def test_trls_fused_head_calls_its_chunked_function_by_module_global():
    import trl.trainer.utils as trl_utils

    assert hasattr(trl_utils._ChunkedLogProbFunction, "apply")
    assert "_ChunkedLogProbFunction.apply(" in inspect.getsource(trl_utils)

    class Marker:
        def __init__(self, original):
            self.original = original

    original = trl_utils._ChunkedLogProbFunction
    with _compat.swapped_chunked_log_prob_function(Marker):
        assert isinstance(trl_utils._ChunkedLogProbFunction, Marker)
        assert trl_utils._ChunkedLogProbFunction.original is original
    assert trl_utils._ChunkedLogProbFunction is original


def test_accelerate_keeps_its_distributed_type_in_a_shared_state():
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    assert isinstance(PartialState._shared_state, dict)
    assert {"MULTI_CPU", "FSDP"} <= set(DistributedType.__members__)


def test_deepspeed_reads_its_table_of_compatible_ops_before_building_the_shm_op():
    import deepspeed.ops  # the deepspeed extra: `make install` installs it

    deepspeed_torch = importlib.import_module("deepspeed.comm.torch")  # `import ... as` would find deepspeed.comm's `torch`

    assert "__compatible_ops__" in inspect.getsource(deepspeed_torch.build_shm_op)
    _compat.skip_deepspeed_shm_comm_op()
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False


def test_transformers_keeps_its_deepspeed_switch_in_a_module_weak_reference():
    from transformers.integrations import deepspeed

    assert hasattr(deepspeed, "_hf_deepspeed_config_weak_ref")
    assert "_hf_deepspeed_config_weak_ref" in inspect.getsource(deepspeed.is_deepspeed_zero3_enabled)
    before = deepspeed._hf_deepspeed_config_weak_ref
    with _compat.loading_whole():
        assert not deepspeed.is_deepspeed_zero3_enabled()
    assert deepspeed._hf_deepspeed_config_weak_ref is before


def test_bitsandbytes_4bit_layers_have_the_cpu_kernel_switch():
    from bitsandbytes.nn import Linear4bit  # the quantization extra: `make install` installs it

    assert "self.support_avx512bf16_for_cpu" in inspect.getsource(Linear4bit)


def test_trl_builds_its_colocated_vllm_engine_by_module_global():
    from trl.generation.vllm_generation import VLLMGeneration

    assert "self.llm = LLM(" in inspect.getsource(VLLMGeneration._init_vllm)


def test_trl_syncs_vllm_weights_through_the_engine_models_load_weights():
    """The vLLM side (layerwise reload, the tied head) runs in tests/test_vllm_rollouts.py, in .venv-vllm."""
    from trl.generation.vllm_generation import VLLMGeneration

    source = inspect.getsource(VLLMGeneration.sync_weights)
    assert "llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(" in source


def test_trl_gathers_fsdp2_parameters_for_vllm_with_full_tensor():
    """What reshard_fsdp2_before_vllm_sync prepares for: TRL reads `generation.model` and calls
    full_tensor() on each parameter (FSDP2 runs with vLLM in tests/test_vllm_rollouts.py)."""
    from trl.generation.vllm_generation import VLLMGeneration

    assert "param.full_tensor()" in inspect.getsource(VLLMGeneration._iter_fsdp2_params)
    assert "model = self.model" in inspect.getsource(VLLMGeneration._iter_named_params)


def test_transformers_warns_of_missing_keys_through_one_trainer_method():
    from transformers import Trainer

    assert "self._issue_warnings_after_load(load_result)" in inspect.getsource(Trainer._load_from_checkpoint)
    assert "missing keys in the checkpoint" in inspect.getsource(Trainer._issue_warnings_after_load)


def warnings_after_load(tie: bool, missing: list[str]) -> list[str]:
    """What a Trainer with the mixin warns after a checkpoint without `missing` loaded into a Qwen2 model."""
    import logging

    from torch.nn.modules.module import _IncompatibleKeys
    from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer

    class Quiet(_compat.TiedWeightsLoadQuietly, Trainer):
        pass

    trainer = object.__new__(Quiet)  # only `model` is read
    shape = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=16)
    trainer.model = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, tie_word_embeddings=tie, **shape))
    records, logger = [], logging.getLogger("transformers.trainer")
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        trainer._issue_warnings_after_load(_IncompatibleKeys(missing, []))
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records]


def test_a_tied_head_missing_from_a_checkpoint_is_no_warning_and_anything_else_still_is():
    assert warnings_after_load(tie=True, missing=["lm_head.weight"]) == []
    assert warnings_after_load(tie=False, missing=["lm_head.weight"]) == [
        "There were missing keys in the checkpoint model loaded: ['lm_head.weight']."
    ]
    both = ["model.embed_tokens.weight", "lm_head.weight"]  # neither loaded: the tie restores nothing
    assert warnings_after_load(tie=True, missing=both) == [f"There were missing keys in the checkpoint model loaded: {both}."]
    assert warnings_after_load(tie=True, missing=["lm_head.weight", "model.norm.weight"]) == [
        "There were missing keys in the checkpoint model loaded: ['model.norm.weight']."
    ]


def test_submitit_requeues_with_check_call_on_scontrol_then_exits_minus_1():
    from submitit.core.job_environment import SignalHandler
    from submitit.slurm.slurm import SlurmJobEnvironment

    assert 'subprocess.check_call(["scontrol", "requeue", jid]' in inspect.getsource(SlurmJobEnvironment._requeue)
    assert "self.env._requeue(countdown)" in inspect.getsource(SignalHandler.checkpoint_and_try_requeue)
    assert "sys.exit(-1)" in inspect.getsource(SignalHandler._exit)


def test_a_requeue_ended_by_its_own_sigterm_exits_as_submitit_would_and_other_errors_stand():
    import signal
    import subprocess

    import pytest

    def killed_by_the_requeue(signum, frame):
        raise subprocess.CalledProcessError(-signal.SIGTERM, ["scontrol", "requeue", "142"])

    with pytest.raises(SystemExit) as ended:
        _compat.requeue_through_submitit(killed_by_the_requeue)
    assert ended.value.code == -1

    def refused(signum, frame):
        raise subprocess.CalledProcessError(1, ["scontrol", "requeue", "142"])

    with pytest.raises(subprocess.CalledProcessError):
        _compat.requeue_through_submitit(refused)


def test_trl_generates_every_steps_per_generation_times_num_iterations_batches_counted_by_step():
    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer._prepare_inputs)
    assert "generate_every = self.args.steps_per_generation * self.num_iterations" in source
    assert "self._step % generate_every == 0" in source and "self._step += 1" in inspect.getsource(GRPOTrainer.training_step)


def test_trls_repeat_sampler_has_no_set_epoch_and_transformers_calls_the_samplers():
    from transformers import Trainer
    from trl.trainer.utils import RepeatSampler

    assert not hasattr(RepeatSampler, "set_epoch")  # when it has one, drop seed_each_epoch
    assert "underlying_sampler.set_epoch(epoch)" in inspect.getsource(Trainer._run_epoch)
    sampler = _compat.seed_each_epoch(RepeatSampler(list(range(8)), mini_repeat_count=1, batch_size=8, shuffle=True, seed=3))
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == first  # an epoch's order is its own, however many were drawn before


def test_transformers_prints_its_wandb_offline_notice_to_stdout_as_it_imports_its_integrations():
    import_it = "import transformers.integrations.integration_utils"
    ours = "from rlvr._compat import wandb_offline_notice_to_stderr; wandb_offline_notice_to_stderr(); " + import_it
    env = {**os.environ, "WANDB_MODE": "offline"}
    upstream, patched = (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300) for code in (import_it, ours)
    )
    assert "Running in WANDB offline mode" in upstream.stdout  # gone: remove wandb_offline_notice_to_stderr
    assert "Running in WANDB offline mode" not in patched.stdout and "Running in WANDB offline mode" in patched.stderr


def test_trls_reward_trainer_counts_its_tokens_in_a_private_total_and_transformers_leaves_the_states_count_alone():
    import trl.trainer.reward_trainer as reward_trainer
    from transformers import TrainingArguments

    source = inspect.getsource(reward_trainer.RewardTrainer)
    assert "self._total_train_tokens += " in source and '["num_tokens"] = [self._total_train_tokens]' in source
    assert TrainingArguments("unused").include_num_input_tokens_seen == "no"


def test_tqdm_keeps_its_live_bars_in_a_class_set_and_forgets_a_closed_one():
    from tqdm import tqdm

    from rlvr._compat import close_progress_bars

    bar = tqdm(total=2, file=io.StringIO())
    assert bar in tqdm._instances  # gone: close_progress_bars closes nothing
    close_progress_bars()
    assert bar not in tqdm._instances and bar.disable


def test_transformers_logs_its_load_report_on_the_modeling_utils_logger_with_its_title():
    from transformers import modeling_utils
    from transformers.utils import loading_report

    assert modeling_utils.logger.name == "transformers.modeling_utils"
    assert "LOAD REPORT" in inspect.getsource(loading_report.log_state_dict_report)
    assert "logger=logger" in inspect.getsource(modeling_utils.PreTrainedModel._finalize_model_loading)
