"""rlvr's inverse-CDF sampler (rlvr/trainers/sampling.py): the distribution it draws from, and that GRPO
rollouts on CPU use it (never torch.multinomial) with the same settings as TRL's sampling."""

import math

import datasets
import pytest
import torch

from rlvr.errors import DivergedError
from rlvr.evaluation.engine import sample_seed
from rlvr.trainers.sampling import BLOCK, draw, global_stream_sampler, row_seeded_sampler

DRAWS = 4000
LOGITS = torch.tensor([[2.0, 1.0, 0.0, -1.0, -math.inf]])


def expected(temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    probs = torch.softmax(LOGITS[0].double() / temperature, dim=0)
    if top_k:
        probs[top_k:] = 0  # LOGITS is sorted
    if top_p < 1.0:  # the smallest head of the sorted distribution holding top_p
        probs[int((probs.cumsum(0) < top_p).sum()) + 1 :] = 0
    return probs / probs.sum()


@pytest.mark.parametrize("source", ["row_seeded", "global_stream"])
@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 1.0, 1.0), (0, 1.0, 2.0), (2, 1.0, 1.0), (0, 0.8, 1.0)])
def test_the_sampler_draws_from_the_filtered_distribution(source, top_k, top_p, temperature):
    """4,000 one-step draws: frequencies within 4 standard errors of the filtered softmax(logits / T);
    a masked (-inf) token is never drawn."""
    if source == "row_seeded":
        sampler = row_seeded_sampler([sample_seed(0, row, 0) for row in range(DRAWS)], 1, temperature, top_p, top_k, "cpu")
    else:
        torch.manual_seed(0)
        sampler = global_stream_sampler(temperature, top_p, top_k, None)
    scores = sampler(None, LOGITS.repeat(DRAWS, 1))
    assert torch.all(torch.isinf(scores).sum(dim=1) == LOGITS.shape[1] - 1)  # one token left per row
    frequencies = torch.bincount(scores.argmax(dim=1), minlength=5).double() / DRAWS
    want = expected(temperature, top_k, top_p)
    assert torch.all((frequencies - want).abs() <= 4 * (want * (1 - want) / DRAWS).sqrt() + 1e-12), (frequencies, want)
    assert frequencies[4] == 0


@pytest.mark.parametrize("width", [5, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, 151936])
def test_the_two_level_draw_is_the_whole_row_inverse_cdf(width):
    """`draw` picks the id a float64 cumsum over the whole row picks, for every point farther than 1e-6
    of the row's mass from a boundary (a block's float32 sum moves its edge by about 1e-7), and never an
    id of probability 0: rows filtered to their top sevenths, rows of one id, the uniforms 0, 1 - 2^-53 and 1."""
    generator = torch.Generator().manual_seed(width)
    logits = torch.randn(48, width, generator=generator) * 3
    top = logits[16:32].topk(max(1, width // 7), dim=-1).values[:, -1:]
    logits[16:32] = logits[16:32].masked_fill(logits[16:32] < top, -math.inf)
    logits[32:] = -math.inf
    logits[32:].scatter_(1, torch.randint(width, (16, 1), generator=generator), 0.0)
    probs = torch.softmax(logits, dim=-1)
    uniforms = torch.rand(48, dtype=torch.float64, generator=generator)
    uniforms[[0, 16, 32]], uniforms[[1, 17, 33]], uniforms[[2, 18, 34]] = 0.0, 1 - 2**-53, 1.0  # 1: what rounding can make of 1 - 2^-53
    drawn = draw(probs, uniforms)
    assert torch.all(probs.gather(1, drawn.unsqueeze(1)) > 0)
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)
    point = (uniforms * cdf[:, -1]).unsqueeze(1)
    whole_row = torch.searchsorted(cdf, point, right=True).clamp(max=width - 1).squeeze(1)
    clear = ((cdf - point).abs() > 1e-6 * cdf[:, -1:]).all(dim=1)
    assert clear.sum() >= 30
    assert torch.equal(drawn[clear], whole_row[clear])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_drawn_as_their_float32_values_are(dtype):
    """The block sums were summed in the weights' own dtype: a bf16 row's last id of a block was drawn
    about 1e5 times as often as its share."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(2, 151936, generator=generator) * 3, dim=-1).to(dtype)
    uniforms = torch.linspace(0, 1 - 2**-53, 256, dtype=torch.float64)
    for row in weights:
        rows = row.expand(len(uniforms), -1)
        assert torch.equal(draw(rows, uniforms), draw(rows.float(), uniforms))


@pytest.mark.parametrize("width", [5, 3 * BLOCK + 17])
@pytest.mark.parametrize("poison", ["nan", "inf", "all -inf"])
def test_scores_of_nan_or_infinity_are_one_line_saying_training_diverged(width, poison):
    """It was an IndexError from scatter_ ("index 1024 is out of bounds"), naming nothing."""
    scores = torch.randn(3, width)
    scores[1] = -math.inf if poison == "all -inf" else scores[1]
    scores[1, 2] = {"nan": math.nan, "inf": math.inf, "all -inf": -math.inf}[poison]
    expected = (
        r"^the model's next-token scores hold NaN or infinity \(1 of 3 sequences\): the weights loaded are broken, or training diverged"
    )
    with pytest.raises(DivergedError, match=expected):
        global_stream_sampler(1.0, 1.0, 0, None)(torch.zeros(3, 1, dtype=torch.long), scores)


def grpo_trainer(tmp_path, temperature: float = 1.0):
    from omegaconf import OmegaConf
    from trl import GRPOConfig

    from rlvr.config import TinyModelConfig
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
    from rlvr.rewards.base import WeightedReward
    from rlvr.rewards.numeric import LastNumberReward
    from rlvr.trainers.grpo import RolloutLoggingGRPOTrainer

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0)
    prompts = datasets.Dataset.from_list([{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(4) for b in range(4)])
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        beta=0.0,
        temperature=temperature,
    )
    return RolloutLoggingGRPOTrainer(
        model=model, args=args, train_dataset=prompts, processing_class=tokenizer, rewards=[WeightedReward("acc", LastNumberReward(), 1.0)]
    )


def test_cpu_rollouts_draw_by_inverse_cdf_never_by_multinomial(tmp_path, monkeypatch):
    """A GRPO run on CPU generates without torch.multinomial (transformers' sampler), and leaves TRL's
    sampling generation config as it found it."""
    trainer = grpo_trainer(tmp_path)
    config = trainer.generation_config.to_dict()

    def refuse(*args, **kwargs):
        raise AssertionError("torch.multinomial drew a rollout token")

    monkeypatch.setattr(torch, "multinomial", refuse)
    trainer.train()
    assert trainer.state.global_step == 2 and trainer.generation_config.to_dict() == config
    assert trainer.generation_config.do_sample


def test_cpu_rollouts_are_sampled_with_the_trainers_temperature(tmp_path):
    """The first rollout token's frequencies over 1,600 draws match softmax(logits / T) of the model
    at T = 3 (a T the sampler ignored, or applied twice, is far outside 4 standard errors)."""
    trainer = grpo_trainer(tmp_path, temperature=3.0)
    with torch.no_grad():  # logits spread wide enough that T = 1, 3 and 9 differ clearly
        trainer.model.model.norm.weight.mul_(10)
    prompt = trainer.processing_class("1+2=", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    completions, _ = trainer._generate_single_turn([prompt] * 1600, None, {}, 1)
    with torch.no_grad():
        logits = trainer.model(torch.tensor([prompt])).logits[0, -1].double()
    want = torch.softmax(logits / 3.0, dim=0)
    frequencies = torch.bincount(torch.tensor([c[0] for c in completions]), minlength=want.numel()).double() / 1600
    assert torch.all((frequencies - want).abs() <= 4 * (want * (1 - want) / 1600).sqrt() + 2e-3)
