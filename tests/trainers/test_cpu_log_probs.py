"""TRL's fused log-prob head on CPU after rlvr's tuning: only labelled positions, cache-sized tiles,
the same log-probs and gradients as the full logits."""

import torch
import trl.trainer.utils as trl_utils
from omegaconf import OmegaConf
from trl.trainer.utils import add_fused_lm_head

from rlvr.config import TinyModelConfig
from rlvr._compat import CPU_VOCAB_TILE, score_labelled_positions_only_on_cpu
from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer


def test_only_labelled_positions_are_projected_and_the_result_is_unchanged(monkeypatch):
    # The change is process-wide: monkeypatch puts both globals back after the test.
    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)
    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    projected = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, weight, bias, targets, temperature, chunk_size, *rest):
        projected.append((hidden.shape[0], chunk_size))
        return apply(hidden, weight, bias, targets, temperature, chunk_size, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), build_tiny_tokenizer(), seed=0)
    ids = torch.randint(0, 256, (3, 9))
    labels = ids.clone()
    labels[:, :6] = -100  # a 6-token prompt, 3 completion tokens per row
    reference = torch.log_softmax(model(ids).logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    reference_grad = torch.autograd.grad(reference[:, 5:].sum(), model.model.embed_tokens.weight)[0]

    score_labelled_positions_only_on_cpu()
    score_labelled_positions_only_on_cpu()  # twice: still one wrapper (a second run in the same process)
    add_fused_lm_head(model)
    log_probs = model(ids, labels=labels, fused_lm_head=True).log_probs
    grad = torch.autograd.grad(log_probs.sum(), model.model.embed_tokens.weight)[0]

    assert projected == [(3 * 3, CPU_VOCAB_TILE)]  # TRL as shipped: all 3 x 8 positions, 32,768-column tiles
    torch.testing.assert_close(log_probs[:, 5:], reference[:, 5:])
    assert (log_probs[:, :5] == 0).all()
    torch.testing.assert_close(grad, reference_grad)
    assert trl_utils._use_triton(torch.device("cpu")) and trl_utils._use_triton.rlvr_wrapped.__name__ == "_use_triton"
