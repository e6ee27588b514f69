"""The hardware group: devices, precisions and the environment torch must see before it loads."""

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, one_line_error, run_cli
from rlvr.config import HardwareConfig
from rlvr.errors import ConfigError
from rlvr.hardware.device import check_device, export_device_environment

NO_MPS = "hardware.device=mps but torch sees no Apple-silicon GPU"


def hardware(**values):
    return OmegaConf.merge(OmegaConf.structured(HardwareConfig), values)


def test_mps_asks_for_the_cpu_fallback_and_cpu_does_not(monkeypatch):
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    export_device_environment(hardware(device="cpu"))
    assert "PYTORCH_ENABLE_MPS_FALLBACK" not in os.environ
    export_device_environment(hardware(device="mps"))
    assert os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"


@pytest.mark.parametrize(
    ("values", "message"), [({"device": "cpu", "precision": "bf16"}, "hardware.precision=bf16 needs a CUDA GPU; on cpu use precision=fp32")]
)
def test_device_and_precision_are_checked(values, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_device(hardware(**values))


def test_mps_preset_is_fp32_on_mps():
    result = run_cli("rlvr.run", "hardware=mps", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "device: mps\n  precision: fp32" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_is_one_line_set_before_torch_loads(tmp_path):
    """The run stops in one line before anything loads, and torch was imported with the fallback on."""
    code = f"""
import importlib.abc, os, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            seen.append(os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK"))
sys.meta_path.insert(0, Watch())
sys.argv = ["rlvr.run", "hardware=mps", "hydra.run.dir={tmp_path / "run"}"]
import rlvr.run
try:
    rlvr.run.main()
finally:
    print("torch imported with PYTORCH_ENABLE_MPS_FALLBACK =", seen[:1], file=sys.stderr)
"""
    env_without = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env_without)
    assert one_line_error(result).startswith(f"rlvr: error: {NO_MPS}")
    assert "torch imported with PYTORCH_ENABLE_MPS_FALLBACK = ['1']" in result.stderr
    assert not (tmp_path / "run" / "config_resolved.yaml").exists()  # refused before the run dir is written


@pytest.mark.parametrize("visible, expected", [(8, "cuda:3"), (1, "cuda:0"), (2, "cuda:1")])
def test_a_process_device_is_its_local_rank_among_the_gpus_it_sees(monkeypatch, visible, expected):
    """A submitit task sees only its own GPU (CUDA_VISIBLE_DEVICES=<local rank>): rank 3's cuda:3 was
    an invalid device ordinal; counted round, as accelerate counts."""
    import torch

    from rlvr.hardware.device import process_device, torch_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert process_device("cuda") == torch_device(hardware(device="cuda")) == expected
    assert process_device("cpu") == "cpu"


def test_a_cpu_process_imports_deepspeed_without_its_accelerator_warning():
    """DeepSpeed, which the trainers import, warned "Setting accelerator to CPU ... unable to detect it" on every CPU run."""
    code = "from omegaconf import OmegaConf; from rlvr.config import Config; from rlvr.run import set_up_process; "
    code += "set_up_process(OmegaConf.structured(Config)); import deepspeed; print(deepspeed.get_accelerator().device_name())"
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1:] == ["cpu"] and "Setting accelerator" not in result.stderr + result.stdout
