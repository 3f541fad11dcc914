"""Which images a twin (or a read of a real dataset) keeps, and which split each goes to.

The same policy runs on the real label files (to choose a twin's images) and on a real dataset's
labels (to choose its evaluation images), so a twin and its real dataset hold alike samples:

- single-label sets (RSNA, SIIM, COVID): a simple random sample, which keeps the source's class
  proportions (RSNA 22.5% pneumonia, SIIM 22.2% pneumothorax; COVID: the database's folder sizes);
- multi-label sets (ChestX-ray14, VinBigData), where a random sample would hold a handful of the
  rarer classes: half the images are drawn one at a time for the class with the fewest positives so
  far (images with boxes first, so findings sit in radiologists' boxes), the other half from images
  without any finding.

Splits: a seeded shuffle of the kept images; the first n_validate go to validate, the rest to test.
"""

from __future__ import annotations

import hashlib

import numpy as np

ABNORMAL_FRACTION = 0.5


def derived_seed(seed: int, *parts: str) -> int:
    """A 32-bit seed from the config seed and names (dataset, image id): stable across runs and processes."""
    digest = hashlib.sha256("\x00".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def sample_random(n_items: int, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded simple random sample of min(n, n_items) items, in source order."""
    rng = np.random.default_rng(seed)
    if n >= n_items:
        return np.arange(n_items)
    return np.sort(rng.choice(n_items, size=n, replace=False))


def sample_balanced(
    positives: np.ndarray,
    n: int,
    seed: int,
    *,
    has_box: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    abnormal_fraction: float = ABNORMAL_FRACTION,
) -> np.ndarray:
    """Indices (sorted) of a class-balanced multi-label sample.

    positives: bool (N, K), an image's positive classes among the evaluated ones. Until
    ``abnormal_fraction * n`` images with a positive are drawn, the next image comes from the class
    with the fewest positives drawn so far (ties: the rarer class in the source) — an image counts for
    all its classes — boxed images first, else at random. Then images with no positive fill the sample
    (``candidates`` (N,) bool, if given, limits that pool, e.g. to images without any finding), and
    abnormal ones if the normal pool runs out.
    """
    positives = np.asarray(positives, dtype=bool)
    n_items, n_classes = positives.shape
    if n >= n_items:
        return np.arange(n_items)
    rng = np.random.default_rng(seed)
    allowed = np.ones(n_items, bool) if candidates is None else np.asarray(candidates, bool)
    boxed = np.zeros(n_items, bool) if has_box is None else np.asarray(has_box, bool)
    priority = rng.random(n_items) - boxed.astype(float)  # boxed images first within a class
    pools = [np.flatnonzero(positives[:, k]) for k in range(n_classes)]
    pools = [pool[np.argsort(priority[pool], kind="stable")] for pool in pools]
    cursor = [0] * n_classes
    source_counts = positives.sum(axis=0)
    drawn = np.zeros(n_classes, np.int64)
    chosen = np.zeros(n_items, bool)
    n_abnormal, target = 0, min(n, round(abnormal_fraction * n))
    while n_abnormal < target:
        for k in range(n_classes):  # skip what other classes already drew
            while cursor[k] < len(pools[k]) and chosen[pools[k][cursor[k]]]:
                cursor[k] += 1
        open_classes = [k for k in range(n_classes) if cursor[k] < len(pools[k])]
        if not open_classes:
            break
        k = min(open_classes, key=lambda c: (drawn[c], source_counts[c], c))
        pick = pools[k][cursor[k]]
        chosen[pick] = True
        drawn += positives[pick]
        n_abnormal += 1
    normal_pool = np.flatnonzero(~positives.any(axis=1) & allowed & ~chosen)
    room = n - int(chosen.sum())
    chosen[rng.permutation(normal_pool)[:room]] = True
    room = n - int(chosen.sum())
    if room > 0:
        rest = np.flatnonzero(~chosen)
        chosen[rng.permutation(rest)[:room]] = True
    return np.flatnonzero(chosen)


def assign_splits(n_items: int, n_test: int, n_validate: int, seed: int) -> np.ndarray:
    """Split names (object array, len n_items) for kept images: n_validate 'validate', the rest 'test'.

    When fewer images are kept than asked for, validate and test shrink in proportion."""
    total = n_test + n_validate
    n_val = n_validate if n_items >= total else round(n_items * n_validate / max(total, 1))
    order = np.random.default_rng(seed).permutation(n_items)
    splits = np.full(n_items, "test", dtype=object)
    splits[order[:n_val]] = "validate"
    return splits


def allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """n split across classes in proportion to counts (largest remainder), at least 1 each when n allows."""
    total = sum(counts.values())
    exact = {k: n * c / total for k, c in counts.items()}
    out = {k: int(np.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: n - sum(out.values())]:
        out[k] += 1
    for k in list(out):
        if out[k] == 0 and n >= len(out):
            donor = max(out, key=out.get)
            out[donor] -= 1
            out[k] = 1
    return out
