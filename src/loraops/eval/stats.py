"""Paired statistics for two models scored on the same examples: bootstrap intervals and McNemar's test.

scipy does the work: `scipy.stats.bootstrap` (paired, seeded, percentile intervals) for every metric,
corpus BLEU resampled as a corpus through its per-example sufficient statistics, and `binomtest` on the
discordant pairs for McNemar's exact test on exact match.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDelta:
    delta: float  # fine-tuned minus reference, on the full sample
    low: float  # 95% (1 - alpha) interval of the delta
    high: float
    p: float  # two-sided p-value of "no difference"


def _finite(x: float, fallback: float) -> float:
    return float(x) if math.isfinite(x) else fallback


def mean_of_rows(batch: np.ndarray) -> np.ndarray:
    """Per resample (first axis): the mean of its examples' scores."""
    return batch.mean(axis=-1)


def bootstrap_delta(
    tuned: np.ndarray,
    reference: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    resamples: int,
    seed: int,
    alpha: float,
) -> PairedDelta:
    """Resample example indices (the same for both sides) and recompute `statistic` on each side.

    `tuned` and `reference` hold one row per example (a score, or a row of BLEU statistics);
    `statistic` maps a batch of resamples, shape (resamples, examples, ...), to one value each.
    """
    from scipy.stats import bootstrap

    delta = float(statistic(tuned[None])[0] - statistic(reference[None])[0])
    if len(tuned) < 2:
        return PairedDelta(delta, delta, delta, 1.0)

    def diff(index: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = index.astype(int)
        return statistic(tuned[rows]) - statistic(reference[rows])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical sides make a degenerate distribution; handled below
        result = bootstrap(
            (np.arange(len(tuned)),),
            diff,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=1 - alpha,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    samples = np.asarray(result.bootstrap_distribution)
    # Never 0: with B resamples, the bootstrap can only say p < 1/B.
    p = min(1.0, max(1 / len(samples), 2 * min(float(np.mean(samples <= 0)), float(np.mean(samples >= 0)))))
    low = _finite(result.confidence_interval.low, delta)
    high = _finite(result.confidence_interval.high, delta)
    return PairedDelta(delta, low, high, float(p))


def mcnemar_p(fixed: int, broken: int) -> float:
    """McNemar's exact test: under no difference, each discordant pair is fixed or broken with p = 1/2."""
    from scipy.stats import binomtest

    return 1.0 if fixed + broken == 0 else float(binomtest(fixed, fixed + broken, 0.5).pvalue)
