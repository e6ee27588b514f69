"""TRL's fused log-prob head on CPU: only the labelled positions, in cache-sized vocabulary tiles.

TRL 1.16 computes every training log-prob (GRPOTrainer, SFTTrainer) with `add_fused_lm_head`: the LM
head runs in [tokens, 32,768-column] tiles and the [tokens, V] logits never exist. Where Triton runs
(CUDA, XPU) it projects only the positions whose label is not -100 (the completion). Elsewhere it
projects EVERY position, prompt included (fixed tile shapes spare compilers such as Neuron's a
recompile per batch), and each 32,768-column tile of torch temporaries is hundreds of MB. On CPU
neither choice pays: nothing compiles the tiles, and a tile that fits the cache is faster. At the
real Qwen vocabulary (151,936 rows, hidden 64) one forward + backward of 64 chat prompts with
4-token completions took 17.5 s as TRL does it and 0.8 s with both changes (2 shared cores).

Both knobs are private module globals of `trl.trainer.utils` (pinned: trl 1.16.x); TRL has no
option for them. The result is the same per-token log-probs and gradients: only where and in what
tile sizes the head is computed changes.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
CPU_VOCAB_TILE = 2048  # columns per tile: 320 tokens x 2048 fp32 stays in L2; measured fastest of 1k-32k


def score_labelled_positions_only_on_cpu() -> None:
    """Make TRL's fused head on CPU tensors project only labelled positions, in `CPU_VOCAB_TILE` columns.

    Process-wide; changes nothing for CUDA tensors except the tile width, so call it for CPU runs only.
    """
    import trl.trainer.utils as trl_utils

    if not hasattr(trl_utils, "_use_triton") or not hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        log.warning("this TRL version has no _use_triton / _CHUNKED_LOGPROB_CHUNK_SIZE: its fused log-prob head "
                    "runs as TRL ships it (slower on CPU at large vocabularies)")
        return
    with_triton = getattr(trl_utils._use_triton, "rlvr_wrapped", trl_utils._use_triton)

    def compact(device) -> bool:  # TRL asks this only to choose between the compact and all-positions paths
        return device.type == "cpu" or with_triton(device)

    compact.rlvr_wrapped = with_triton
    trl_utils._use_triton = compact
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_VOCAB_TILE
