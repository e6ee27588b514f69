"""A start that is refused writes nothing: no folder of its own, nothing in the run dir it names, nothing in
the log of the run that holds that dir. And a continued run keeps one end-of-training row, its own."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import TINY_RUN, completed_run, one_line_error, refused_in_process, run_cli

pytestmark = pytest.mark.slow


def test_a_refused_config_leaves_no_outputs_folder(tmp_path):
    result = refused_in_process(*TINY_RUN, "algorithm.learning_rate=-1", f"hydra.run.dir={tmp_path / 'outputs' / 'today' / 'now'}")
    assert "algorithm.learning_rate=-1.0 must be > 0" in one_line_error(result)
    assert "must be > 0" not in result.stdout  # one line: not also the log record on the console
    assert list(tmp_path.iterdir()) == []


def test_a_value_a_preset_leaves_for_the_user_is_refused_before_anything_is_written(tmp_path):
    """reward=hybrid asks for its reward model (`???`): refused with the start's other checks."""
    line = one_line_error(refused_in_process(*TINY_RUN, "reward=hybrid", f"hydra.run.dir={tmp_path / 'run'}"))
    assert line == "rlvr: error: reward.functions.hybrid.reward_model must be set (it is ???)"
    assert list(tmp_path.iterdir()) == []


def test_a_start_refused_for_its_process_count_writes_nothing(tmp_path):
    """What a user gets who continues a 2-process FSDP run with a plain, one-process command."""
    line = one_line_error(refused_in_process(*TINY_RUN, "hardware.tasks_per_node=2", "hardware.sharding=fsdp", f"hydra.run.dir={tmp_path}"))
    assert line == (
        "rlvr: error: hardware.sharding=fsdp splits the model across the 2 processes the hardware asks "
        "for, but this is one process: start it with -m hydra/launcher=local (or slurm), torchrun or "
        "accelerate launch, or use sharding=none"
    )
    assert list(tmp_path.iterdir()) == []  # no config_resolved.yaml, run_info.jsonl, run.log or lock


def test_a_machine_without_bubblewrap_refuses_a_code_run_and_writes_nothing(tmp_path):
    """The sandbox is checked with the start's other checks: no run dir, one line naming the package and the opt-in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    run_dir = tmp_path / "run"
    line = one_line_error(
        refused_in_process(*TINY_RUN, "reward=code_tests", "dataset=humaneval", f"hydra.run.dir={run_dir}", env={"PATH": str(bin_dir)})
    )
    assert line == (
        "rlvr: error: reward.functions.code_tests: the code reward's sandbox needs bubblewrap, which is not "
        "installed: install Debian's or your distribution's 'bubblewrap' package (apt-get install "
        "bubblewrap), or opt in to running model-written code unsandboxed with "
        "reward.functions.code_tests.sandbox=none"
    )
    assert not run_dir.exists()


def test_a_machine_without_wandb_refuses_a_logged_run_and_writes_nothing(tmp_path, monkeypatch):
    """GPU images built without wandb exist: one line naming the package and logging=disabled, not
    transformers' error from inside the trainer's constructor after the model has loaded."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` sees where it is not installed
    run_dir = tmp_path / "run"
    line = one_line_error(refused_in_process(*TINY_RUN, "logging=offline", f"hydra.run.dir={run_dir}"))
    assert line == "rlvr: error: logging.wandb=offline but wandb is not installed: pip install wandb, or logging=disabled"
    assert not run_dir.exists()


def test_an_online_run_without_a_wandb_key_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    """It was refused as the recipe began, after the start was recorded (config_resolved.yaml, run_info.jsonl)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "no-settings"))  # no key stored there
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run_dir = tmp_path / "run"
    line = one_line_error(refused_in_process(*TINY_RUN, "logging=wandb", f"hydra.run.dir={run_dir}"))
    assert line.startswith("rlvr: error: logging.wandb=online: ") and "logging=offline" in line
    assert not run_dir.exists()


TORCHRUN_RANK_0 = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}
SRUN_TASK_0 = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2"}


@pytest.mark.parametrize(("launcher", "ranks"), [([], TORCHRUN_RANK_0), (["hydra/launcher=local"], TORCHRUN_RANK_0), ([], SRUN_TASK_0)])
def test_a_sweep_inside_a_torchrun_launch_is_refused_before_any_job_starts(tmp_path, launcher, ranks):
    """Each rank of `torchrun -m rlvr.run -m ...` (or task of `srun -n2`) would run the whole sweep:
    under the basic launcher the first run's end closes the process group, so the second waited on its
    peers forever; under submitit's, each rank would launch every job. One line, before any job starts."""
    result = run_cli("rlvr.run", "-m", *launcher, *TINY_RUN, "seed=1,2", f"hydra.sweep.dir={tmp_path}", env=ranks, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert one_line_error(result).startswith("rlvr: error: a -m run inside a 2-process launch (torchrun, accelerate launch, srun) would")
    assert not [p for p in tmp_path.iterdir() if p.name != "multirun.yaml"]  # no job dir


def test_a_start_refused_by_the_lock_leaves_the_holders_log_alone(tmp_path):
    from rlvr.tracking.run_dir import LOCK_NAME, process_start_time

    holder = {
        "job": "process:elsewhere",
        "host": socket.gethostname(),
        "pid": os.getpid(),  # alive: this test
        "pid_started": process_start_time(os.getpid()),
        "since": "earlier",
        "command": "rlvr (the holder)",
    }
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    (tmp_path / "run.log").write_text("the holder's log\n")
    line = one_line_error(run_cli("rlvr.run", *TINY_RUN, f"hydra.run.dir={tmp_path}", timeout=120))
    assert f"is in use by another run: pid {os.getpid()} on {socket.gethostname()}" in line
    assert (tmp_path / "run.log").read_text() == "the holder's log\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK_NAME, "run.log"])


def test_a_continued_run_keeps_one_end_of_training_row(tmp_path):
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=2", "algorithm.save_steps=2", "eval.before=false")
    completed_run(tmp_path, *TINY_RUN, "algorithm.max_steps=3", "algorithm.save_steps=2", "eval.before=false")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "train_runtime" in row] == [3]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3]


def test_a_batch_that_splits_a_prompts_group_is_refused_before_anything_is_written(tmp_path):
    """TRL's GRPOConfig would refuse it too, but only after the model loaded and warmed up."""
    line = one_line_error(refused_in_process(*TINY_RUN, "algorithm.per_device_train_batch_size=18", f"hydra.run.dir={tmp_path / 'run'}"))
    assert line == (
        "rlvr: error: algorithm.num_generations=4 must divide the completions generated at once, "
        "algorithm.per_device_train_batch_size=18 x 1 process x algorithm.gradient_accumulation_steps=1 = 18: "
        "a prompt's completions are generated together"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_reward_that_does_not_import_is_refused_before_anything_is_written(tmp_path):
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    line = one_line_error(refused_in_process(*TINY_RUN, "+reward.functions.mine={_target_: no_such_module.fn}", run_dir))
    assert line == (
        "rlvr: error: reward.functions.mine._target_: cannot import 'no_such_module.fn' "
        "(ModuleNotFoundError: No module named 'no_such_module')"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_hybrid_reward_model_that_is_not_there_is_refused_before_anything_is_written(tmp_path):
    missing = tmp_path / "no_such_rm"
    line = one_line_error(
        refused_in_process(
            *TINY_RUN, "reward=hybrid", f"reward.functions.hybrid.reward_model={missing}", f"hydra.run.dir={tmp_path / 'run'}"
        )
    )
    assert line == f"rlvr: error: model directory not found: {missing} (reward.functions.hybrid.reward_model)"
    assert list(tmp_path.iterdir()) == []


HUB_STATE_AT_EXIT = """
import atexit, sys
def show():
    import huggingface_hub.constants
    print("HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
atexit.register(show)
sys.argv = ["rlvr", "hardware.device=cuda", "hydra.run.dir=" + sys.argv[1]]
from rlvr.run import main
main()
"""


def test_an_offline_run_is_offline_before_anything_imports_huggingface_hub(tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE once, at its import: the start-up check imported it (through
    transformers, peft and bitsandbytes, which looked for a kernel on the Hub) before the run set it."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    result = subprocess.run(
        [sys.executable, "-c", HUB_STATE_AT_EXIT, str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120
    )
    assert "rlvr: error: hardware.device=cuda" in result.stderr, result.stderr[-2000:]  # refused after the range check
    assert result.stdout.splitlines()[-1] == "HF_HUB_OFFLINE True"


@pytest.mark.parametrize("inside", ["final_model", "checkpoints/checkpoint-8", "final_adapter"])
def test_a_run_dir_that_holds_a_saved_model_or_a_checkpoint_is_refused_naming_its_run(tmp_path, inside):
    """`hydra.run.dir=RUN/checkpoints/checkpoint-8`, meant as "continue from here", started a new run
    inside the checkpoint, writing its files among the saved ones."""
    (tmp_path / "run_info.jsonl").write_text("{}\n")
    held = tmp_path / inside
    held.mkdir(parents=True)
    name = {"final_model": "config.json", "final_adapter": "adapter_config.json"}.get(inside, "trainer_state.json")
    (held / name).write_text("{}")
    before = sorted(held.iterdir())
    line = one_line_error(refused_in_process(*TINY_RUN, f"hydra.run.dir={held}"))
    assert line == (
        f"rlvr: error: hydra.run.dir={held} holds a saved model or checkpoint ({name}), not a run: "
        f"to continue that run from its newest complete checkpoint, pass hydra.run.dir={tmp_path}"
    )
    assert sorted(held.iterdir()) == before


def test_a_folder_of_a_users_files_is_refused_as_a_run_dir_and_left_as_it_was(tmp_path):
    """`hydra.run.dir=.` in a project: the run replaced its metrics.jsonl, rollouts.jsonl, plots/ and eval/."""
    (tmp_path / "plots").mkdir()
    for name in ("metrics.jsonl", "rollouts.jsonl", "plots/reward.png"):
        (tmp_path / name).write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    line = one_line_error(refused_in_process(*TINY_RUN, f"hydra.run.dir={tmp_path}"))
    assert line == (
        f"rlvr: error: hydra.run.dir={tmp_path} holds files that no rlvr run wrote (metrics.jsonl, plots, rollouts.jsonl): "
        "a run would write among them; pick a new or empty dir"
    )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("inside", ["eval", "checkpoints", "new"])
def test_a_run_dir_inside_another_run_is_refused(tmp_path, inside):
    (tmp_path / "run_info.jsonl").write_text("{}\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "after.jsonl").write_text("{}\n")
    line = one_line_error(refused_in_process(*TINY_RUN, f"hydra.run.dir={tmp_path / inside}"))
    assert line == (
        f"rlvr: error: hydra.run.dir={tmp_path / inside} is inside the run dir {tmp_path}: pick a dir outside it, "
        f"or to continue that run from its newest complete checkpoint, pass hydra.run.dir={tmp_path}"
    )
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "new").exists()


def test_a_policy_named_as_the_hybrid_reward_model_is_refused_before_anything_is_written(tmp_path):
    """A GRPO run's final_model/ (a causal LM) loaded as a reward model got a new, random score head:
    the run trained on noise, exit 0."""
    policy = tmp_path / "grpo_run" / "final_model"
    policy.mkdir(parents=True)
    (policy / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}')
    run_dir = tmp_path / "run"
    line = one_line_error(
        refused_in_process(*TINY_RUN, "reward=hybrid", f"reward.functions.hybrid.reward_model={policy.parent}", f"hydra.run.dir={run_dir}")
    )
    assert line == (
        f"rlvr: error: reward model '{policy.parent}' is a Qwen2ForCausalLM, not a reward model (no trained score head): "
        "name the run dir of an algorithm=reward_model run, or a sequence-classification model"
    )
    assert not run_dir.exists()
