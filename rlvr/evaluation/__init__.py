"""The `eval` group: the eval engine (engine.py), its metrics (metrics.py), its vLLM completer
(vllm_engine.py). The command line is rlvr/eval.py."""
