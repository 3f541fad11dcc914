"""The linear probe on hand-made features: subsets, fits, metrics with bootstrap intervals, the table."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medfilip.evaluation.bootstrap import resample_indices
from medfilip.evaluation.metrics import auc, f1_max_threshold, metrics_at_threshold
from medfilip.evaluation.probe.fit import ProbeData, probe_fits, strata, subset
from medfilip.evaluation.probe.scores import ProbeScores
from medfilip.evaluation.probe.table import build_tables, resample_counts, weighted_metrics
from medfilip.evaluation.settings import BootstrapSettings

FRACTIONS = [0.1, 1.0]


def _data(labels: dict[str, np.ndarray], task: str, names: list[str]) -> ProbeData:
    return ProbeData("toy", task, names, labels, {s: np.arange(len(v)) for s, v in labels.items()})


def _single(n: dict[str, int], rng) -> tuple[dict, dict]:
    """Binary pneumonia-vs-normal labels, features whose first dimension separates the classes."""
    labels, feats = {}, {}
    for split, k in n.items():
        y = (np.arange(k) % 3 == 0).astype(np.float32)  # a third positive
        labels[split] = np.stack([y, 1 - y], axis=1)
        x = np.zeros((k, 16), np.float32)
        x[:, :4] = np.where(y == 1, 1.0, -1.0)[:, None]  # separable; equal scores within a class
        feats[split] = x
    return labels, feats


def test_separable_features_give_accuracy_one():
    rng = np.random.default_rng(0)
    labels, feats = _single({"train": 300, "validate": 60, "test": 90}, rng)
    data = _data(labels, "single_label", ["pneumonia", "normal"])
    assert data.classes == ["pneumonia"]  # 'normal' is the complement, not scored
    scores = probe_fits(feats, data, name="sep", fractions=FRACTIONS, seeds=3, c_grid=[0.01, 1.0])
    assert [(f.fraction, f.seed) for f in scores.fits] == [(0.1, 0), (0.1, 1), (0.1, 2), (1.0, 0)]
    assert all(f.n_train == (30 if f.fraction == 0.1 else 300) for f in scores.fits)
    table, per_class, _ = build_tables([scores], bootstrap=BootstrapSettings(n_resamples=200, seed=0))
    row = table[0]
    for frac in ("10pct", "100pct"):
        assert row[f"toy_{frac}_acc"] == 1.0 and row[f"toy_{frac}_f1"] == 1.0 and row[f"toy_{frac}_auc"] == 1.0
        assert row[f"toy_{frac}_acc_val"] == 1.0  # the validate threshold separates test too
        assert row[f"toy_{frac}_auc_low"] == 1.0 == row[f"toy_{frac}_auc_high"]
    assert row["toy_10pct_n_seeds"] == 3 and row["toy_100pct_n_seeds"] == 1
    assert {r["C"] for r in per_class} <= {0.01, 1.0}


def test_random_features_give_auc_near_one_half():
    rng = np.random.default_rng(1)
    names = ["a", "b", "c"]
    labels = {
        s: (rng.random((k, 3)) < 0.3).astype(np.float32) for s, k in (("train", 400), ("validate", 200), ("test", 600))
    }
    feats = {s: rng.normal(size=(len(v), 32)).astype(np.float32) for s, v in labels.items()}
    scores = probe_fits(
        feats, _data(labels, "multi_label", names), name="rnd", fractions=[1.0], seeds=1, c_grid=[0.01, 1.0]
    )
    table, per_class, _ = build_tables([scores], bootstrap=BootstrapSettings(n_resamples=300, seed=0))
    row = table[0]
    assert abs(row["toy_100pct_auc"] - 0.5) < 0.06
    assert row["toy_100pct_auc_low"] < 0.5 < row["toy_100pct_auc_high"]
    assert len(per_class) == 3 and all(abs(r["auc"] - 0.5) < 0.1 for r in per_class)


def test_weighted_metrics_equal_metrics_py_and_explicit_resampling():
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(size=80), 1)  # ties on purpose
    y = (rng.random(80) < 0.4).astype(np.float64)
    t_val = 0.2
    ones = np.ones((1, 80))
    got = weighted_metrics(s, y, ones, t_val)
    best = f1_max_threshold(s, y)
    at = metrics_at_threshold(s, y, t_val)
    assert got["auc"][0] == pytest.approx(auc(s, y))
    assert got["f1"][0] == pytest.approx(best.f1) and got["acc"][0] == pytest.approx(best.accuracy)
    assert got["f1_val"][0] == pytest.approx(at.f1) and got["acc_val"][0] == pytest.approx(at.accuracy)
    idx = resample_indices(80, 25, seed=3)
    counts = resample_counts(idx, 80)
    got = weighted_metrics(s, y, counts, t_val)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b, rows in enumerate(idx):
            assert got["auc"][b] == pytest.approx(auc(s[rows], y[rows]), nan_ok=True)
            assert got["f1"][b] == pytest.approx(f1_max_threshold(s[rows], y[rows]).f1, nan_ok=True)
            assert got["acc"][b] == pytest.approx(f1_max_threshold(s[rows], y[rows]).accuracy, nan_ok=True)
            assert got["acc_val"][b] == pytest.approx(
                metrics_at_threshold(s[rows], y[rows], t_val).accuracy, nan_ok=True
            )


def test_subsets_are_stratified_seeded_and_keep_rare_classes():
    labels = np.zeros((1000, 3), np.float32)
    labels[:300, 0] = 1
    labels[300:330, 1] = 1
    labels[330:335, 2] = 1  # 5 images: 1 % of train would hold none at random
    groups = strata(labels, "multi_label")
    assert (groups[330:335] == 2).all() and (groups[335:] == -1).all()
    pick = subset(labels, "multi_label", 0.01, seed=0, dataset="toy")
    assert len(pick) == 10 and (labels[pick].sum(axis=0) >= 1).all()
    assert np.array_equal(pick, subset(labels, "multi_label", 0.01, seed=0, dataset="toy"))
    assert not np.array_equal(pick, subset(labels, "multi_label", 0.01, seed=1, dataset="toy"))
    assert len(subset(labels, "multi_label", 1.0, seed=5, dataset="toy")) == 1000


def test_a_class_without_train_positives_is_a_skip_with_a_reason():
    rng = np.random.default_rng(4)
    labels = {s: np.zeros((k, 2), np.float32) for s, k in (("train", 50), ("validate", 40), ("test", 40))}
    for s in labels:
        labels[s][: len(labels[s]) // 2, 0] = 1
    labels["validate"][:5, 1] = 1
    labels["test"][:5, 1] = 1  # class b: positives in test only
    feats = {s: rng.normal(size=(len(v), 8)).astype(np.float32) for s, v in labels.items()}
    scores = probe_fits(
        feats, _data(labels, "multi_label", ["a", "b"]), name="r", fractions=[1.0], seeds=1, c_grid=[1.0]
    )
    assert "no positive train image of b" in scores.fits[0].skipped["b"]
    table, per_class, _ = build_tables([scores], bootstrap=BootstrapSettings(n_resamples=50))
    assert "no positive train image of b" in table[0]["note"]
    assert table[0]["toy_100pct_auc"] is not None  # the mean of the class that could be fitted
    skipped = [r for r in per_class if r["class"] == "b"]
    assert skipped and skipped[0]["note"] and skipped[0].get("auc") is None


def test_no_train_split_is_a_skip_row_and_paired_delta(tmp_path):
    rng = np.random.default_rng(5)
    labels, feats = _single({"train": 120, "validate": 40, "test": 60}, rng)
    data = _data(labels, "single_label", ["pneumonia", "normal"])
    good = probe_fits(feats, data, name="medfilip", fractions=[1.0], seeds=1, c_grid=[1.0])
    noisy = {s: rng.normal(size=v.shape).astype(np.float32) for s, v in feats.items()}
    worse = probe_fits(noisy, data, name="other", fractions=[1.0], seeds=1, c_grid=[1.0])
    empty = dict(labels, train=labels["train"][:0])
    none = probe_fits(
        dict(feats, train=feats["train"][:0]),
        _data(empty, "single_label", ["pneumonia", "normal"]),
        name="empty",
        fractions=[1.0],
        seeds=1,
        c_grid=[1.0],
    )
    assert none.note.startswith("skipped: the toy store has no train split") and not none.fits
    # through the files, as the table job reads them
    loaded = []
    for s in (good, worse, none):
        s.save(tmp_path / s.name / "scores.npz")
        loaded.append(ProbeScores.load(tmp_path / s.name / "scores.npz"))
    table, _, _ = build_tables(loaded, bootstrap=BootstrapSettings(n_resamples=200, seed=0))
    rows = {r["run"]: r for r in table}
    assert rows["empty"]["toy_100pct_auc"] is None and "no train split" in rows["empty"]["note"]
    d = rows["other"]["delta_toy_100pct_auc_vs_medfilip"]
    assert d == pytest.approx(rows["other"]["toy_100pct_auc"] - rows["medfilip"]["toy_100pct_auc"], abs=1e-3)
    assert rows["other"]["delta_toy_100pct_auc_vs_medfilip_high"] < 0  # clearly worse, paired
    assert rows["medfilip"]["delta_toy_100pct_auc_vs_medfilip"] is None


def test_table_of_skip_rows_only_through_the_cli(tmp_path):
    """No probed dataset left (every one without a train split): the table holds the reasons, no NaN row."""
    import csv

    import yaml

    from medfilip.pipeline.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "datasets": {"rsna": {"n_train": 0}, "vinbig": {"enabled": False}},
                "training": {
                    "runs": {"medfilip": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce"}}
                },
            }
        )
    )
    out = tmp_path / "linear_probe.csv"
    assert (
        main(
            [
                "-c",
                str(config),
                "linear-probe",
                "--out",
                str(out),
                "--per-class",
                str(tmp_path / "pc.csv"),
                "--figure",
                str(tmp_path / "fig.png"),
            ]
        )
        == 0
    )
    rows = {r["run"]: r for r in csv.DictReader(out.open())}
    assert rows["medfilip"]["note"] == (
        "rsna: skipped: no train split (datasets.rsna.n_train = 0) | vinbig: skipped: datasets.vinbig.enabled is false"
    )
    assert rows["resnet18_imagenet"]["note"].startswith("skipped: no weights configured")
    assert (tmp_path / "fig.png").stat().st_size > 0
