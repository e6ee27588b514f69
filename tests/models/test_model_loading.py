"""The built-in tiny model and tokenizer, and loading a policy from a local directory."""

import pytest
import torch
from omegaconf import OmegaConf

from rlvr.config import ModelConfig
from rlvr.errors import ModelLoadError
from rlvr.models.loading import build_tiny_tokenizer, load_policy


def test_tiny_tokenizer_round_trips_any_text():
    tokenizer = build_tiny_tokenizer()
    for text in ["3+5=8", "héllo wörld ∑ 🙂", "Final: 42\n"]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tiny_model_is_deterministic_per_seed():
    cfg = OmegaConf.structured(ModelConfig)
    first, _ = load_policy(cfg, seed=1)
    second, _ = load_policy(cfg, seed=1)
    third, _ = load_policy(cfg, seed=2)

    def w(m):
        return m.model.embed_tokens.weight

    assert torch.equal(w(first), w(second)) and not torch.equal(w(first), w(third))


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_model_ties_its_embeddings_as_asked_and_reloads_so(tmp_path, tied):
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"tiny": {"tie_word_embeddings": tied}})
    model, tokenizer = load_policy(cfg, seed=0)
    same = lambda m: m.get_input_embeddings().weight.data_ptr() == m.get_output_embeddings().weight.data_ptr()  # noqa: E731
    assert same(model) == tied
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_policy(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": str(tmp_path)}), seed=0)
    assert same(loaded) == tied and torch.equal(loaded.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize(("dtype", "expected"), [("bfloat16", torch.bfloat16), ("fp16", torch.float16), ("auto", torch.float32)])
def test_the_tiny_policy_and_reward_model_are_built_in_model_dtype(dtype, expected):
    """model.dtype was read for saved and Hub models only: the built-in one stayed float32 without a word."""
    from rlvr.models.loading import load_reward_model

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"dtype": dtype})
    for model, _ in (load_policy(cfg, seed=0), load_reward_model(cfg, seed=0)):
        assert {p.dtype for p in model.parameters()} == {expected}


def test_policy_loads_from_a_local_directory(tmp_path):
    model, tokenizer = load_policy(OmegaConf.structured(ModelConfig), seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": str(tmp_path)})
    loaded, loaded_tokenizer = load_policy(cfg, seed=0)
    ids = tokenizer("1+2=", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id


def test_missing_local_directory_is_named():
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": "/no/such/model"})
    with pytest.raises(ModelLoadError, match="model directory not found: /no/such/model"):
        load_policy(cfg, seed=0)


def test_a_file_named_as_the_model_is_told_apart_from_a_missing_directory(tmp_path):
    """A reward model's model.safetensors named as the model: it said "model directory not found"."""
    from rlvr.models.loading import check_reachable

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=f"^{weights} is a file, not a model directory \\(key\\): name the directory that holds it$"):
        check_reachable(str(weights), "key")


def test_a_missing_relative_path_that_is_no_hub_name_is_named_as_a_directory():
    """'runs/x/final_model' cannot be a Hub name: it was huggingface_hub's "Repo id must be in the form ..."."""
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": "runs/no_such_run/final_model"})
    with pytest.raises(ModelLoadError, match=r"^model directory not found: runs/no_such_run/final_model \(model.name_or_path\)$"):
        load_policy(cfg, seed=0)


def test_a_saved_reward_model_is_refused_as_a_policy_and_loads_as_a_reward_model(tmp_path):
    """transformers loaded it as a causal LM with a new, random LM head (`score.weight | UNEXPECTED`):
    rlvr.run trained that, rlvr.eval scored it 0. Training a reward model on from it still loads."""
    from rlvr.models.loading import load_reward_model

    model, tokenizer = load_reward_model(OmegaConf.structured(ModelConfig), seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": str(tmp_path)})
    with pytest.raises(ModelLoadError) as refused:
        load_policy(cfg, seed=0)
    assert str(refused.value).startswith(
        f"model {tmp_path} is a Qwen2ForSequenceClassification (a reward model: a score head, no language-model head), "
        "not a causal-LM policy"
    )
    assert type(load_reward_model(cfg, seed=0)[0]).__name__ == "Qwen2ForSequenceClassification"


def test_hub_name_offline_says_to_pass_a_local_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"})
    with pytest.raises(ModelLoadError, match="pass a local path .* or go online"):
        load_policy(cfg, seed=0)


def test_a_large_policy_is_built_once_per_machine_with_the_same_weights(tmp_path, monkeypatch):
    from rlvr.models import loading as models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shape, tokenizer = OmegaConf.structured(ModelConfig).tiny, build_tiny_tokenizer()
    built_here = models.build_tiny_model(shape, tokenizer, seed=3)  # under the threshold: built, not cached
    assert not (tmp_path / "rlvr" / "models").exists()
    monkeypatch.setattr(models, "CACHED_FROM_PARAMETERS", 0)  # every policy counts as large
    first = models.build_tiny_model(shape, tokenizer, seed=3)
    assert len(list((tmp_path / "rlvr" / "models").iterdir())) == 1
    monkeypatch.setattr(models, "random_init", lambda *a: pytest.fail("rebuilt although cached"))
    again = models.build_tiny_model(shape, tokenizer, seed=3)
    for model in (first, again):
        assert model.state_dict().keys() == built_here.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), built_here.state_dict().values()))
        assert model.generation_config.eos_token_id == built_here.generation_config.eos_token_id


@pytest.mark.parametrize(
    ("shape", "refusal"),
    [
        ({"num_attention_heads": 2}, None),
        ({"num_attention_heads": 1}, "model.tiny.num_key_value_heads=2 must divide model.tiny.num_attention_heads=1"),
        ({"hidden_size": 96, "num_attention_heads": 3, "num_key_value_heads": 1}, None),
        ({"num_attention_heads": 5}, "model.tiny.num_attention_heads=5 must divide model.tiny.hidden_size=64"),
        (
            {"num_attention_heads": 4, "num_key_value_heads": 3},
            "model.tiny.num_key_value_heads=3 must divide model.tiny.num_attention_heads=4",
        ),
    ],
)
def test_the_tiny_models_head_counts_are_checked_before_it_is_built(shape, refusal):
    """A shape that does not divide failed mid-forward (a shape mismatch traceback), after the warm-up."""
    from rlvr.errors import ConfigError
    from rlvr.models.loading import check_tiny_shape

    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"tiny": shape})
    if refusal is None:
        check_tiny_shape(model)
    else:
        with pytest.raises(ConfigError, match=refusal):
            check_tiny_shape(model)


def test_a_models_own_generation_settings_are_left_out_and_named(tmp_path, caplog):
    """Qwen2.5-Instruct's generation_config.json has repetition_penalty 1.1: transformers applied it in
    rlvr's greedy evals (a probe's `8+0=` answered 12, not 8) though training (TRL) never did."""
    from rlvr.evaluation.engine import generate_batch

    model, tokenizer = load_policy(OmegaConf.structured(ModelConfig), seed=0)
    eos = model.generation_config.eos_token_id
    model.generation_config.update(do_sample=True, temperature=7.0, top_k=3, repetition_penalty=3.0, no_repeat_ngram_size=1, max_length=12)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_policy(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": str(tmp_path)}), seed=0)
    assert loaded.generation_config.to_diff_dict() | {"transformers_version": None} == {
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_token_id,
        "transformers_version": None,
    }
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "do_sample=True, temperature=7.0, top_k=3, repetition_penalty=3.0, no_repeat_ngram_size=1" in warning
    model.generation_config.update(do_sample=False, temperature=None, top_k=None, repetition_penalty=None, no_repeat_ngram_size=None)
    plain = generate_batch(model, tokenizer, ["3+3=", "1+2+3+4="], max_new_tokens=8)  # greedy, nothing else
    assert generate_batch(loaded, tokenizer, ["3+3=", "1+2+3+4="], max_new_tokens=8) == plain


def test_a_lora_target_the_model_lacks_names_gpt2s_projections_too():
    """GPT-2's projections are transformers' Conv1D, which LoRA adapts: the line named lm_head alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlvr.errors import ConfigError
    from rlvr.models.loading import check_lora_targets

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=24, bos_token_id=0, eos_token_id=0))
    lora = OmegaConf.merge(OmegaConf.structured(ModelConfig).lora, {"enabled": True, "target_modules": ["q_proj"]})
    with pytest.raises(ConfigError, match="q_proj not in GPT2LMHeadModel; its linear layers are c_attn, c_fc, c_proj, lm_head$"):
        check_lora_targets(model, lora)
