"""Classification metrics of the zero-shot table (paper §IV-B1): AUC, the F1-maximising threshold,
precision, recall and accuracy at it, top-1 accuracy, and the two threshold protocols.

Conventions
-----------
- ``scores``: float (N,) or (N, K), higher = more likely positive. ``labels``: 1 / 0 / NaN with the
  same shape; NaN (not stated) rows are left out of that class's metrics.
- A threshold ``t`` predicts positive when ``score >= t``.
- **Exact F1-max threshold** (:func:`f1_max_threshold`): sort the scores once (descending), take the
  cumulative true/false positives at the *last* position of every distinct score value (so tied
  scores always fall on the same side of the cut), and evaluate
  ``F1 = 2 TP / (2 TP + FP + FN)`` at every cut. The threshold is the distinct score value of the
  best cut; among equal F1 the highest threshold (fewest predicted positives) wins. This is the
  maximum over *every* threshold, O(N log N).
- **Reference grid** (:func:`grid_f1_threshold`): F1 at ``steps`` evenly spaced thresholds (2,000
  by default) over [min, max] of the scores (or [0, 1]); kept for the benchmark. Every grid
  threshold selects the same positives as some cut of the exact search (or none), so the exact F1
  is never lower. For the record: MedKLIP's ChestX-ray14 test takes the F1-max threshold from
  sklearn's ``precision_recall_curve`` (exact too) but then measures accuracy with ``score > t``,
  one cut below the F1 it reports; KAD picks the MCC-maximising threshold by trying every sample's
  score (O(N²)) and reports F1 and accuracy there. Both choose the threshold on the test set.
- **Protocols**: ``test`` (the paper, MedKLIP, KAD): the threshold is chosen on the test set it is
  scored on, an optimistic number. ``validate``: the threshold is chosen on the validate split
  and applied unchanged to test, the honest number. AUC does not depend on a threshold and is the
  same under both.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

PROTOCOLS = ("test", "validate")
REFERENCE_GRID_STEPS = 2000


class MetricWarning(UserWarning):
    """A metric that is undefined for the data given (one label value, no validate split ...)."""


@dataclass(frozen=True)
class ThresholdResult:
    """The operating point of one class: predict positive when ``score >= threshold``."""

    threshold: float
    f1: float
    precision: float
    recall: float
    accuracy: float
    n_pos: int
    n: int


@dataclass(frozen=True)
class ClassMetrics:
    """One class under one protocol (a row of zeroshot_per_class.csv, less run/dataset/class)."""

    protocol: str
    auc: float
    f1: float
    precision: float
    recall: float
    accuracy: float
    threshold: float
    n_pos: int
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 labels of one class with NaN labels (and NaN scores) left out."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    keep = ~np.isnan(labels) & ~np.isnan(scores)
    y = labels[keep]
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 1, 0 or NaN; found {sorted(set(np.unique(y)) - {0.0, 1.0})[:5]}")
    return scores[keep], y.astype(bool)


def _nan_result(n_pos: int, n: int) -> ThresholdResult:
    return ThresholdResult(np.nan, np.nan, np.nan, np.nan, np.nan, n_pos, n)


def _f1(tp: np.ndarray | float, fp: np.ndarray | float, n_pos: int) -> np.ndarray | float:
    # 2TP / (2TP + FP + FN) with FN = P - TP; the denominator is >= P > 0
    return 2.0 * tp / (tp + fp + n_pos)


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> ThresholdResult:
    """The threshold that maximises F1, computed exactly from the sorted scores (see module doc).

    NaN (with a :class:`MetricWarning`) when the class has no positive label: F1 is then undefined.
    """
    s, y = _binary(scores, labels)
    n, n_pos = int(y.size), int(y.sum())
    if n_pos == 0:
        warnings.warn(f"F1 undefined: no positive label among {n} images", MetricWarning, stacklevel=2)
        return _nan_result(n_pos, n)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # last index of each run of equal scores: a cut there keeps ties together
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y, dtype=np.int64)[ends]
    fp = (ends + 1) - tp
    f1 = _f1(tp.astype(np.float64), fp.astype(np.float64), n_pos)
    best = int(np.argmax(f1))  # first maximum = highest threshold among ties
    tp_b, fp_b = int(tp[best]), int(fp[best])
    tn_b = (n - n_pos) - fp_b
    return ThresholdResult(
        threshold=float(s[ends[best]]),
        f1=float(f1[best]),
        precision=tp_b / (tp_b + fp_b),
        recall=tp_b / n_pos,
        accuracy=(tp_b + tn_b) / n,
        n_pos=n_pos,
        n=n,
    )


def metrics_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> ThresholdResult:
    """F1, precision, recall and accuracy of ``score >= threshold`` (NaN labels left out).

    Precision is 0 when nothing is predicted positive (then F1 is 0 too); NaN when there is no
    positive label or the threshold itself is NaN.
    """
    s, y = _binary(scores, labels)
    n, n_pos = int(y.size), int(y.sum())
    if n_pos == 0 or threshold is None or np.isnan(threshold):
        return _nan_result(n_pos, n)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    tn = (n - n_pos) - fp
    return ThresholdResult(
        threshold=float(threshold),
        f1=float(_f1(float(tp), float(fp), n_pos)),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / n_pos,
        accuracy=(tp + tn) / n,
        n_pos=n_pos,
        n=n,
    )


def grid_f1_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    steps: int = REFERENCE_GRID_STEPS,
    span: str = "scores",
) -> ThresholdResult:
    """The reference approach: F1 at ``steps`` evenly spaced thresholds, the best one kept.

    ``span="scores"`` spaces them over [min, max] of the scores (right for cosine similarities,
    which can be negative); ``span="unit"`` over [0, 1] (probabilities). One pass over the scores
    per threshold, as a Python loop over the grid: for the benchmark, not for the pipeline.
    """
    s, y = _binary(scores, labels)
    n, n_pos = int(y.size), int(y.sum())
    if n_pos == 0:
        return _nan_result(n_pos, n)
    if span == "scores":
        low, high = float(s.min()), float(s.max())
    elif span == "unit":
        low, high = 0.0, 1.0
    else:
        raise ValueError(f"span must be 'scores' or 'unit', got {span!r}")
    best_f1, best_t, best_tp, best_fp = -1.0, np.nan, 0, 0
    for t in np.linspace(low, high, steps):
        pred = s >= t
        tp = int(np.count_nonzero(pred & y))
        fp = int(np.count_nonzero(pred) - tp)
        f1 = float(_f1(float(tp), float(fp), n_pos))
        if f1 > best_f1:
            best_f1, best_t, best_tp, best_fp = f1, float(t), tp, fp
    tn = (n - n_pos) - best_fp
    return ThresholdResult(
        threshold=best_t,
        f1=best_f1,
        precision=best_tp / (best_tp + best_fp) if best_tp + best_fp else 0.0,
        recall=best_tp / n_pos,
        accuracy=(best_tp + tn) / n,
        n_pos=n_pos,
        n=n,
    )


def auc(scores: np.ndarray, labels: np.ndarray, name: str = "class") -> float:
    """ROC AUC of one class (sklearn), NaN labels left out; NaN with a warning when only one label value is left."""
    from sklearn.metrics import roc_auc_score

    s, y = _binary(scores, labels)
    if y.size == 0 or y.all() or not y.any():
        warnings.warn(
            f"AUC undefined for {name}: {int(y.sum())} positive and {int((~y).sum())} negative labels",
            MetricWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(roc_auc_score(y, s))


def per_class_auc(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None) -> np.ndarray:
    """AUC of each column of (N, K) ``scores`` against (N, K) ``labels``; NaN where undefined."""
    scores, labels = _matrix(scores, labels)
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(scores.shape[1])]
    return np.array([auc(scores[:, k], labels[:, k], names[k]) for k in range(scores.shape[1])])


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose highest-scoring class is a positive one (single-label sets).

    Images with no positive label are left out; NaN when none is left.
    """
    scores, labels = _matrix(scores, labels)
    has_pos = np.nansum(labels, axis=1) > 0
    if not has_pos.any():
        return float("nan")
    pick = np.argmax(scores[has_pos], axis=1)
    return float(np.mean(labels[has_pos][np.arange(pick.size), pick] == 1.0))


def _matrix(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels.reshape(-1, 1)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, K)")
    return scores, labels


def class_metrics(
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    *,
    protocol: str = "test",
    validate_scores: np.ndarray | None = None,
    validate_labels: np.ndarray | None = None,
    name: str = "class",
) -> ClassMetrics:
    """Metrics of one class on the test images under ``protocol`` (``test`` or ``validate``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    with warnings.catch_warnings():
        # the AUC warning is raised once, by the caller's per-class loop; not again per protocol
        warnings.simplefilter("ignore", MetricWarning)
        area = auc(test_scores, test_labels, name)
        if protocol == "test":
            point = f1_max_threshold(test_scores, test_labels)
        else:
            if validate_scores is None or validate_labels is None:
                chosen = float("nan")
            else:
                chosen = f1_max_threshold(validate_scores, validate_labels).threshold
            point = metrics_at_threshold(test_scores, test_labels, chosen)
    return ClassMetrics(
        protocol=protocol,
        auc=area,
        f1=point.f1,
        precision=point.precision,
        recall=point.recall,
        accuracy=point.accuracy,
        threshold=point.threshold,
        n_pos=point.n_pos,
        n=point.n,
    )


def evaluate_scores(
    class_names: Sequence[str],
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    *,
    validate_scores: np.ndarray | None = None,
    validate_labels: np.ndarray | None = None,
    protocols: Iterable[str] = PROTOCOLS,
    set_name: str = "set",
) -> list[dict]:
    """Per-class rows (class, protocol, auc, f1, precision, recall, accuracy, threshold, n_pos, n) of a set.

    A class whose AUC is undefined on test (one label value) is warned about once. The validate
    protocol needs validate scores; without them its rows are NaN (and a warning says so).
    """
    test_scores, test_labels = _matrix(test_scores, test_labels)
    names = list(class_names)
    if test_scores.shape[1] != len(names):
        raise ValueError(f"{set_name}: {test_scores.shape[1]} score columns for {len(names)} classes")
    protocols = list(protocols)
    has_validate = validate_scores is not None and validate_labels is not None and len(validate_scores) > 0
    if has_validate:
        validate_scores, validate_labels = _matrix(validate_scores, validate_labels)
    elif "validate" in protocols:
        warnings.warn(f"{set_name}: no validate images; the validate protocol is NaN", MetricWarning, stacklevel=2)
    rows = []
    for k, name in enumerate(names):
        y = test_labels[:, k]
        n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
        if n_pos == 0 or n_neg == 0:
            warnings.warn(
                f"{set_name}/{name}: {n_pos} positive and {n_neg} negative test labels; AUC and F1 may be NaN",
                MetricWarning,
                stacklevel=2,
            )
        for protocol in protocols:
            m = class_metrics(
                test_scores[:, k],
                y,
                protocol=protocol,
                validate_scores=validate_scores[:, k] if has_validate else None,
                validate_labels=validate_labels[:, k] if has_validate else None,
                name=f"{set_name}/{name}",
            )
            rows.append({"class": name, **m.as_dict()})
    return rows


def mean_ignoring_nan(values: Iterable[float]) -> float:
    """Mean of the defined values; NaN when none is."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


# -- every bootstrap replicate at once ------------------------------------------------------------
# ``weights`` is a (B, n) matrix of resample counts (medfilip.evaluation.bootstrap.resample_weights):
# row b says how often each test image is drawn in replicate b. A metric weighted by row b equals the
# metric on the resampled images, so all B replicates come from one sort of the scores, one sparse
# product (images -> runs of equal score, split by label) and a few cumulative sums, O(B n) (the
# reference, one metric call per replicate, is the test's brute force). Passing the transpose of a
# C-contiguous (n, B) array (``w_nb.T``) saves a copy.
def _weighted_groups(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray):
    """Scores sorted descending into G runs of equal value; per replicate the positive and negative
    weight of each run, (G, B) each, and the run's score (G,)."""
    import scipy.sparse as sparse

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if weights.shape[1] != scores.size:
        raise ValueError(f"weights have {weights.shape[1]} columns for {scores.size} scores")
    keep = np.flatnonzero(~np.isnan(labels) & ~np.isnan(scores))
    s, y = scores[keep], labels[keep]
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 1, 0 or NaN; found {sorted(set(np.unique(y)) - {0.0, 1.0})[:5]}")
    b = weights.shape[0]
    if s.size == 0:
        z = np.zeros((0, b))
        return z, z, s
    order = np.argsort(-s, kind="stable")
    first = np.r_[True, s[order][1:] != s[order][:-1]]
    group = np.empty(s.size, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    g = int(first.sum())
    row = group + g * (y == 0)  # positives in rows 0..G-1, negatives in G..2G-1
    indicator = sparse.csr_matrix((np.ones(s.size), (row, keep)), shape=(2 * g, scores.size))
    sums = indicator @ np.ascontiguousarray(weights.T)  # (2G, B)
    return sums[:g], sums[g:], s[order][first]


def _auc_from_groups(gp: np.ndarray, gn: np.ndarray, p: np.ndarray, n: np.ndarray, cum_n: np.ndarray) -> np.ndarray:
    below = n[None, :] - cum_n  # negatives scored strictly lower than each run
    with np.errstate(invalid="ignore", divide="ignore"):
        area = (gp * (below + 0.5 * gn)).sum(axis=0) / (p * n)
    return np.where((p > 0) & (n > 0), area, np.nan)


def _f1_max_from_groups(
    gp: np.ndarray, p: np.ndarray, n: np.ndarray, cum_n: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if gp.shape[0] == 0:
        nan = np.full(gp.shape[1], np.nan)
        return nan, nan.copy()
    tp = np.cumsum(gp, axis=0)
    f1 = 2.0 * tp / np.maximum(tp + cum_n + p[None, :], 1e-300)
    best = np.argmax(f1, axis=0)  # first maximum = highest threshold, as f1_max_threshold
    cols = np.arange(f1.shape[1])
    tp_b, fp_b = tp[best, cols], cum_n[best, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (tp_b + n - fp_b) / (p + n)
    ok = p > 0
    return np.where(ok, f1[best, cols], np.nan), np.where(ok, acc, np.nan)


def _at_threshold_from_groups(gp, gn, values, p, n, threshold) -> tuple[np.ndarray, np.ndarray]:
    if threshold is None or np.isnan(threshold):
        nan = np.full(gp.shape[1], np.nan)
        return nan, nan.copy()
    pred = values >= threshold
    tp, fp = gp[pred].sum(axis=0), gn[pred].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2.0 * tp / (tp + fp + p)
        acc = (tp + n - fp) / (p + n)
    ok = p > 0
    return np.where(ok, f1, np.nan), np.where(ok, acc, np.nan)


def bootstrap_class(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, f1_max: bool = True, threshold: float | None = None
) -> dict[str, np.ndarray]:
    """Every replicate metric of one class from one grouping of its scores: ``auc``; with
    ``f1_max``, ``f1`` and ``acc`` at each replicate's F1-maximising threshold; with a
    ``threshold``, ``f1_at`` and ``acc_at`` there. Each (B,), as the functions below."""
    gp, gn, values = _weighted_groups(scores, labels, weights)
    p, n = gp.sum(axis=0), gn.sum(axis=0)
    cum_n = np.cumsum(gn, axis=0)
    out = {"auc": _auc_from_groups(gp, gn, p, n, cum_n)}
    if f1_max:
        out["f1"], out["acc"] = _f1_max_from_groups(gp, p, n, cum_n)
    if threshold is not None:
        out["f1_at"], out["acc_at"] = _at_threshold_from_groups(gp, gn, values, p, n, threshold)
    return out


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) ROC AUC of one class under each row of resample weights (ties count half); NaN where a
    replicate has no positive or no negative image."""
    return bootstrap_class(scores, labels, weights, f1_max=False)["auc"]


def bootstrap_f1_max(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) F1 and accuracy at the F1-maximising threshold of each replicate (the ``test`` protocol:
    the threshold is chosen again on every resample, as :func:`f1_max_threshold` on it would)."""
    out = bootstrap_class(scores, labels, weights)
    return out["f1"], out["acc"]


def bootstrap_at_threshold(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(B,) F1 and accuracy of ``score >= threshold`` (a threshold fixed beforehand: the ``validate``
    protocol); NaN where a replicate has no positive or the threshold is NaN."""
    gp, gn, values = _weighted_groups(scores, labels, weights)
    return _at_threshold_from_groups(gp, gn, values, gp.sum(axis=0), gn.sum(axis=0), threshold)


def bootstrap_top1(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) top-1 accuracy (:func:`top1_accuracy`) under each row of resample weights."""
    scores, labels = _matrix(scores, labels)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    has_pos = np.nansum(labels, axis=1) > 0
    pick = np.argmax(scores, axis=1)
    correct = (labels[np.arange(len(pick)), pick] == 1.0) & has_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (weights @ correct.astype(np.float64)) / (weights @ has_pos.astype(np.float64))
    return out
