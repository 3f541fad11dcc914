import numpy as np
import pytest

from medfilip.evaluation.bootstrap import (
    bootstrap_interval,
    mean_interval,
    paired_difference,
    resample_indices,
)
from medfilip.evaluation.metrics import auc


def test_resamples_reproducible_by_seed():
    a = resample_indices(50, 200, seed=3)
    b = resample_indices(50, 200, seed=3)
    c = resample_indices(50, 200, seed=4)
    assert a.shape == (200, 50)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < 50


def test_interval_of_mean_brackets_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 30)
    large = rng.normal(1.0, 1.0, 3000)
    i_small = mean_interval(small, n_resamples=1000, seed=0)
    i_large = mean_interval(large, n_resamples=1000, seed=0)
    assert i_small.low < i_small.estimate < i_small.high
    assert (i_large.high - i_large.low) < (i_small.high - i_small.low) / 5
    # normal theory: half-width ~ 1.96 / sqrt(n)
    assert abs((i_large.high - i_large.low) / 2 - 1.96 / np.sqrt(3000)) < 0.01


def test_auc_interval_and_paired_difference_of_identical_runs_is_zero():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200).astype(float)
    scores = labels + rng.normal(0, 1.0, 200)
    idx = resample_indices(200, 300, seed=0)
    iv = bootstrap_interval(lambda s, y: auc(s, y), scores, labels, indices=idx)
    assert iv.low < iv.estimate < iv.high
    assert iv.n_resamples == 300
    diff = paired_difference(lambda s, y: auc(s, y), [scores, labels], [scores, labels], indices=idx)
    assert diff.estimate == 0.0 and diff.low == 0.0 and diff.high == 0.0


def test_paired_difference_detects_better_run():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400).astype(float)
    good = labels * 2 + rng.normal(0, 1.0, 400)
    bad = labels * 0.2 + rng.normal(0, 1.0, 400)
    idx = resample_indices(400, 300, seed=0)
    diff = paired_difference(lambda s, y: auc(s, y), [good, labels], [bad, labels], indices=idx)
    assert diff.low > 0.1


def test_undefined_replicates_are_counted_out():
    labels = np.array([1.0] + [0.0] * 9)
    scores = np.linspace(0, 1, 10)
    idx = resample_indices(10, 200, seed=0)
    iv = bootstrap_interval(lambda s, y: auc(s, y), scores, labels, indices=idx)
    assert 0 < iv.n_resamples < 200  # some resamples hold no positive


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        resample_indices(0, 1000, 0)
    with pytest.raises(ValueError, match="same test rows"):
        paired_difference(np.mean, [np.ones(3)], [np.ones(4)], indices=resample_indices(3, 5, 0))
