"""A reasoning-vocabulary policy is trained on the distribution it samples from: TRL's fused log-prob
head restricted per position to the ids the think-segment processor allowed, checked against the
masked log-softmax written out; and the sampling log-probs rlvr records agree with the training ones."""

import pytest
import torch
from omegaconf import OmegaConf

from rlvr.config import TinyModelConfig
from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
from rlvr.trainers.vocab_log_probs import restricted_vocabulary, shifted_labels
from rlvr.models.vocab import expand_vocabulary


def expanded(only_in_think: bool):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0)
    vocab = expand_vocabulary(model, tokenizer, 40, only_in_think=only_in_think)
    with torch.no_grad():  # copies that differ from their sources, as after some training
        model.get_input_embeddings().weight[vocab.standard_size :] += 0.3 * torch.randn(40, model.config.hidden_size)
    return model, tokenizer, vocab


def reference_log_probs(logits, ids, prompt_length, vocab, temperature):
    """The processor's distribution written out: outside think the reasoning ids are -inf; inside, with
    only_in_think, every standard id but the closing tag is -inf. Then log-softmax(logits / T)."""
    out = torch.zeros(ids.shape[0], ids.shape[1] - prompt_length)
    for b in range(ids.shape[0]):
        open_ = False
        for t in range(ids.shape[1]):
            if t >= prompt_length:
                scores = logits[b, t - 1].clone()
                if not open_:
                    scores[vocab.standard_size :] = float("-inf")
                elif vocab.only_in_think:
                    keep = scores[vocab.think_close_id].clone()
                    scores[: vocab.standard_size] = float("-inf")
                    scores[vocab.think_close_id] = keep
                out[b, t - prompt_length] = torch.log_softmax(scores / temperature, dim=-1)[ids[b, t]]
            token = int(ids[b, t])
            open_ = True if token == vocab.think_open_id else False if token == vocab.think_close_id else open_
    return out


@pytest.mark.parametrize("labelled_only", [False, True], ids=["all-positions", "labelled-positions"])
@pytest.mark.parametrize("only_in_think", [False, True])
def test_fused_head_scores_each_token_against_its_allowed_ids(only_in_think, labelled_only, monkeypatch):
    """Both of TRL's layouts: every position (TRL on CPU) and only the labelled ones (CUDA, and rlvr on CPU)."""
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: labelled_only)

    model, tokenizer, vocab = expanded(only_in_think)
    r0, r1 = vocab.standard_size, vocab.standard_size + 1
    digit = tokenizer("7", add_special_tokens=False)["input_ids"][0]
    o, c = vocab.think_open_id, vocab.think_close_id
    prompt = torch.tensor([[digit, digit, o], [digit, o, c], [digit, digit, digit]])  # in, out, out
    completion = torch.tensor([[r0, r1, c, digit], [digit, o, r0, c], [o, r1, r0, c]])
    if not only_in_think:
        completion[0, 0] = digit  # inside think a standard id is allowed too
    ids = torch.cat([prompt, completion], dim=1)
    temperature = 0.7
    with torch.no_grad():
        logits = model(ids).logits
    expected = reference_log_probs(logits, ids, prompt.shape[1], vocab, temperature)

    add_fused_lm_head(model, temperature=temperature)
    mask = torch.ones_like(ids)
    labels = shifted_labels(ids, mask, completion.shape[1])
    allowed = torch.full_like(labels, 0)
    allowed[:, -completion.shape[1] :] = vocab.allowed_sets(prompt, completion)
    completion_labels = ids.masked_fill(torch.arange(ids.shape[1]) < prompt.shape[1], -100)
    full = model(ids, attention_mask=mask, labels=completion_labels, fused_lm_head=True)
    with restricted_vocabulary(vocab, labels, allowed):
        restricted = model(ids, attention_mask=mask, labels=completion_labels, fused_lm_head=True)
    got = restricted.log_probs[:, -completion.shape[1] :]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    outside = allowed[:, -completion.shape[1] :] == 0
    gap = (full.log_probs[:, -completion.shape[1] :] - got).detach()
    assert (gap[outside] < -1e-3).all()  # the full vocabulary puts mass where nothing could be drawn
    got.sum().backward()  # the gradient reaches the head's rows through the restricted sets
    assert model.get_input_embeddings().weight.grad[vocab.standard_size :].abs().sum() > 0


def train_with_vocabulary(tmp_path, restricted: bool, monkeypatch) -> dict:
    """Two GRPO steps of the tiny model with a reasoning vocabulary (half the prompts open a think
    segment); `restricted=False` scores with the full vocabulary, as rlvr did before."""
    import contextlib

    import datasets
    from trl import GRPOConfig

    import rlvr.trainers.vocab as vocab_trainer
    from rlvr.rewards.base import WeightedReward
    from rlvr.rewards.numeric import LastNumberReward
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    if not restricted:
        monkeypatch.setattr(vocab_trainer, "restricted_vocabulary", lambda *a: contextlib.nullcontext())
    torch.manual_seed(0)
    model, tokenizer, _ = expanded(only_in_think=False)
    rows = [{"prompt": f"{a}+{b}=" + ("<think>" if a % 2 else ""), "answer": str(a + b)} for a in range(4) for b in range(4)]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        temperature=0.8,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
    )
    trainer = RolloutLoggingGRPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        rewards=[WeightedReward("acc", LastNumberReward(), 1.0)],
    )
    trainer.train()
    return {k: v for row in trainer.state.log_history for k, v in row.items() if k.startswith("vocab/")} | {
        "steps": [row for row in trainer.state.log_history if "vocab/logprob_gap" in row]
    }


def test_training_log_probs_are_the_sampling_log_probs(tmp_path, monkeypatch):
    """`vocab/logprob_gap` (mean |sampling - training| log-prob of the sampled tokens) is ~0 with the
    restriction and not without it: the recorded sampling log-probs are what the processor drew from."""
    restricted = train_with_vocabulary(tmp_path / "restricted", True, monkeypatch)
    assert len(restricted["steps"]) == 2 and restricted["vocab/reasoning_share_in_think"] > 0
    assert all(row["vocab/logprob_gap"] < 1e-3 for row in restricted["steps"]), restricted["steps"]
    full = train_with_vocabulary(tmp_path / "full", False, monkeypatch)
    assert all(row["vocab/logprob_gap"] > 1e-2 for row in full["steps"]), full["steps"]
