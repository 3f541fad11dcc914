"""``training.max_pairs``: a seeded random sample of the training pairs, not the first ids.

``reports.limit`` keeps the first N report ids, which at MIMIC scale is a biased sample (ids
follow patient and study numbers, i.e. time and site). This draws ``max_pairs`` pairs uniformly
at random with a seed, independent of the order the pairs arrive in, so the same config always
trains on the same pairs and a larger ``max_pairs`` keeps every pair of a smaller one (the draw is
a prefix of one seeded permutation).

Hook (medfilip/training/data.py, where the (image, report) training pairs are built)::

    keep = sample_pairs(pair_ids, cfg.training.max_pairs, seed=cfg.training.seed)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def _key(pair_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{pair_id}".encode(), digest_size=8).digest(), "little")


def sample_pairs(pair_ids: Sequence[str], max_pairs: int | None, seed: int = 0) -> np.ndarray:
    """Indices into ``pair_ids`` of a seeded uniform sample of ``max_pairs`` (all when None or larger),
    in their original order. Each id's rank is a hash of (seed, id): order-independent and nested."""
    n = len(pair_ids)
    if max_pairs is None or max_pairs >= n:
        return np.arange(n)
    if max_pairs < 1:
        raise ValueError(f"training.max_pairs = {max_pairs}: must be >= 1 (or null for every pair)")
    if len(set(pair_ids)) != n:
        raise ValueError("sample_pairs: pair ids must be unique")
    keys = np.fromiter((_key(p, seed) for p in pair_ids), dtype=np.uint64, count=n)
    chosen = np.argpartition(keys, max_pairs - 1)[:max_pairs]
    return np.sort(chosen)
