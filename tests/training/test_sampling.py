from __future__ import annotations

import numpy as np
import pytest

from medfilip.training.sampling import sample_pairs

IDS = [f"s{50_000_000 + i}" for i in range(10_000)]


def test_a_seeded_uniform_sample_not_the_first_ids():
    idx = sample_pairs(IDS, 1_000, seed=0)
    assert len(idx) == 1_000 == len(set(idx.tolist()))
    assert list(idx) == sorted(idx)
    assert idx.max() > 9_000 and idx.min() < 100  # spread over the whole id range
    # uniform: each tenth of the ids gets ~100 of the 1,000 (binomial sd ~9.5: 5 sd either side)
    counts = np.bincount(idx // 1_000, minlength=10)
    assert counts.min() > 50 and counts.max() < 150
    assert not np.array_equal(idx, np.arange(1_000))


def test_same_seed_same_pairs_whatever_the_order_and_nested():
    a = {IDS[i] for i in sample_pairs(IDS, 500, seed=3)}
    shuffled = list(np.random.default_rng(1).permutation(IDS))
    b = {shuffled[i] for i in sample_pairs(shuffled, 500, seed=3)}
    assert a == b
    assert a <= {IDS[i] for i in sample_pairs(IDS, 800, seed=3)}  # a larger sample keeps the smaller
    assert a != {IDS[i] for i in sample_pairs(IDS, 500, seed=4)}


def test_all_pairs_and_errors():
    assert list(sample_pairs(IDS[:5], None)) == [0, 1, 2, 3, 4]
    assert list(sample_pairs(IDS[:5], 10)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="max_pairs = 0"):
        sample_pairs(IDS, 0)
    with pytest.raises(ValueError, match="unique"):
        sample_pairs(["a", "a", "b"], 1)
