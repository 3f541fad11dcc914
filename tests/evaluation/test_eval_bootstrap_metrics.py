"""The vectorised bootstrap metrics (every replicate in one pass) against the brute force: the
scalar metric on the explicitly resampled rows, replicate by replicate."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medfilip.evaluation.bootstrap import interval_from_replicates, resample_indices, resample_weights
from medfilip.evaluation.metrics import (
    auc,
    bootstrap_at_threshold,
    bootstrap_auc,
    bootstrap_f1_max,
    bootstrap_top1,
    f1_max_threshold,
    metrics_at_threshold,
    top1_accuracy,
)


def data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(y * 0.4 + rng.random(n), 1)  # rounded: many ties
    y[rng.random(n) < 0.1] = np.nan  # unstated labels are left out
    return s, y


def brute(fn, s, y, idx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([fn(s[r], y[r]) for r in idx], dtype=float)


def test_resample_weights_count_draws():
    idx = resample_indices(7, 20, seed=3)
    w = resample_weights(idx, 7)
    assert w.shape == (20, 7) and (w.sum(axis=1) == 7).all()
    assert w[4].tolist() == np.bincount(idx[4], minlength=7).tolist()
    with pytest.raises(ValueError, match="outside"):
        resample_weights(idx, 5)


def test_weights_of_one_give_the_point_estimates():
    s, y = data()
    ones = np.ones((1, s.size))
    assert bootstrap_auc(s, y, ones)[0] == pytest.approx(auc(s, y))
    f1, acc = bootstrap_f1_max(s, y, ones)
    point = f1_max_threshold(s, y)
    assert (f1[0], acc[0]) == pytest.approx((point.f1, point.accuracy))
    f1, acc = bootstrap_at_threshold(s, y, ones, 0.7)
    at = metrics_at_threshold(s, y, 0.7)
    assert (f1[0], acc[0]) == pytest.approx((at.f1, at.accuracy))


@pytest.mark.parametrize("seed", [0, 5])
def test_replicates_equal_brute_force(seed):
    s, y = data(n=30, seed=seed)
    idx = resample_indices(s.size, 200, seed=seed)
    w = resample_weights(idx, s.size)
    np.testing.assert_allclose(bootstrap_auc(s, y, w), brute(auc, s, y, idx), equal_nan=True)
    f1, acc = bootstrap_f1_max(s, y, w)
    np.testing.assert_allclose(f1, brute(lambda a, b: f1_max_threshold(a, b).f1, s, y, idx), equal_nan=True)
    np.testing.assert_allclose(acc, brute(lambda a, b: f1_max_threshold(a, b).accuracy, s, y, idx), equal_nan=True)
    f1, acc = bootstrap_at_threshold(s, y, w, 0.9)
    np.testing.assert_allclose(f1, brute(lambda a, b: metrics_at_threshold(a, b, 0.9).f1, s, y, idx), equal_nan=True)
    np.testing.assert_allclose(
        acc, brute(lambda a, b: metrics_at_threshold(a, b, 0.9).accuracy, s, y, idx), equal_nan=True
    )
    assert np.isnan(bootstrap_at_threshold(s, y, w, float("nan"))[0]).all()


def test_undefined_replicates_are_nan():
    s = np.array([0.1, 0.9, 0.5])
    y = np.array([0.0, 1.0, 0.0])
    idx = np.array([[0, 2, 0], [0, 1, 2]])  # the first replicate has no positive
    a = bootstrap_auc(s, y, resample_weights(idx, 3))
    assert np.isnan(a[0]) and a[1] == 1.0
    iv = interval_from_replicates(1.0, a)
    assert iv.n_resamples == 1 and iv.low == iv.high == 1.0


def test_top1_replicates():
    rng = np.random.default_rng(2)
    scores = rng.random((25, 3))
    labels = np.eye(3)[rng.integers(0, 3, 25)]
    labels[3] = 0  # no positive: left out
    idx = resample_indices(25, 100, seed=0)
    expected = np.array([top1_accuracy(scores[r], labels[r]) for r in idx])
    np.testing.assert_allclose(bootstrap_top1(scores, labels, resample_weights(idx, 25)), expected)
