"""Patient-level splits that are stable under re-runs and corpus growth."""

from __future__ import annotations

import hashlib


def unit_interval(key: str, seed: int) -> float:
    """A uniform number in [0, 1) determined by (seed, key) alone."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(subject_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """Seeded split by patient: every report of a patient lands in the same split."""
    u = unit_interval(subject_id, seed)
    train, validate, _ = fractions
    if u < train:
        return "train"
    if u < train + validate:
        return "validate"
    return "test"


def shard_of(report_id: str, n_shards: int) -> int:
    """The shard a report always lands in, whatever else is in the corpus."""
    digest = hashlib.sha256(report_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_shards
