"""Bootstrap intervals shared by every evaluation table (zero-shot, linear probe, segmentation,
retrieval).

Conventions
-----------
- Resamples are drawn over **test images** (rows), with replacement, from one seeded generator:
  :func:`resample_indices` gives a ``(n_resamples, n)`` integer matrix. The same matrix is used for
  every run scored on the same test rows, so a difference between two runs is a *paired* bootstrap
  (:func:`paired_difference`): both runs see the same resampled images in each replicate.
- A metric is any function ``metric(*arrays) -> float`` of arrays whose first axis is the test
  rows (scores, labels, masks ...). A replicate where the metric is undefined (NaN, e.g. a resample
  with one label value for AUC) is left out of the percentiles; the number of replicates used is
  returned so a table can say so.
- The interval is the percentile interval (2.5th and 97.5th percentile for ``level=0.95``). The
  point estimate is the metric on the full test set, not the mean of the replicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    n_resamples: int  # replicates where the metric was defined

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        """``{prefix: estimate, prefix_low: ..., prefix_high: ...}`` for a table row."""
        return {prefix: self.estimate, f"{prefix}_low": self.low, f"{prefix}_high": self.high}


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` row indices drawn with replacement; the same seed gives the same matrix."""
    if n < 1:
        raise ValueError(f"cannot bootstrap an empty test set (n = {n})")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n), dtype=np.int64)


def _take(arrays: Sequence[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a)[rows] for a in arrays]


def _replicates(metric: Callable[..., float], arrays: Sequence[np.ndarray], indices: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined replicates become NaN and are counted out
        return np.array([float(metric(*_take(arrays, rows))) for rows in indices], dtype=np.float64)


def _interval(estimate: float, values: np.ndarray, level: float) -> Interval:
    values = values[np.isfinite(values)]
    if values.size == 0 or not np.isfinite(estimate):
        return Interval(float(estimate), float("nan"), float("nan"), int(values.size))
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high), int(values.size))


def bootstrap_interval(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    indices: np.ndarray,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """The metric on all rows, and its percentile interval over the resampled rows ``indices``."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("every array must have one entry per test row")
    if indices.size and int(indices.max()) >= n:
        raise ValueError(f"resample indices reach row {int(indices.max())} but there are {n} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = float(metric(*arrays))
    return _interval(estimate, _replicates(metric, arrays, indices), level)


def paired_difference(
    metric: Callable[..., float],
    arrays_a: Sequence[np.ndarray],
    arrays_b: Sequence[np.ndarray],
    *,
    indices: np.ndarray,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """``metric(a) - metric(b)`` on all rows, with the interval of the difference over the *same*
    resamples for both (a paired bootstrap: a and b are two runs scored on the same test rows)."""
    n = len(arrays_a[0])
    if any(len(x) != n for x in (*arrays_a, *arrays_b)):
        raise ValueError("a paired difference needs both runs scored on the same test rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = float(metric(*arrays_a)) - float(metric(*arrays_b))
    diffs = _replicates(metric, arrays_a, indices) - _replicates(metric, arrays_b, indices)
    return _interval(estimate, diffs, level)


def mean_interval(values: np.ndarray, *, n_resamples: int, seed: int, level: float = DEFAULT_LEVEL) -> Interval:
    """Interval of a plain mean of per-row values (e.g. per-image Dice); NaN rows are left out."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    idx = resample_indices(values.size, n_resamples, seed)
    means = values[idx].mean(axis=1)
    return _interval(float(values.mean()), means, level)


def resample_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """``(n_resamples, n)`` float counts: how often each row is drawn in each resample of ``indices``.

    A weighted metric over these counts equals the metric over the resampled rows, and lets the
    vectorised metrics (:func:`medfilip.evaluation.metrics.bootstrap_auc` ...) score every
    replicate in one pass."""
    indices = np.asarray(indices, dtype=np.int64)
    b = indices.shape[0]
    if indices.size and (int(indices.max()) >= n or int(indices.min()) < 0):
        raise ValueError(f"resample indices reach outside 0..{n - 1}")
    flat = (np.arange(b, dtype=np.int64)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def interval_from_replicates(estimate: float, replicates: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """The percentile interval of replicate values computed elsewhere (NaN replicates left out)."""
    return _interval(float(estimate), np.asarray(replicates, dtype=np.float64), level)
