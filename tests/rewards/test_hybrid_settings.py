"""The hybrid reward's settings, verifier and calibration record, checked without loading a model: the
reward model's loading and the policy's sampling are stand-ins, its files a few bytes."""

import json
import math
import logging
import os
import struct

import pytest

from conftest import TINY_RUN, one_line_error, refused_in_process
from rlvr.errors import ConfigError, RlvrError
from rlvr.rewards import build_rewards
from rlvr.rewards.base import WeightedReward
from rlvr.rewards.checks import required_columns
from rlvr.rewards.hybrid import HybridReward, RewardModelScorer, hybrid_value

VERIFIER = {"_target_": "rlvr.rewards.numeric.LastNumberReward"}


def first_word_is_gold(completions, answer, **kwargs):
    """A user's TRL-style reward: a plain function, which has no `score` a verifier needs."""
    return [float(c.split()[:1] == [a]) for c, a in zip(completions, answer)]


class StandInScorer:
    """Scores from a list, in turn: the reward model's part without a model."""

    def __init__(self, scores):
        self.scores = list(scores)

    def score(self, conversations):
        return [self.scores.pop(0) for _ in conversations]


@pytest.fixture
def loads(monkeypatch):
    """{reward model path as given: the scores its stand-in gives}; a path not in it fails the test if loaded."""
    scores: dict[str, list[float]] = {}

    def from_path(path, **_):
        assert path in scores, f"loaded the reward model {path}"
        return StandInScorer(scores[path])

    monkeypatch.setattr(RewardModelScorer, "from_path", from_path)
    return scores


@pytest.fixture
def sampled(monkeypatch):
    """How many prompts the stand-in policy sampled completions for, call by call."""
    import rlvr.evaluation.engine

    calls: list[int] = []

    def generate_batch(policy, tokenizer, prompts, max_new_tokens, do_sample):
        calls.append(len(prompts))
        return [f"answer {i}" for i in range(len(prompts))], None

    monkeypatch.setattr(rlvr.evaluation.engine, "generate_batch", generate_batch)
    return calls


def reward_model_dir(path, weights: bytes = b"weights", tokenizer: bool = True):
    """A run dir of algorithm=reward_model as far as its files go: final_model/ with a config, weights (a
    safetensors file that maps no tensor, `weights` in its header) and a tokenizer file."""
    model = path / "final_model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["Qwen2ForSequenceClassification"]}')
    header = json.dumps({"__metadata__": {"weights": weights.decode()}}).encode()
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    if tokenizer:
        (model / "tokenizer.json").write_text("{}")
    return str(path)


def hybrid(reward_model, **settings) -> HybridReward:
    [reward] = build_rewards(
        {"hybrid": {"_target_": "rlvr.rewards.hybrid.HybridReward", "verifier": VERIFIER, "reward_model": reward_model, **settings}}
    )
    return reward.fn


def calibrate(reward: HybridReward, out_path, prompts=8) -> dict:
    return reward.calibrate(None, None, [f"prompt {i}" for i in range(prompts)], 16, out_path)


BAD_SETTINGS = [
    ({"r_min": 9, "r_max": -5}, "reward.functions.hybrid: r_max=-5 must be > r_min=9"),
    ({"r_min": 1, "r_max": 1}, "reward.functions.hybrid: r_max=1 must be > r_min=1"),
    ({"r_min": 3}, "reward.functions.hybrid.r_min=3 is set without r_max: set both"),
    ({"r_max": 3}, "reward.functions.hybrid.r_max=3 is set without r_min: set both"),
    ({"alpha": 0.8, "beta": 0.8}, "reward.functions.hybrid: alpha + beta = 0.8 + 0.8 must be <= 1"),
    ({"alpha": 0.5, "beta": 0.6}, "reward.functions.hybrid: alpha + beta = 0.5 + 0.6 must be <= 1"),
    ({"alpha": -1}, "reward.functions.hybrid.alpha=-1 must be a finite number >= 0"),
    ({"beta": -0.5, "alpha": 0.5}, "reward.functions.hybrid.beta=-0.5 must be a finite number >= 0"),
    ({"alpha": "abc"}, "reward.functions.hybrid.alpha='abc' must be a finite number"),
    ({"r_min": 0, "r_max": float("inf")}, "reward.functions.hybrid.r_max=inf must be a finite number"),
    ({"eps": 0, "r_min": 1, "r_max": 1}, "reward.functions.hybrid.eps=0 must be a finite number > 0"),
    ({"eps": -0.01}, "reward.functions.hybrid.eps=-0.01 must be a finite number > 0"),
    ({"r_min": 0.9, "r_max": 0.905, "eps": 0.01}, "reward.functions.hybrid: r_max - r_min = 0.005 is below eps=0.01: n = (r - r_min)"),
    ({"calibration_prompts": 0}, "reward.functions.hybrid.calibration_prompts=0 must be a whole number >= 2"),
    ({"calibration_prompts": -3}, "reward.functions.hybrid.calibration_prompts=-3 must be a whole number >= 2"),
    ({"calibration_prompts": 1}, "reward.functions.hybrid.calibration_prompts=1 must be a whole number >= 2"),
    ({"calibration_prompts": 4.5}, "reward.functions.hybrid.calibration_prompts=4.5 must be a whole number >= 2"),
    (
        {"verifier": {"_target_": f"{__name__}.first_word_is_gold"}},
        f"reward.functions.hybrid.verifier: {__name__}.first_word_is_gold is not a verifier: a verifier is a subclass of rlvr.rewards",
    ),
    ({"verifier": "rlvr.rewards.numeric.LastNumberReward"}, "reward 'hybrid' needs a verifier: {_target_: ...}, not 'rlvr.rewards.numeric"),
    ({"batch_size": 0}, "reward.functions.hybrid.batch_size=0 must be a whole number >= 1"),
    ({"batch_size": -4}, "reward.functions.hybrid.batch_size=-4 must be a whole number >= 1"),
    ({"batch_size": 2.5}, "reward.functions.hybrid.batch_size=2.5 must be a whole number >= 1"),
    ({"device": "cpux"}, "reward.functions.hybrid.device='cpux' must be one of cpu, cuda, mps, cuda:<index> (did you mean 'cpu'?)"),
    ({"device": "cuda:x"}, "reward.functions.hybrid.device='cuda:x' must be one of cpu, cuda, mps, cuda:<index>"),
    ({"offload": "no"}, "reward.functions.hybrid.offload='no' must be true or false"),
    ({"offload": 1}, "reward.functions.hybrid.offload=1 must be true or false"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_bad_settings_are_refused_at_start_up_naming_the_setting(tmp_path, loads, settings, message):
    """`preflight`, which rlvr.run's start-up runs before anything loads: no model is loaded."""
    arguments = {"verifier": VERIFIER, "reward_model": reward_model_dir(tmp_path / "rm"), **settings}
    with pytest.raises(ConfigError) as refused:
        HybridReward.preflight("hybrid", **arguments)
    assert str(refused.value).startswith(message), str(refused.value)


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_bad_settings_are_refused_when_built_before_the_reward_model_loads(tmp_path, loads, settings, message):
    """rlvr.score and rlvr.eval build the rewards without the start-up check: the same line, no model loaded."""
    with pytest.raises(ConfigError) as refused:
        hybrid(reward_model_dir(tmp_path / "rm"), **settings)
    assert str(refused.value).startswith(message), str(refused.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_device_torch_does_not_see_is_refused_before_the_reward_model_loads(tmp_path, loads, monkeypatch, device):
    """Without a GPU it failed at the first score, after the warm-up: "Torch not compiled with CUDA enabled"."""
    import torch

    gpus = 0 if device != "cuda:3" else 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    seen = "no GPU here: use reward.functions.hybrid.device=cpu" if not gpus else "2 GPU(s) here: cuda:0 to cuda:1"
    rm = reward_model_dir(tmp_path / "rm")
    with pytest.raises(ConfigError) as at_start_up:
        HybridReward.preflight("hybrid", verifier=VERIFIER, reward_model=rm, device=device)
    with pytest.raises(ConfigError) as when_built:
        hybrid(rm, device=device)
    assert str(at_start_up.value) == str(when_built.value) == f"reward.functions.hybrid.device={device} but torch sees {seen}"


def test_the_verifiers_own_start_up_checks_run_with_the_hybrid_rewards(tmp_path):
    verifier = {"_target_": "rlvr.rewards.numeric.LastNumberReward", "wrnog": 1}
    with pytest.raises(ConfigError, match=r"^reward.functions.hybrid.verifier.wrnog: LastNumberReward takes no 'wrnog'"):
        HybridReward.preflight("hybrid", verifier=verifier, reward_model=reward_model_dir(tmp_path / "rm"))


@pytest.mark.parametrize(
    "settings",
    [
        {"alpha": 0.7, "beta": 0.3},
        {"alpha": 0, "beta": 0},
        {"r_min": -2.5, "r_max": 4},
        {"batch_size": 1, "device": "cpu", "offload": True},
    ],
)
def test_the_edges_of_the_allowed_settings_are_accepted(tmp_path, loads, settings):
    path = reward_model_dir(tmp_path / "rm")
    loads[path] = []
    HybridReward.preflight("hybrid", verifier=VERIFIER, reward_model=path, **settings)
    assert isinstance(hybrid(path, **settings), HybridReward)


@pytest.mark.parametrize(("alpha", "beta"), [(0.7, 0.3), (0.0, 1.0), (1.0, 0.0), (0.25, 0.25)])
def test_allowed_weights_keep_every_verified_answer_at_or_above_every_unverified_one(alpha, beta):
    grid = [x / 4 for x in range(-8, 49)]
    verified = min(hybrid_value(True, r, 0.0, 10.0, alpha, beta, 0.01) for r in grid)
    unverified = max(hybrid_value(False, r, 0.0, 10.0, alpha, beta, 0.01) for r in grid)
    assert verified >= unverified


@pytest.mark.slow
def test_a_plain_function_verifier_is_refused_at_start_up_before_anything_is_written(tmp_path):
    """It failed at the first eval, after the policy had loaded and warmed up: "'functools.partial'
    object has no attribute 'score'"."""
    run_dir = tmp_path / "run"
    line = one_line_error(
        refused_in_process(
            *TINY_RUN,
            "reward=hybrid",
            f"reward.functions.hybrid.reward_model={reward_model_dir(tmp_path / 'rm')}",
            f"+reward.functions.hybrid.verifier={{_target_: {__name__}.first_word_is_gold}}",
            f"hydra.run.dir={run_dir}",
        )
    )
    assert line.startswith(f"rlvr: error: reward.functions.hybrid.verifier: {__name__}.first_word_is_gold is not a verifier")
    assert not run_dir.exists()


def no_tokenizer(tmp_path) -> tuple[str, str]:
    return reward_model_dir(tmp_path / "rm", tokenizer=False), (
        f"model directory {tmp_path / 'rm' / 'final_model'} (reward.functions.hybrid.reward_model): no tokenizer "
        "(tokenizer.json / tokenizer_config.json / a vocabulary file): save the tokenizer beside the model"
    )


def not_there(tmp_path) -> tuple[str, str]:
    return str(tmp_path / "no_rm"), f"model directory not found: {tmp_path / 'no_rm'} (reward.functions.hybrid.reward_model)"


def not_a_hub_name(tmp_path) -> tuple[str, str]:
    """A relative path that is not there, spelt as no Hub name can be: it was huggingface_hub's "Repo id must be in the form"."""
    return "runs/no_rm/final_model", "model directory not found: runs/no_rm/final_model (reward.functions.hybrid.reward_model)"


@pytest.mark.parametrize("reward_model", [no_tokenizer, not_there, not_a_hub_name])
def test_a_reward_model_that_cannot_load_is_refused_at_start_up_and_when_built(tmp_path, reward_model):
    """At rlvr.run's start-up (preflight) and where rlvr.eval and rlvr.score build the reward, before it
    loads: a dir without its tokenizer scored every answer as zero tokens (a torch traceback, "indices
    got FloatTensor"); a path that is not there was a Hub error in rlvr.eval and rlvr.score."""
    path, message = reward_model(tmp_path)
    with pytest.raises(RlvrError) as at_start_up:
        HybridReward.preflight("hybrid", verifier=VERIFIER, reward_model=path)
    with pytest.raises(RlvrError) as when_built:
        hybrid(path)
    assert str(at_start_up.value).startswith(message) and str(when_built.value).startswith(message), str(at_start_up.value)


def test_a_calibration_records_its_reward_model_and_is_read_back_by_a_later_start(tmp_path, loads, sampled):
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [0.5, 3.0, -1.0, 2.0]
    out = tmp_path / "hybrid_calibration.json"
    record = calibrate(hybrid(rm, calibration_prompts=4), out)
    assert (record["r_min"], record["r_max"], record["prompts"], sampled) == (-1.0, 3.0, 4, [4])
    written = json.loads(out.read_text())["reward_model"]
    assert written == {"path": rm, "resolved": str((tmp_path / "rm" / "final_model").resolve()), "files": written["files"]}

    again = hybrid(rm, calibration_prompts=4)
    assert calibrate(again, out)["r_max"] == 3.0 and (again.r_min, again.r_max) == (-1.0, 3.0)
    assert sampled == [4]  # read back: no second calibration


def test_the_same_reward_model_named_another_way_keeps_the_calibration(tmp_path, loads, sampled):
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [0.0, 1.0]
    out = tmp_path / "hybrid_calibration.json"
    calibrate(hybrid(rm), out, prompts=2)
    moved = tmp_path / "moved"
    os.rename(tmp_path / "rm", moved)  # a move keeps the files' modification times
    loads[str(moved / "final_model")] = []
    reward = hybrid(str(moved / "final_model"))
    assert calibrate(reward, out)["r_max"] == 1.0 and sampled == [2]


def test_another_reward_model_is_calibrated_again_saying_why(tmp_path, loads, sampled, caplog):
    """A continued run that names another reward model squeezed its scores into the first one's range."""
    first, second = reward_model_dir(tmp_path / "rm_a"), reward_model_dir(tmp_path / "rm_b", b"other weights")
    loads[first], loads[second] = [0.0, 1.0], [10.0, 40.0]
    out = tmp_path / "hybrid_calibration.json"
    calibrate(hybrid(first), out, prompts=2)
    reward = hybrid(second)
    with caplog.at_level(logging.INFO, logger="rlvr.rewards.hybrid"):
        record = calibrate(reward, out, prompts=2)
    assert (reward.r_min, reward.r_max, sampled) == (10.0, 40.0, [2, 2])
    assert json.loads(out.read_text()) == record and record["reward_model"]["path"] == second
    [said] = [r.getMessage() for r in caplog.records if "was made with" in r.getMessage()]
    assert said.startswith(f"hybrid reward: {out} was made with {tmp_path / 'rm_a' / 'final_model'}, files ")
    assert f", not with {tmp_path / 'rm_b' / 'final_model'}" in said


def test_an_eval_with_another_reward_model_leaves_the_runs_calibration_alone(tmp_path, loads, sampled):
    """An eval reads the run's calibration where its reward model is the run's, and keeps its own elsewhere."""
    runs, other = reward_model_dir(tmp_path / "rm_a"), reward_model_dir(tmp_path / "rm_b", b"other weights")
    loads[runs], loads[other] = [0.0, 1.0], [10.0, 40.0]
    run_file = tmp_path / "run" / "hybrid_calibration.json"
    run_file.parent.mkdir()
    calibrate(hybrid(runs), run_file, prompts=2)
    written = run_file.read_text()
    eval_file = tmp_path / "run" / "eval" / "hybrid_calibration.json"
    eval_file.parent.mkdir()
    reward = hybrid(other)
    reward.calibrate(None, None, ["p1", "p2"], 16, eval_file, earlier=run_file)
    assert (reward.r_min, reward.r_max) == (10.0, 40.0) and run_file.read_text() == written
    assert json.loads(eval_file.read_text())["reward_model"]["path"] == other
    same = hybrid(runs)
    same.calibrate(None, None, ["p1", "p2"], 16, tmp_path / "unused.json", earlier=run_file)
    assert (same.r_min, same.r_max, sampled) == (0.0, 1.0, [2, 2]) and not (tmp_path / "unused.json").exists()


def test_a_reward_model_written_again_in_place_is_calibrated_again(tmp_path, loads, sampled):
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [0.0, 1.0]
    out = tmp_path / "hybrid_calibration.json"
    calibrate(hybrid(rm), out, prompts=2)
    (tmp_path / "rm" / "final_model" / "model.safetensors").write_bytes(b"retrained weights")
    loads[rm] = [5.0, 9.0]
    reward = hybrid(rm)
    calibrate(reward, out, prompts=2)
    assert (reward.r_min, reward.r_max, sampled) == (5.0, 9.0, [2, 2])


def test_a_calibration_that_does_not_record_its_reward_model_is_made_again(tmp_path, loads, sampled):
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [0.0, 3.0]
    out = tmp_path / "hybrid_calibration.json"
    out.write_text(json.dumps({"r_min": -2.0, "r_max": 2.0, "prompts": 16, "scores": []}))
    reward = hybrid(rm)
    calibrate(reward, out, prompts=2)
    assert (reward.r_min, reward.r_max, sampled) == (0.0, 3.0, [2])
    assert json.loads(out.read_text())["reward_model"]["files"] == reward.reward_model["files"]


def test_a_calibration_whose_scores_are_alike_is_refused_and_not_written(tmp_path, loads, sampled):
    """With r_max - r_min ~ 0 the normalisation is (r - r_min) / eps: a step at r_min, not a scale."""
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [1.5, 1.5, 1.503]
    out = tmp_path / "hybrid_calibration.json"
    with pytest.raises(ConfigError, match=r"the calibration on 3 prompts gives r_max - r_min = 0.003, below eps=0.01"):
        calibrate(hybrid(rm), out, prompts=3)
    assert not out.exists()


def test_a_reward_model_scoring_nan_is_refused_at_its_calibration_not_as_the_hybrid_rewards_value(tmp_path, loads, sampled):
    """A NaN reward model calibrated to r_min=nan r_max=nan (logged at INFO), then failed as "reward 'hybrid' returned nan"."""
    from rlvr.errors import DivergedError

    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [1.0, math.nan, 2.0]
    out = tmp_path / "hybrid_calibration.json"
    with pytest.raises(DivergedError, match=r"the calibration on 3 prompts gives r_min=nan, r_max=nan: the reward model .* scores NaN"):
        calibrate(hybrid(rm), out, prompts=3)
    assert not out.exists()


def test_an_earlier_calibration_whose_scores_are_alike_is_refused_naming_its_file(tmp_path, loads, sampled):
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = []
    out = tmp_path / "hybrid_calibration.json"
    reward = hybrid(rm, eps=0.5)  # a continued run with a larger eps than the one the calibration passed
    out.write_text(json.dumps({"r_min": 0.7, "r_max": 0.9, "prompts": 8, "scores": [0.7, 0.9], "reward_model": reward.reward_model}))
    with pytest.raises(ConfigError, match=f"the calibration in {out} gives r_max - r_min = 0.2, below eps=0.5"):
        calibrate(reward, out)


def test_fixed_r_min_and_r_max_need_no_calibration(tmp_path, loads):
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = []
    assert not hybrid(rm, r_min=-1.0, r_max=1.0).needs_calibration
    assert hybrid(rm).needs_calibration


def test_a_hub_reward_model_is_recorded_by_its_snapshot_in_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from rlvr.rewards.hybrid import reward_model_record

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--rm"
    for commit, weights in (("aaa111", b"first"), ("bbb222", b"second push")):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "snapshots" / commit / "model.safetensors").write_bytes(weights)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaa111")
    first = reward_model_record("someone/rm")
    assert first["resolved"] == str(repo / "snapshots" / "aaa111") and first["path"] == "someone/rm"
    (repo / "refs" / "main").write_text("bbb222")
    assert reward_model_record("someone/rm")["files"] != first["files"]


def test_a_cuda_reward_model_goes_to_each_processs_own_gpu(monkeypatch):
    """`device: cuda` put every rank's copy on GPU 0."""
    import torch

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    scorer = RewardModelScorer(torch.nn.Linear(1, 1), tokenizer=None, device="cuda", offload=True)  # offload: stays on the CPU
    assert scorer.device == "cuda:3"
    assert RewardModelScorer(torch.nn.Linear(1, 1), tokenizer=None, device="cuda:1", offload=True).device == "cuda:1"


def test_the_code_reward_as_verifier_reads_the_rows_tests_and_entry_points(tmp_path, loads):
    """It raised IndexError at its first call: the hybrid passed the verifier neither the rows' entry_point
    nor the tests as written (it read them as a gold answer)."""
    rm = reward_model_dir(tmp_path / "rm")
    loads[rm] = [0.0, 1.0]
    code = {"_target_": "rlvr.rewards.code.CodeTestsReward"}
    reward = hybrid(rm, verifier=code, r_min=0.0, r_max=1.0, alpha=0.5, beta=0.5)
    assert required_columns([WeightedReward("hybrid", reward, 1.0)]) == ["entry_point"]  # checked as the data loads
    values = reward(
        prompts=["add", "add"],
        completions=["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"],
        answer=["assert add(1, 2) == 3\nassert add(2, 2) == 4"] * 2,
        entry_point=["add", "add"],
    )
    assert [o.correct for o in reward.last_outcomes] == [True, False]
    assert values == [hybrid_value(True, 0.0, 0.0, 1.0, 0.5, 0.5, 0.01), hybrid_value(False, 1.0, 0.0, 1.0, 0.5, 0.5, 0.01)]


@pytest.mark.parametrize("architecture", ["qwen2", "bert"])
def test_a_conversation_longer_than_the_reward_models_context_is_cut_where_its_score_is_not_read(architecture, caplog):
    """It was cut to its last tokens whatever the model, silently: a BERT-like encoder, which reads its
    score at the first token, lost that token."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    shape = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=8)
    config = AutoConfig.for_model(architecture, vocab_size=300, num_labels=1, pad_token_id=0, **shape)
    model = AutoModelForSequenceClassification.from_config(config)
    scorer = RewardModelScorer(model, tokenizer=None)
    short, long_ = list(range(40, 46)), list(range(40, 60))
    kept = long_[-8:] if architecture == "qwen2" else long_[:8]
    assert scorer.cut_to_context([short, long_]) == [short, kept]
    [warning] = [r.getMessage() for r in caplog.records if "context" in r.getMessage()]
    edge = "last" if architecture == "qwen2" else "first"
    assert warning.startswith(f"reward model: 1 of 2 conversations are longer than its 8-token context: each is scored on its {edge} 8")
    scorer.cut_to_context([long_])
    assert len([r for r in caplog.records if "context" in r.getMessage()]) == 1  # once


def test_pair_metrics_weigh_every_pair_alike():
    """A batch of 2 pairs and a last batch of 1: TRL's batch means give that one pair half the weight."""
    scores = {"a": 1.0, "b": 0.0, "c": 2.0, "d": 1.5, "e": 0.0, "f": 3.0}

    class Fixed(RewardModelScorer):
        def __init__(self):
            pass

        def score(self, conversations):
            return [scores[c[-1]["content"]] for c in conversations]

    turn = [{"role": "assistant", "content": "x"}]
    pairs = [{"prompt": [], "chosen": [{**turn[0], "content": c}], "rejected": [{**turn[0], "content": r}]} for c, r in ("ab", "cd", "ef")]
    assert Fixed().pair_metrics(pairs) == {"accuracy": 2 / 3, "margin": pytest.approx((1.0 + 0.5 - 3.0) / 3)}
