"""Metrics of the zero-shot table: exact F1-max threshold, grid reference, AUC, accuracy, protocols, top-1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medfilip.evaluation.metrics import (
    MetricWarning,
    class_metrics,
    evaluate_scores,
    f1_max_threshold,
    grid_f1_threshold,
    metrics_at_threshold,
    per_class_auc,
    top1_accuracy,
)


def brute_force_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best F1 over every candidate threshold (each distinct score, plus one above the maximum), and its threshold."""
    best, best_t = -1.0, np.nan
    for t in sorted(set(scores.tolist()) | {np.inf}, reverse=True):
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        fp = np.sum(pred & (labels == 0))
        f1 = 2.0 * tp / (tp + fp + np.sum(labels == 1))
        if f1 > best:
            best, best_t = f1, t
    return float(best), float(best_t)


def random_case(rng: np.random.Generator, n: int, ties: bool):
    labels = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(float)
    labels[rng.integers(n)] = 1.0  # at least one positive
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if ties:  # few distinct values: many tied scores across both labels
        scores = np.round(scores * 2) / 2
    return scores, labels


@pytest.mark.parametrize("ties", [False, True])
def test_exact_threshold_matches_brute_force(ties: bool):
    rng = np.random.default_rng(7 + ties)
    for _ in range(200):
        scores, labels = random_case(rng, int(rng.integers(2, 60)), ties)
        got = f1_max_threshold(scores, labels)
        want_f1, want_t = brute_force_best_f1(scores, labels)
        assert got.f1 == want_f1
        assert got.threshold == want_t  # same tie rule: the highest threshold reaching the best F1
        pred = scores >= got.threshold
        assert got.f1 == pytest.approx(f1_score(labels, pred))
        assert got.precision == pytest.approx(np.sum(pred & (labels == 1)) / pred.sum())
        assert got.recall == pytest.approx(np.sum(pred & (labels == 1)) / labels.sum())
        assert got.accuracy == pytest.approx(np.mean(pred == (labels == 1)))
        # the threshold is one of the scores, and tied scores land on the same side
        assert got.threshold in set(scores.tolist())


def test_all_equal_scores():
    labels = np.array([1, 0, 0, 1, 0], dtype=float)
    got = f1_max_threshold(np.full(5, 0.3), labels)
    assert got.threshold == 0.3
    assert got.f1 == pytest.approx(2 * 2 / (2 * 2 + 3 + 0))  # everything predicted positive
    assert got.f1 == brute_force_best_f1(np.full(5, 0.3), labels)[0]
    assert got.accuracy == pytest.approx(0.4)


def test_ties_straddling_the_cut_are_kept_together():
    # 0.5 holds a positive and a negative: a cut between them is not a threshold anyone can apply
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0], dtype=float)
    got = f1_max_threshold(scores, labels)
    assert got.threshold == 0.5  # F1 = 0.8 (2 TP, 1 FP) beats 0.667 at 0.9
    assert (got.f1, got.precision, got.recall) == pytest.approx((0.8, 2 / 3, 1.0))


def test_accuracy_at_threshold_by_hand():
    scores = np.array([0.95, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    got = f1_max_threshold(scores, labels)
    # cut at 0.6: TP 3, FP 1, FN 1 -> F1 = 6/8 = 0.75; predicted 1,1,1,1,0,0,0,0 vs labels: 6 of 8 right
    assert got.threshold == 0.6
    assert got.f1 == pytest.approx(0.75)
    assert got.accuracy == pytest.approx(6 / 8)
    at = metrics_at_threshold(scores, labels, 0.35)  # 1,1,1,1,1,0,0,0: TP 3 FP 2 TN 2 -> 5/8
    assert at.accuracy == pytest.approx(5 / 8)
    assert at.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))


def test_exact_f1_never_below_the_grid():
    rng = np.random.default_rng(3)
    for trial in range(60):
        scores, labels = random_case(rng, 300, ties=trial % 3 == 0)
        exact = f1_max_threshold(scores, labels)
        for span in ("scores", "unit"):
            grid = grid_f1_threshold(scores, labels, steps=2000, span=span)
            assert exact.f1 >= grid.f1
        # with cosine-like scores in [-1, 1] the [0, 1] grid cannot even reach the negative half
        assert grid_f1_threshold(scores, labels, span="scores").f1 <= exact.f1


def test_nan_labels_are_left_out():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    labels = np.array([1, np.nan, 0, np.nan, 0])
    got = f1_max_threshold(scores, labels)
    assert (got.n, got.n_pos, got.f1) == (3, 1, 1.0)
    aucs = per_class_auc(scores[:, None], labels[:, None])
    assert aucs[0] == 1.0


def test_auc_matches_sklearn_and_single_value_class_is_nan():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 3))
    labels = (rng.random((200, 3)) < 0.3).astype(float)
    labels[rng.random((200, 3)) < 0.1] = np.nan
    labels[:, 2] = np.where(np.isnan(labels[:, 2]), np.nan, 0.0)  # one label value only
    with pytest.warns(MetricWarning, match="class 2"):
        aucs = per_class_auc(scores, labels)
    for k in range(2):
        keep = ~np.isnan(labels[:, k])
        assert aucs[k] == pytest.approx(roc_auc_score(labels[keep, k], scores[keep, k]))
    assert np.isnan(aucs[2])
    with pytest.warns(MetricWarning):
        assert np.isnan(f1_max_threshold(scores[:, 2], labels[:, 2]).f1)


def test_validate_protocol_uses_the_validate_threshold():
    # validate: the best cut is at 0.6; test: positives sit at 0.4-0.5 where only a lower cut finds them
    val_scores = np.array([0.9, 0.7, 0.6, 0.3, 0.2])
    val_labels = np.array([1, 1, 1, 0, 0], dtype=float)
    test_scores = np.array([0.8, 0.5, 0.45, 0.4, 0.1, 0.05])
    test_labels = np.array([0, 1, 1, 1, 0, 0], dtype=float)
    on_test = class_metrics(test_scores, test_labels, protocol="test")
    honest = class_metrics(
        test_scores, test_labels, protocol="validate", validate_scores=val_scores, validate_labels=val_labels
    )
    assert on_test.threshold == 0.4 and on_test.f1 == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert honest.threshold == 0.6
    # at 0.6 only the negative 0.8 is predicted positive: F1 0, accuracy 2/6
    assert honest.f1 == 0.0 and honest.precision == 0.0 and honest.accuracy == pytest.approx(2 / 6)
    assert honest.auc == on_test.auc  # AUC has no threshold


def test_evaluate_scores_rows_and_missing_validate():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.6]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=float)
    with pytest.warns(MetricWarning, match="no validate images"):
        rows = evaluate_scores(["a", "b"], scores, labels, set_name="toy")
    assert [(r["class"], r["protocol"]) for r in rows] == [
        ("a", "test"),
        ("a", "validate"),
        ("b", "test"),
        ("b", "validate"),
    ]
    test_rows = [r for r in rows if r["protocol"] == "test"]
    assert all(r["auc"] == 1.0 and r["f1"] == 1.0 and r["accuracy"] == 1.0 for r in test_rows)
    assert all(np.isnan(r["f1"]) for r in rows if r["protocol"] == "validate")
    rows = evaluate_scores(["a", "b"], scores, labels, validate_scores=scores, validate_labels=labels)
    assert all(r["f1"] == 1.0 for r in rows)


def test_top1_accuracy():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.8], [0.5, 0.4, 0.1], [0.3, 0.2, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    # row 0 right, row 1 wrong, row 2 right, row 3 has no positive and is left out
    assert top1_accuracy(scores, labels) == pytest.approx(2 / 3)
