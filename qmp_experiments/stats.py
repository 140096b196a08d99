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
    return percentile_interval(np.stack([statistic(values[i], axis=0) for i in idx]), confidence)


def percentile_interval(resampled: np.ndarray, confidence: float):
    """The central ``confidence`` interval of bootstrap statistics (axis 0)."""
    alpha = (1.0 - confidence) / 2.0
    return np.quantile(resampled, alpha, axis=0), np.quantile(resampled, 1.0 - alpha, axis=0)


def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic=None,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """95% CI of an aggregate over a ``(runs, tasks)`` score matrix, resampling runs with
    replacement independently within each task (rliable's stratified bootstrap).

    The default statistic is the IQM of all run x task scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (runs, tasks), got shape {scores.shape}")
    statistic = statistic or (lambda m: float(iqm(m.reshape(-1))))
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, runs, size=(num_resamples, runs, tasks))
    low, high = percentile_interval(
        np.array([statistic(scores[r, np.arange(tasks)]) for r in rows]), confidence
    )
    return float(low), float(high)


def steps_to_threshold(steps: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """The first evaluation step at which ``curve`` reaches ``threshold`` (nan if never).

    >>> steps_to_threshold(np.array([10, 20, 30]), np.array([0.2, 0.6, 0.9]), 0.5)
    20.0
    """
    reached = np.flatnonzero(np.asarray(curve) >= threshold)
    return float(np.asarray(steps)[reached[0]]) if reached.size else float("nan")


def normalized_auc(steps: np.ndarray, curve: np.ndarray) -> float:
    """Area under the curve over [first, last] evaluation step divided by that span (trapezoids):
    the curve's mean level, 1.0 for a curve at 1 throughout.

    >>> normalized_auc(np.array([0, 10]), np.array([0.0, 1.0]))
    0.5
    """
    steps, curve = np.asarray(steps, dtype=np.float64), np.asarray(curve, dtype=np.float64)
    if len(steps) < 2:
        return float(curve[0]) if len(curve) else float("nan")
    area = np.sum((curve[1:] + curve[:-1]) / 2.0 * np.diff(steps))
    return float(area / (steps[-1] - steps[0]))
