"""The reasoning vocabulary: surgery, the think-segment processor, decoding, saving, LoRA, and that
size 0 leaves GRPO exactly as TRL has it."""

import random

import pytest
import torch
from omegaconf import OmegaConf

from rlvr.config import TinyModelConfig
from rlvr.errors import ConfigError
from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
from rlvr.models.vocab import ReasoningVocab, expand_vocabulary


def tiny(tied: bool = True, seed: int = 0):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=seed)
    if not tied:  # an untied head with its own (different) weights
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    return model, tokenizer


def reference_violations(vocab: ReasoningVocab, prompt: list[int], completion: list[int]) -> int:
    """Reasoning ids generated while no think segment was open, by a plain state machine."""
    open_ = False
    for token in prompt:
        open_ = True if token == vocab.think_open_id else False if token == vocab.think_close_id else open_
    violations = 0
    for token in completion:
        violations += token >= vocab.standard_size and not open_
        open_ = True if token == vocab.think_open_id else False if token == vocab.think_close_id else open_
    return violations


@pytest.mark.parametrize("tied", [True, False])
def test_reasoning_copies_have_their_originals_logits(tied):
    model, tokenizer = tiny(tied)
    ids = tokenizer(["<think>3+4=7</think>7", "12+9=<think>21"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(ids).logits
    vocab = expand_vocabulary(model, tokenizer, 40)
    assert model.get_input_embeddings().num_embeddings == vocab.standard_size + 40 == model.config.vocab_size
    with torch.no_grad():
        after = model(ids).logits
        copied = ids.clone()  # the same text, written with reasoning ids wherever a copy exists
        for i, source in enumerate(vocab.source_ids):
            copied[ids == source] = vocab.standard_size + i
        assert (copied != ids).any()
        after_copied_input = model(copied).logits
    standard = slice(0, vocab.standard_size)
    torch.testing.assert_close(after[..., standard], before, rtol=0, atol=0)
    torch.testing.assert_close(after[..., vocab.standard_size :], before[..., list(vocab.source_ids)], rtol=0, atol=0)
    torch.testing.assert_close(after_copied_input, after, rtol=0, atol=1e-6)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied


def test_source_id_choices_and_their_errors():
    _, tokenizer = tiny()
    specials = set(tokenizer.all_special_ids) | set(tokenizer.convert_tokens_to_ids(["<think>", "</think>"]))
    model, _ = tiny()
    corpus = ["1+1=2", "11+1=12", "9+9=18"]
    vocab = expand_vocabulary(model, tokenizer, 4, "frequent", corpus=corpus)
    assert [tokenizer.convert_ids_to_tokens(i) for i in vocab.source_ids] == ["1", "+", "=", "2"]  # ties: lower id first
    model, _ = tiny()
    chat = [[{"role": "user", "content": text}] for text in corpus]
    in_chat = expand_vocabulary(model, tokenizer, 4, "frequent", corpus=chat)  # the messages' words, not the template's
    assert [tokenizer.convert_ids_to_tokens(i) for i in in_chat.source_ids] == ["1", "+", "=", "2"]
    model, _ = tiny()
    assert expand_vocabulary(model, tokenizer, 3, [65, 66, 67]).source_ids == (65, 66, 67)
    model, _ = tiny()
    assert not specials & set(expand_vocabulary(model, tokenizer, 256).source_ids)  # every byte
    for bad, message in [([65, 65, 66], r"distinct .*, repeated: \[65\]"), ([65, 66, tokenizer.eos_token_id], "invalid"), ([1], "need 3")]:
        with pytest.raises(ConfigError, match=message):
            expand_vocabulary(tiny()[0], tokenizer, 3, bad)
    with pytest.raises(ConfigError, match="more than"):
        expand_vocabulary(tiny()[0], tokenizer, 10_000)
    with pytest.raises(ConfigError, match="already has"):
        expand_vocabulary(model, tokenizer, 3)


def states_batch(vocab, tokenizer):
    """Prompts leaving sequences in different states: no think, open, closed, re-opened."""
    texts = ["3+4=", "3+4=<think>", "<think>3+4</think>", "<think>1</think><think>2"]
    return [tokenizer(t)["input_ids"] for t in texts]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.reasoning_vocab_size=300", "model.reasoning_vocab_size=300 is more than the "),
        ("model.reasoning_vocab_ids=[1,2,400]", "model.reasoning_vocab_ids: need 64 distinct ids of ordinary tokens"),
    ],
)
def test_a_vocabulary_the_tokenizer_cannot_give_is_refused_before_the_sft_warm_up(tmp_path, monkeypatch, setting, message):
    """It was refused after the warm-up (38 s of 60 steps; the preset's own is 300 steps)."""
    from rlvr.eval import compose
    from rlvr.recipes import common

    def warm_up(*args, **kwargs):
        raise AssertionError("the SFT warm-up ran")

    monkeypatch.setattr("rlvr.recipes.warmup.sft_warmup", warm_up)
    with pytest.raises(ConfigError, match=message):
        common.setup_policy(compose(["experiment=vocab_reasoning", setting], None), tmp_path)


@pytest.mark.parametrize("only_in_think", [False, True])
def test_processor_keeps_reasoning_ids_inside_think(only_in_think):
    model, tokenizer = tiny()
    vocab = expand_vocabulary(model, tokenizer, 64, only_in_think=only_in_think)
    rng = torch.Generator().manual_seed(0)
    prompts = states_batch(vocab, tokenizer) * 4
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    processor = vocab.processor()
    tags = torch.tensor([vocab.think_open_id, vocab.think_close_id])
    for _ in range(60):  # random logits that favour the tags, so states keep changing
        scores = torch.randn(len(prompts), vocab.standard_size + vocab.size, generator=rng)
        scores[:, tags] += 3.0
        scores = processor(ids, scores)
        ids = torch.cat([ids, torch.multinomial(scores.softmax(-1), 1, generator=rng)], dim=1)
    completions = ids[:, width:].tolist()
    assert sum(reference_violations(vocab, p, c) for p, c in zip(prompts, completions)) == 0
    usage = vocab.usage(prompts, completions)
    assert usage["reasoning_outside_think"] == 0 and usage["reasoning_in_think"] > 0
    if only_in_think:  # inside think: nothing but reasoning ids and the closing tag
        assert usage["reasoning_in_think"] == usage["think_tokens"]
    else:  # copies start equal, so about half the think tokens that have a copy use it
        assert 0.1 < usage["reasoning_share_in_think"] < 0.9


def test_processor_in_hf_generate_and_think_mask_agree_with_a_state_machine():
    from transformers import LogitsProcessorList

    model, tokenizer = tiny()
    vocab = expand_vocabulary(model, tokenizer, 64)
    with torch.no_grad():  # make the tags likely, so that segments open and close
        model.lm_head.weight[[vocab.think_open_id, vocab.think_close_id]] *= 0
        model.lm_head.weight[[vocab.think_open_id, vocab.think_close_id]] += model.lm_head.weight.mean(0)
    prompts = states_batch(vocab, tokenizer)
    tokenizer.padding_side = "left"
    encoded = tokenizer(["3+4=", "3+4=<think>", "<think>3+4</think>", "<think>1</think><think>2"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(
        **encoded,
        do_sample=True,
        max_new_tokens=40,
        num_return_sequences=8,
        top_k=0,
        logits_processor=LogitsProcessorList([vocab.processor()]),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
    )
    completions = out[:, encoded["input_ids"].shape[1] :].tolist()
    repeated = [p for p in prompts for _ in range(8)]
    assert sum(reference_violations(vocab, p, c) for p, c in zip(repeated, completions)) == 0
    assert any(i >= vocab.standard_size for c in completions for i in c)
    for p, c in zip(repeated, completions):  # the vectorised mask equals the state machine's
        open_ = vocab.open_at_end(torch.tensor([p]))
        mask = vocab.think_mask(torch.tensor([c]), open_)[0].tolist()
        state, expected = bool(open_), []
        for token in c:
            expected.append(state and token not in (vocab.think_open_id, vocab.think_close_id))
            state = True if token == vocab.think_open_id else False if token == vocab.think_close_id else state
        assert mask == expected


def test_decoding_maps_reasoning_ids_back_to_the_same_text():
    model, tokenizer = tiny()
    vocab = expand_vocabulary(model, tokenizer, 200)
    random.seed(0)
    copies = {s: vocab.standard_size + i for i, s in enumerate(vocab.source_ids)}
    for text in ["<think>3+4=7, so</think>7", "<think>Ünïcode ∑ 🙂 12*3</think>36", "plain 5"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        mixed = [copies[i] if i in copies and random.random() < 0.5 else i for i in ids]
        assert mixed != ids
        assert vocab.to_standard(mixed) == ids
        assert vocab.decode(tokenizer, [mixed]) == [text]


def test_saved_model_reloads_with_its_vocabulary_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.evaluation.engine import generate_batch

    model, tokenizer = tiny()
    vocab = expand_vocabulary(model, tokenizer, 32, only_in_think=True)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert ReasoningVocab.of(loaded) == vocab
    torch.testing.assert_close(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    texts, lengths, _ = generate_batch(loaded, loaded_tokenizer, ["1+2=<think>", "3+4="], max_new_tokens=8)
    assert len(texts) == 2 and all(n > 0 for n in lengths)


def test_lora_trains_the_reasoning_rows_and_keeps_embeddings_tied():
    from peft import get_peft_model

    from rlvr.config import ModelConfig
    from rlvr.models.loading import lora_config

    model, tokenizer = tiny()
    vocab = expand_vocabulary(model, tokenizer, 16)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"lora": {"enabled": True}})
    peft_model = get_peft_model(model, lora_config(cfg, vocab))
    ids = tokenizer(["<think>" + '!"#$%&' * 3], return_tensors="pt")["input_ids"]
    ids[0, 1:] = torch.arange(vocab.standard_size, vocab.standard_size + ids.shape[1] - 1) % model.config.vocab_size
    embed, head = peft_model.get_input_embeddings(), peft_model.get_output_embeddings()
    assert embed.weight is head.weight and embed.weight.requires_grad  # trainable, and still tied
    reasoning = torch.arange(vocab.standard_size, vocab.standard_size + 16)
    before = embed(reasoning).detach()
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    peft_model(ids, labels=ids).loss.backward()
    optimizer.step()
    assert not torch.equal(before, embed(reasoning).detach())  # the reasoning rows learn


def test_merged_lora_model_with_a_reasoning_vocabulary_saves_and_reloads_unchanged(tmp_path):
    """What a LoRA run writes to final_model/ (rlvr.recipes.common.save_final_model): the adapters
    and the trained, tied embedding rows folded in, loadable with transformers alone."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from rlvr.config import ModelConfig
    from rlvr.models.loading import lora_config

    model, tokenizer = tiny()
    vocab = expand_vocabulary(model, tokenizer, 16)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"lora": {"enabled": True, "r": 4}})
    peft_model = get_peft_model(model, lora_config(cfg, vocab)).eval()  # eval: no LoRA dropout
    with torch.no_grad():  # as if trained: every trainable tensor moved
        for param in peft_model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    ids = torch.tensor([[5, 6, vocab.think_open_id, vocab.standard_size + 3, vocab.standard_size + 9, 7]])
    expected = peft_model(ids).logits
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert ReasoningVocab.of(loaded) == vocab
    assert loaded.get_input_embeddings().weight is loaded.get_output_embeddings().weight
    torch.testing.assert_close(loaded(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_size_zero_is_trl_grpo_exactly(tmp_path):
    """reasoning_vocab_size=0: rlvr's trainer gives TRL's losses, step for step, on the same seed."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.rewards.base import WeightedReward
    from rlvr.rewards.numeric import LastNumberReward
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    prompts = datasets.Dataset.from_list([{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(4) for b in range(4)])
    reward = LastNumberReward()
    losses = {}
    for kind in ("trl", "rlvr"):
        model, tokenizer = tiny()
        args = GRPOConfig(
            output_dir=str(tmp_path / kind),
            use_cpu=True,
            per_device_train_batch_size=16,
            num_generations=4,
            max_completion_length=6,
            max_steps=3,
            learning_rate=1e-2,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=0,
            beta=0.0,
        )
        common = dict(model=model, args=args, train_dataset=prompts, processing_class=tokenizer)
        if kind == "trl":
            trainer = GRPOTrainer(reward_funcs=[reward], **common)
        else:
            trainer = RolloutLoggingGRPOTrainer(
                rewards=[WeightedReward("acc", reward, 1.0)], inverse_cdf_on_cpu=False, **common
            )  # transformers' own draws, as TRL's (tests/trainers/test_sampling.py: rlvr's)
            assert trainer.reasoning_vocab is None
        trainer.train()
        losses[kind] = [(row["loss"], row["reward"]) for row in trainer.state.log_history if "loss" in row]
    assert len(losses["trl"]) == 3 and losses["rlvr"] == losses["trl"]


def python_lines_per_token(standard: int, size: int, steps: int = 6) -> list[int]:
    """Python lines executed by each call of the processor while a batch generates `steps` tokens."""
    import sys

    vocab = ReasoningVocab(standard, tuple(range(size)), think_open_id=1, think_close_id=2)
    processor = vocab.processor()
    ids = torch.tensor([[5, 1], [5, 2]])  # row 0 inside think, row 1 outside
    counts = []
    for _ in range(steps):
        lines = 0

        def tracer(frame, event, arg):
            nonlocal lines
            lines += event == "line"
            return tracer

        scores = torch.zeros(2, standard + size)
        sys.settrace(tracer)
        try:
            scores = processor(ids, scores)
        finally:
            sys.settrace(None)
        counts.append(lines)
        assert torch.isinf(scores[1, standard:]).all() and not torch.isinf(scores[0]).any()
        ids = torch.cat([ids, torch.tensor([[7], [7]])], dim=1)
    return counts


def test_processor_python_work_per_token_does_not_grow_with_the_vocabulary():
    """At the real vocabulary (151,936 + 151,646 copies) each generated token costs the processor the
    same Python work as at 1,000 + 64: only tensor operations scale with V."""
    small, full = python_lines_per_token(1000, 64), python_lines_per_token(151936, 151646)
    assert small == full
    assert max(full[1:]) < 50  # the per-token update, after the prompt scan of the first call
