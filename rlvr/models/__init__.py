"""The `model` group: loading the policy (loading.py), the reasoning vocabulary (vocab.py), Qwen's
tokenizers offline (qwen_tokenizers.py), where a name points (hub.py), what is built once per machine
(machine_cache.py)."""
