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
Train (``n_train``, for the linear probe and segmentation): drawn *after* validate and test, by the
same policy, from the images left over — and, where the label file gives a patient id (ChestX-ray14's
``Patient ID``), from patients with no image in validate or test — so the evaluation images do not
change when ``n_train`` does, and no patient is on both sides (:func:`sample_splits`).
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


def train_candidates(n_items: int, held_out: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Row numbers (ascending) an image of the train split may come from: not held out (validate /
    test) and, when ``groups`` (N,) gives each row's patient, of a patient with no held-out image."""
    free = np.ones(n_items, bool)
    free[np.asarray(held_out, dtype=np.int64)] = False
    if groups is not None:
        groups = np.asarray(groups)
        free &= ~np.isin(groups, groups[np.asarray(held_out, dtype=np.int64)])
    return np.flatnonzero(free)


def sample_splits(
    n_items: int,
    n_test: int,
    n_validate: int,
    n_train: int,
    seed: int,
    dataset: str,
    sampler,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers, split names) of the kept images: validate + test first (``sampler`` over every
    row, then :func:`assign_splits`), then ``n_train`` train images sampled from
    :func:`train_candidates` (patient-disjoint when ``groups`` is given).

    ``sampler(pool, n, seed)`` returns the chosen row numbers, a subset of ``pool`` (row numbers).
    Seeds derive from ``seed`` and ``dataset``; the held-out sample and split use the same seeds as
    before train splits existed, so adding train images leaves validate and test as they were."""
    everything = np.arange(n_items)
    held_out = np.asarray(
        sampler(everything, n_test + n_validate, derived_seed(seed, dataset, "sample")), dtype=np.int64
    )
    splits = assign_splits(len(held_out), n_test, n_validate, derived_seed(seed, dataset, "split"))
    if n_train <= 0:
        return held_out, splits
    pool = train_candidates(n_items, held_out, groups)
    train = (
        np.asarray(sampler(pool, n_train, derived_seed(seed, dataset, "train")), dtype=np.int64)
        if pool.size
        else np.zeros(0, np.int64)
    )
    return np.concatenate([held_out, train]), np.concatenate([splits, np.full(train.size, "train", dtype=object)])


def random_sampler(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """:func:`sample_random` over the rows ``pool`` (a ``sampler`` for :func:`sample_splits`)."""
    pool = np.asarray(pool, dtype=np.int64)
    return pool[sample_random(pool.size, n, seed)]


def balanced_sampler(positives: np.ndarray, has_box: np.ndarray | None, candidates: np.ndarray | None):
    """:func:`sample_balanced` over the rows ``pool`` (a ``sampler`` for :func:`sample_splits`)."""

    def sampler(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
        pool = np.asarray(pool, dtype=np.int64)
        if pool.size == 0:
            return pool
        return pool[
            sample_balanced(
                np.asarray(positives, bool)[pool],
                n,
                seed,
                has_box=None if has_box is None else np.asarray(has_box, bool)[pool],
                candidates=None if candidates is None else np.asarray(candidates, bool)[pool],
            )
        ]

    return sampler


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
