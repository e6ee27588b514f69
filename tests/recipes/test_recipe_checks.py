"""Each recipe's `check(cfg, processes)`: the settings it refuses at start-up, before anything loads."""

import itertools

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from trl import GRPOConfig

from rlvr.config import Config, TinyModelConfig, conf_dir
from rlvr.errors import ConfigError
from rlvr.recipes import fgrpo, grpo, grpo_family, reward_model
import rlvr.run  # noqa: F401  registers the schema the presets compose with


SPANS = {"answer_spans": {"_target_": "rlvr.rewards.spans.answer_spans", "weight": 1.0}}


def config(**algorithm):
    cfg = OmegaConf.structured(Config)
    cfg.reward.functions = SPANS  # a reward every GRPO-family recipe trains with
    for key, value in algorithm.items():
        cfg.algorithm[key] = value
    return cfg


def refusal(check, cfg, processes=1) -> str | None:
    try:
        check(cfg, processes)
    except ConfigError as exc:
        return str(exc)
    return None


KEYS = ("per_device_train_batch_size", "num_generations", "gradient_accumulation_steps", "generation_batch_size", "steps_per_generation")
SHAPES = [dict(zip(KEYS, v)) for v in itertools.product((6, 8), (4, 8), (1, 2), (None, 24, 32), (None, 3))]


@pytest.mark.parametrize("processes", [1, 3])
def test_the_grpo_check_refuses_exactly_what_trls_grpoconfig_refuses(processes, tmp_path, monkeypatch):
    """The same verdict as GRPOConfig's own batch checks, for every shape here, with 1 and 3 processes,
    and where both accept, the same number of completions a generation (what the prompt count check uses)."""
    monkeypatch.setattr(GRPOConfig, "world_size", property(lambda self: processes))
    refused_by_both = 0
    for shape in SHAPES:
        try:
            trl_generates = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **shape).generation_batch_size
            trl_refuses = False
        except ValueError:
            trl_refuses = True
        ours = refusal(grpo_family.check, config(**shape), processes)
        assert (ours is not None) == trl_refuses, (shape, ours)
        if not trl_refuses:
            assert grpo_family.completions_per_generation(config(**shape).algorithm, processes)[0] == trl_generates, shape
        refused_by_both += trl_refuses
    assert 0 < refused_by_both < len(SHAPES)


def test_a_batch_the_generations_do_not_divide_is_refused_naming_each_factor():
    assert refusal(grpo_family.check, config(per_device_train_batch_size=30), processes=2) == (
        "algorithm.num_generations=8 must divide the completions generated at once, algorithm.per_device_train_batch_size=30 "
        "x 2 processes x algorithm.gradient_accumulation_steps=1 = 60: a prompt's completions are generated together"
    )
    assert refusal(grpo_family.check, config(per_device_train_batch_size=16, generation_batch_size=40)) == (
        "algorithm.generation_batch_size=40 must be a multiple of algorithm.per_device_train_batch_size=16 x 1 process = 16"
    )


def test_fgrpo_refuses_a_loss_its_span_advantages_do_not_support_and_a_worker_reward():
    cfg = config(loss_type="luspo")
    assert refusal(fgrpo.check, cfg) == ("algorithm=fgrpo supports loss_type in grpo, bnpo, dr_grpo, dapo, cispo, sapo, not 'luspo'")
    cfg = config()
    cfg.reward.functions = {"mine": {"_target_": "tests.rewards.worker_reward.sees_trainer_state", "timeout_s": 5}}
    assert refusal(fgrpo.check, cfg) == (
        "reward.functions.mine.timeout_s: span rewards (algorithm=fgrpo) run in the trainer's process; drop timeout_s"
    )
    cfg.reward.functions = {"math": {"_target_": "rlvr.rewards.math.MathVerifyReward", "timeout_s": 5}}
    assert not refusal(fgrpo.check, cfg).startswith("reward.functions.math.timeout_s")  # a built-in's own time limit


@pytest.mark.parametrize("overrides", [["experiment=vocab_reasoning", "algorithm=fgrpo"], ["algorithm=fgrpo", "reward=math_verify"]])
def test_fgrpo_refuses_a_reward_that_scores_whole_completions_naming_the_span_preset(overrides):
    """A built-in reward class returns one float per completion: known before anything loads, not after the
    warm-up and the first eval (experiment=vocab_reasoning keeps its reward=flexible_think)."""
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    message = refusal(fgrpo.check, cfg)
    assert message is not None and "scores whole completions" in message and "use reward=fgrpo_spans" in message, message
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        assert refusal(fgrpo.check, compose(config_name="config", overrides=[*overrides, "reward=fgrpo_spans"])) is None


def test_grpo_refuses_the_built_in_span_reward_which_trains_with_fgrpo():
    """reward=fgrpo_spans with the default algorithm=grpo was refused at the first eval, after the warm-up."""
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        spans, whole = (compose(config_name="config", overrides=[f"reward={name}"]) for name in ("fgrpo_spans", "gsm8k_flexible"))
    assert refusal(grpo.check, spans).startswith("reward.functions.answer_spans returns spans, which train with algorithm=fgrpo")
    assert refusal(grpo.check, whole) is None


@pytest.mark.parametrize("check", [grpo_family.check, fgrpo.check])
def test_rewards_without_any_signal_are_refused(check):
    """No reward, or every weight 0: loss and gradients 0 every step, refused before anything is written."""
    cfg = config()
    cfg.reward.functions = {}
    assert refusal(check, cfg) == "no reward functions configured: pick one, e.g. reward=gsm8k_strict"
    cfg.reward.functions = {"answer_spans": SPANS["answer_spans"] | {"weight": 0}}
    assert refusal(check, cfg) == (
        "reward.functions.answer_spans.weight: every reward weight is 0, so the run has no reward signal and learns nothing: "
        "give one a weight"
    )
    cfg.reward.functions = {"answer_spans": SPANS["answer_spans"] | {"weight": "abc"}}
    assert refusal(check, cfg) == "reward.functions.answer_spans.weight='abc' must be a finite number"
    cfg.reward.functions = {"answer_spans": SPANS["answer_spans"] | {"weight": 0}, "more": SPANS["answer_spans"] | {"weight": -0.5}}
    assert refusal(check, cfg) is None  # a weight of 0 beside one that is not


def test_fgrpo_refuses_trls_reward_normalisations_which_its_span_advantages_replace():
    assert refusal(fgrpo.check, config(scale_rewards="none")) == (
        "algorithm.scale_rewards has no effect with algorithm=fgrpo: its advantages are normalised per reward group by "
        "algorithm.fine_grained.normalization (standard|centered|none) and weighted by reward.functions.<name>.weight"
    )
    cfg = config()
    cfg.algorithm.trl = {"multi_objective_aggregation": "normalize_then_sum"}
    assert refusal(fgrpo.check, cfg).startswith("algorithm.trl.multi_objective_aggregation has no effect with algorithm=fgrpo")
    assert refusal(grpo_family.check, config(scale_rewards="none")) is None  # GRPO's own


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("top_k", 3, "top_k=3"),
        ("top_p", 0.9, "top_p=0.9"),
        ("repetition_penalty", 1.5, "repetition_penalty=1.5"),
        ("trl", {"min_p": 0.1}, "trl.min_p=0.1"),
    ],
)
def test_a_sampling_filter_that_training_would_leave_out_is_refused_with_a_reasoning_vocabulary(key, value, shown):
    cfg = config(**{key: value})
    assert refusal(grpo_family.check, cfg) is None  # without one: TRL's GRPO as it is
    cfg.model.reasoning_vocab_size = 8
    assert refusal(grpo_family.check, cfg) == (
        f"algorithm.{shown} with a reasoning vocabulary (model.reasoning_vocab_size > 0): training takes each token's log-prob "
        "over the ids allowed when it was drawn, without this filter, so it would not train on the distribution it samples "
        "from: leave it at its default"
    )
    neutral = config(trl={"generation_kwargs": {"top_p": 1.0, "min_p": 0.0, "num_beams": 1}})
    neutral.model.reasoning_vocab_size = 8
    assert refusal(grpo_family.check, neutral) is None


@pytest.mark.parametrize(
    "generation_kwargs",
    [{"top_p": 0.8}, {"temperature": 0.05}, {"typical_p": 0.2}, {"epsilon_cutoff": 3e-4}, {"no_repeat_ngram_size": 2}, {"num_beams": 2}],
)
def test_a_generation_setting_that_may_reshape_sampling_is_refused_with_a_reasoning_vocabulary(generation_kwargs):
    """Keys of TRL's generation_kwargs go to the sampler only: a temperature or a typical-p filter there sampled
    other distributions than training scored, and vocab/logprob_gap (at algorithm.temperature) did not show it."""
    [(key, value)] = generation_kwargs.items()
    cfg = config(trl={"generation_kwargs": generation_kwargs})
    assert refusal(grpo_family.check, cfg) is None
    cfg.model.reasoning_vocab_size = 8
    assert refusal(grpo_family.check, cfg).startswith(f"algorithm.trl.generation_kwargs.{key}={value} with a reasoning vocabulary")
    kept = config(temperature=0.7, trl={"generation_kwargs": {"temperature": 0.7, "use_cache": False, "cache_implementation": "static"}})
    kept.model.reasoning_vocab_size = 8
    assert refusal(grpo_family.check, kept) is None


def test_a_lora_dropout_is_refused_with_a_reasoning_vocabulary():
    """The dropout acts in the training forward, not in generation: vocab/logprob_gap grew to 3e-3 in 3 steps."""
    cfg = config()
    cfg.model.lora.enabled, cfg.model.lora.dropout = True, 0.05
    assert refusal(grpo_family.check, cfg) is None  # without a vocabulary: TRL's GRPO as it is
    cfg.model.reasoning_vocab_size = 8
    assert refusal(grpo_family.check, cfg).startswith("model.lora.dropout=0.05 with a reasoning vocabulary")
    cfg.algorithm.trl = {"disable_dropout": True}
    assert refusal(grpo_family.check, cfg) is None
    cfg.algorithm.trl, cfg.model.lora.dropout = {}, 0.0
    assert refusal(grpo_family.check, cfg) is None


def test_a_reasoning_vocabulary_under_zero3_is_refused():
    """It died in the first backward: TRL's fused head gathers the ZeRO-3 head it is given, and the
    vocabulary's row subsets are plain tensors (AttributeError: 'Tensor' object has no attribute 'ds_status')."""
    cfg = config()
    cfg.model.reasoning_vocab_size = 4
    cfg.hardware.sharding = "zero3"
    assert "with hardware.sharding=zero3: TRL's fused LM head gathers" in refusal(grpo_family.check, cfg, 2)
    cfg.hardware.sharding = "zero2"
    assert refusal(grpo_family.check, cfg, 2) is None


def test_a_reward_model_with_a_reasoning_vocabulary_is_refused():
    cfg = config()
    cfg.model.reasoning_vocab_size = 4
    assert refusal(reward_model.check, cfg) == "model.reasoning_vocab_size is for policies (algorithm=grpo or fgrpo), not reward models"


@pytest.mark.parametrize(
    "template, error",
    [
        ("{solution}", "KeyError('solution')"),
        ("{gold:>5d}", "ValueError(\"Unknown format code 'd'"),
        ("\\boxed{}", "ValueError('Format string contains positional fields') (a brace that is text is written twice: \\boxed{{}})"),
        ("\\frac{1}{2}", "ValueError('Format string contains positional fields') (a brace that is text"),
        ("\\boxed{x^2}", "KeyError('x^2') (a brace that is text is written twice: \\boxed{{}})"),
    ],
)
def test_a_warm_up_template_that_does_not_fit_the_rows_is_one_line(template, error):
    import datasets

    from rlvr.errors import DataError
    from rlvr.recipes.warmup import sft_dataset

    rows = datasets.Dataset.from_list([{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}])
    assert len(sft_dataset(rows, "{gold}", chat=False)) == 2
    with pytest.raises(DataError) as info:
        sft_dataset(rows, template, chat=False)
    assert str(info.value).startswith(f"dataset.sft_completion_template {template!r} fails on training row 0: {error}")


@pytest.mark.parametrize(
    ("dataset", "reward", "source"),
    [
        ("gsm8k", "gsm8k_strict", "tests/data/gsm8k_test_300.jsonl"),  # its experiments' reward
        ("math500", "math_verify", None),
        ("arithmetic", "gsm8k_flexible", None),
    ],
)
def test_a_dataset_presets_warm_up_targets_score_correct_under_its_reward(dataset, reward, source):
    """GSM8K's target was the raw solution ("... #### 54"), which gsm8k_strict, asking for "Final: <number>"
    as the preset's system prompt does, scored missing: the warm-up taught a format the reward refuses."""
    from rlvr.data import load_prompt_datasets
    from rlvr.recipes.warmup import sft_dataset
    from rlvr.rewards import build_rewards

    from conftest import ROOT

    overrides = [f"dataset={dataset}", f"reward={reward}"] + (
        [f"dataset.source={ROOT / source}", "dataset.eval_holdout=0"] if source else []
    )
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    train, _ = load_prompt_datasets(cfg.dataset)
    rows = train.select(range(40))
    targets = sft_dataset(rows, cfg.dataset.sft_completion_template, chat=False)["completion"]
    [scorer] = build_rewards(cfg.reward.functions)
    scorer.fn(prompts=rows["prompt"], completions=targets, answer=rows["answer"])
    assert [o.reason for o in scorer.fn.last_outcomes] == ["correct"] * len(rows), targets[0]


@pytest.mark.parametrize(
    "target_modules", [["q_proj", "lm_head"], ["q_proj", "v_proj"], "all-linear", ".*_proj", ".*(proj|head)", "lm_head"]
)
def test_a_lora_adapter_on_lm_head_is_refused_exactly_where_peft_would_put_one(target_modules):
    """TRL refuses an adapter on lm_head only once the model has loaded; the check refuses the same
    target_modules (a list or PEFT's regex) before anything loads."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), build_tiny_tokenizer(), seed=0)
    adapted = get_peft_model(model, LoraConfig(target_modules=target_modules, r=2))
    peft_adapts_lm_head = isinstance(adapted.get_output_embeddings(), BaseTunerLayer)
    cfg = config()
    cfg.model.lora.enabled, cfg.model.lora.target_modules = True, target_modules
    refused = refusal(grpo_family.check, cfg)
    assert (refused is not None) == peft_adapts_lm_head, refused
    assert refused is None or refused.endswith("TRL applies no LoRA adapter to lm_head (leave it out)")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize(
    "target_modules", [["q_proj", "embed_tokens"], ["q_proj", "v_proj"], "all-linear", ".*embed.*", ".*_proj", "model.embed_tokens"]
)
def test_a_lora_adapter_on_an_embedding_tied_to_lm_head_is_refused_where_peft_would_put_one(target_modules, tied):
    """Merged into the weight the embedding shares with lm_head, the adapter changed lm_head too, which
    training never saw: the saved model was not the policy trained (33 of 100 eval completions differed)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from rlvr.config import LoraConfig as RlvrLora
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer, check_lora_targets

    shape = OmegaConf.merge(OmegaConf.structured(TinyModelConfig), {"tie_word_embeddings": tied})
    model = build_tiny_model(shape, build_tiny_tokenizer(), seed=0)
    lora = OmegaConf.merge(OmegaConf.structured(RlvrLora), {"enabled": True, "target_modules": target_modules})
    try:
        refused = check_lora_targets(model, lora)
    except ConfigError as exc:
        refused = str(exc)
    adapted = get_peft_model(model, LoraConfig(target_modules=target_modules, r=2))
    peft_adapts_the_embedding = isinstance(adapted.get_input_embeddings(), BaseTunerLayer)
    assert (refused is not None) == (peft_adapts_the_embedding and tied), refused
    assert refused is None or "ties model.embed_tokens to its output layer (tie_word_embeddings)" in refused


@pytest.mark.parametrize(
    "overrides, warned",
    [
        ({"top_p": 0.9}, "algorithm.top_p=0.9"),
        ({"top_k": 5}, "algorithm.top_k=5"),
        ({}, None),
        ({"top_p": 0.9, "trl": {"vllm_importance_sampling_correction": False}}, None),
    ],
)
def test_a_truncating_sampler_under_vllms_importance_sampling_correction_is_named(caplog, overrides, warned):
    """vLLM's log-probs are over the tokens top_p / top_k keep, the policy's over all: TRL's correction
    weighed each completion by about top_p ** length (importance ratio 0.77 at top_p=0.9), unseen."""
    from rlvr.trainers.rollout_engine import warn_if_truncation_is_weighed

    cfg = config()
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"algorithm.{key}", value, force_add=True)
    with caplog.at_level("WARNING"):
        warn_if_truncation_is_weighed(cfg.algorithm)
    said = [r.getMessage() for r in caplog.records if "importance-sampling correction" in r.getMessage()]
    assert said[0].startswith(f"algorithm.rollout=vllm with {warned}: ") if warned else said == [], said


def test_a_target_modules_regex_that_does_not_compile_is_one_line():
    cfg = config()
    cfg.model.lora.enabled, cfg.model.lora.target_modules = True, "(proj"
    assert refusal(grpo_family.check, cfg).startswith("model.lora.target_modules='(proj' is not a regular expression (")


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        ([5, 5], "model.reasoning_vocab_ids: need 2 distinct token ids (model.reasoning_vocab_size=2); got 2, repeated: [5]"),
        ([5], "model.reasoning_vocab_ids: need 2 distinct token ids (model.reasoning_vocab_size=2); got 1"),
        ([5, -1], "model.reasoning_vocab_ids: need 2 distinct token ids (model.reasoning_vocab_size=2); got 2, not token ids: [-1]"),
        ([5, 6], None),
        ("frequent", None),
    ],
)
def test_an_explicit_reasoning_vocabulary_id_list_is_checked_before_the_warm_up(ids, error):
    cfg = config()
    cfg.model.reasoning_vocab_size, cfg.model.reasoning_vocab_ids = 2, ids
    assert refusal(grpo_family.check, cfg) == error


def test_the_reasoning_vocabularys_knobs_without_one_are_named_in_a_warning(caplog):
    """They ran plain GRPO without a word; a warning, not a refusal: a sweep over reasoning_vocab_size=0,64 shares them."""
    cfg = config()
    cfg.model.reasoning_only_in_think, cfg.model.reasoning_vocab_ids = True, "frequent"
    assert refusal(grpo_family.check, cfg) is None
    assert (
        "model.reasoning_vocab_ids=frequent, model.reasoning_only_in_think=True: no effect with model.reasoning_vocab_size=0" in caplog.text
    )
    caplog.clear()
    assert refusal(grpo_family.check, config()) is None and "no effect" not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ([], []),
        (
            ["algorithm.center_rewards_coefficient=0.5", "algorithm.per_device_eval_batch_size=3"],
            ["per_device_eval_batch_size=3", "center_rewards_coefficient=0.5"],
        ),
        (["algorithm.fine_grained.eps=0.1", "algorithm.vllm.cpu_kv_cache_gib=2"], ["fine_grained={", "vllm={"]),
        (["algorithm=fgrpo", "algorithm.fine_grained.eps=0.1", "algorithm.rollout=vllm", "algorithm.vllm.cpu_kv_cache_gib=2"], []),
    ],
)
def test_the_algorithm_settings_a_grpo_run_never_reads_are_named(overrides, named):
    """They were accepted without a word (a GRPO run with center_rewards_coefficient=0.5 trained as without it)."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    ignored = grpo_family.policy_ignored_settings(cfg)
    assert [setting.removeprefix("algorithm.")[: len(prefix)] for setting, prefix in zip(ignored, named)] == named
    assert len(ignored) == len(named)


def test_warm_up_pairs_longer_than_the_context_are_cut_to_it_and_counted(caplog):
    """The SFT warm-up ran at TRL's 1024 tokens whatever the model's context: a GPT-2 (learned positions)
    failed deep inside its forward on a long gold, a RoPE model trained past the positions it has."""
    from datasets import Dataset

    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
    from rlvr.recipes.warmup import sft_warmup

    cfg = OmegaConf.merge(OmegaConf.structured(Config), {"model": {"warmup_sft_steps": 1, "tiny": {"max_position_embeddings": 32}}})
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(cfg.model.tiny, tokenizer, seed=0)
    rows = Dataset.from_list([{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+2=", "answer": "3 " * 40}])
    with caplog.at_level("WARNING"):
        sft_warmup(model, tokenizer, rows, cfg, {"use_cpu": True}, seed=0)
    assert "SFT warm-up: 1 of 2 prompt + target pairs reach 32 tokens: cut there, or dropped" in caplog.messages


def test_a_chat_template_that_ends_no_turn_is_named_before_the_warm_up(caplog):
    """An assistant turn rendered without an end-of-generation id: the warm-up's targets held no end, and
    the policy learned to write to max_completion_length, without a word."""
    from rlvr.models.loading import build_tiny_model, build_tiny_tokenizer
    from rlvr.recipes.warmup import warn_if_no_end_is_taught

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(OmegaConf.structured(TinyModelConfig), tokenizer, seed=0)
    pair = {"prompt": [{"role": "user", "content": "1+1="}], "completion": [{"role": "assistant", "content": "2"}]}
    templates = {
        True: "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}",
        False: "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    }
    for ends, template in templates.items():
        tokenizer.chat_template = template
        caplog.clear()
        warn_if_no_end_is_taught(model, tokenizer, pair)
        assert any("teaches no end" in m for m in caplog.messages) != ends
