"""Aggregation across seeds: interquartile mean and bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end).

    >>> float(iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0, 4.0, 5.0, 6.0])))
    3.5
    """
    values = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = values.shape[axis]
    cut = int(np.floor(0.25 * n))
    kept = np.take(values, np.arange(cut, n - cut), axis=axis)
    return kept.mean(axis=axis)


def bootstrap_ci(
    values: np.ndarray,
    statistic=iqm,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI over runs (axis 0) of ``statistic``; also works per column.

    With one run the interval collapses to that run's value.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(num_resamples, n))
    stats = np.stack([statistic(values[i], axis=0) for i in idx])
    alpha = (1.0 - confidence) / 2.0
    return np.quantile(stats, alpha, axis=0), np.quantile(stats, 1.0 - alpha, axis=0)
