"""Benchmark metrics over n sampled completions per prompt: mean@n, pass@k, maj@k, with their uncertainty.

Pure Python (no torch): the engine (rlvr/evaluation/engine.py) gathers per-prompt correctness and extracted
answers, this module turns them into numbers. Written by hand because no installed library has the
three together: pass@k is the unbiased estimator of Chen et al. (2021), maj@k the majority vote over
answers that a reward judges equivalent (`Reward.same_answer`), each with the uncertainty a paper reports:

- mean@n   mean correctness over all n samples of every prompt (the pass@1 estimate);
- pass@k   1 - C(n-c, k) / C(n, k) per prompt (c correct of n), averaged over prompts;
- maj@k    the expected correctness of the majority answer of k samples drawn without replacement
           from the prompt's n (exact over every k-subset when there are at most `resamples` of
           them, else a seeded sample of `resamples` subsets; k = n is the vote of all n);
- `_se`    standard error over prompts (sample std of the per-prompt values / sqrt(#prompts); NaN
           with one prompt, where it is undefined (null in the JSON files));
- maj@k's `_ci_low` / `_ci_high`: 95% percentile bootstrap over prompts (fixed seed), since a
           majority vote's per-prompt value is not a mean the SE formula describes well at 0 or 1.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

SameAnswer = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt: 1 - C(n-c, k) / C(n, k), computed as a product (no huge factorials).

    C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i), the form of Chen et al.'s numpy reference.
    """
    if not 0 < k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples per prompt, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: {c} correct of {n} samples is not a count of them")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def answer_classes(predictions: Sequence[str | None], same: SameAnswer) -> list[int | None]:
    """Class index of each prediction (None for no answer), classes numbered by first appearance.

    A prediction joins the first class whose representative (first member) `same` calls equal;
    comparing with representatives only keeps this well defined for a `same` that is not transitive
    (math-verify's need not be). Identical strings are the same without a call to `same`.
    """
    representatives: list[str] = []
    classes: list[int | None] = []
    for prediction in predictions:
        if prediction is None:
            classes.append(None)
            continue
        for index, rep in enumerate(representatives):
            if prediction == rep or same(rep, prediction):
                classes.append(index)
                break
        else:
            representatives.append(prediction)
            classes.append(len(representatives) - 1)
    return classes


def majority_index(classes: Sequence[int | None]) -> int | None:
    """Position of the representative of the winning class in `classes`, or None if no answer at all.

    The largest class wins; a tie goes to the class whose first member comes earliest.
    """
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for position, label in enumerate(classes):
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
            first.setdefault(label, position)
    if not counts:
        return None
    winner = max(counts, key=lambda label: (counts[label], -first[label]))
    return first[winner]


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(len)); the SE is NaN for fewer than two values."""
    if not values:
        raise ValueError("mean_se: no values")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def bootstrap_interval(values: Sequence[float], seed: int, resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampled with replacement, seeded)."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1.0 - level) / 2
    return means[int(tail * (resamples - 1))], means[math.ceil((1.0 - tail) * (resamples - 1))]


def majority_correct(classes: Sequence[int | None], correct: Sequence[bool], k: int, rng: random.Random, resamples: int) -> float:
    """Expected correctness of the majority vote of k of one prompt's n samples (see the module doc)."""
    n = len(classes)
    if math.comb(n, k) <= resamples:
        subsets = list(itertools.combinations(range(n), k))
    else:
        subsets = [sorted(rng.sample(range(n), k)) for _ in range(resamples)]
    hits = 0
    for subset in subsets:
        position = majority_index([classes[i] for i in subset])
        hits += position is not None and bool(correct[subset[position]])
    return hits / len(subsets)


def sample_metrics(
    correct: Sequence[Sequence[bool]],
    predictions: Sequence[Sequence[str | None]],
    ks: Sequence[int],
    same: SameAnswer,
    seed: int = 0,
    resamples: int = 1000,
) -> dict[str, float]:
    """mean@n, pass@k, maj@k (k in `ks`) with their SEs / interval, over prompts; keys without a prefix.

    correct[i][j], predictions[i][j]: whether sample j of prompt i is correct and its extracted
    answer (None: none). Every prompt has the same n samples. maj@k counts a vote correct when the
    winning class's representative sample is; it is left out when a correct sample has no answer
    (the judging reward extracts none to vote on, e.g. span rewards): it would read 0. Same inputs
    and seed -> same numbers.
    """
    if not correct:
        raise ValueError("sample_metrics: no prompts to score")
    n = len(correct[0])
    if n == 0 or any(len(row) != n for row in correct) or [len(p) for p in predictions] != [n] * len(correct):
        raise ValueError(f"sample_metrics: every prompt needs the same n >= 1 samples and one prediction per sample (first prompt has {n})")
    for k in ks:
        if not 1 <= k <= n:
            raise ValueError(f"eval ks: k={k} needs 1 <= k <= n={n} samples per prompt")
    counts = [sum(bool(x) for x in row) for row in correct]
    metrics: dict[str, float] = {}
    metrics[f"mean@{n}"], metrics[f"mean@{n}_se"] = mean_se([c / n for c in counts])
    for k in ks:
        metrics[f"pass@{k}"], metrics[f"pass@{k}_se"] = mean_se([pass_at_k(n, c, k) for c in counts])
    if any(c and p is None for row_c, row_p in zip(correct, predictions) for c, p in zip(row_c, row_p)):
        return metrics
    classes = [answer_classes(row, same) for row in predictions]
    for k in ks:
        rng = random.Random(f"{seed}/maj@{k}")  # one stream per k: adding a k changes no other number
        per_prompt = [majority_correct(labels, row, k, rng, resamples) for labels, row in zip(classes, correct)]
        metrics[f"maj@{k}"] = math.fsum(per_prompt) / len(per_prompt)
        metrics[f"maj@{k}_ci_low"], metrics[f"maj@{k}_ci_high"] = bootstrap_interval(per_prompt, seed)
    return metrics


SAMPLE_METRIC = re.compile(r"(?P<kind>mean|pass|maj)@(?P<k>\d+)$")
Z95 = 1.959963984540054  # two-sided 95% normal quantile: SE intervals match maj@k's 95% bootstrap


def sample_metric_names(keys: Iterable[str], prefix: str, plotted: bool = False) -> list[str]:
    """`{prefix}mean@n`, `pass@k`, `maj@k` among `keys` (not their _se / _ci parts), in the order mean, pass, maj by k.
    `plotted`: without pass@1 and maj@1, which repeat mean@n (one sample is its own majority)."""
    found = [(key, SAMPLE_METRIC.fullmatch(key[len(prefix) :])) for key in set(keys) if key.startswith(prefix)]
    found = [f for f in found if f[1] and not (plotted and f[1]["kind"] != "mean" and f[1]["k"] == "1")]
    order = {"mean": 0, "pass": 1, "maj": 2}
    return [key for key, match in sorted(found, key=lambda f: (order[f[1]["kind"]], int(f[1]["k"])))]


def _number(value: Any) -> bool:
    """A finite number: an uncertainty that is undefined is NaN in memory, null (None) read back from JSON."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def interval95(metrics: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    """The 95% interval of metric `name`: maj@k's bootstrap interval, else value ± 1.96 SE; None if neither
    is a number."""
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if _number(low) and _number(high):
        return low, high
    se = metrics.get(f"{name}_se")
    if _number(se):
        return metrics[name] - Z95 * se, metrics[name] + Z95 * se
    return None


def with_uncertainty(metrics: Mapping[str, Any], name: str) -> str:
    """`0.512 ± 0.031` (value ± SE) or `0.5 [0.4, 0.6]` (maj@k's bootstrap interval) for tables; the
    value alone where its uncertainty is not a number."""
    value = metrics[name]
    low, high, se = (metrics.get(f"{name}{part}") for part in ("_ci_low", "_ci_high", "_se"))
    if _number(low) and _number(high):
        return f"{value:.4g} [{low:.4g}, {high:.4g}]"
    return f"{value:.4g} ± {se:.2g}" if _number(se) else f"{value:.4g}"
