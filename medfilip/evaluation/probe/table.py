"""Scoring of probe / baseline scores: the Table II CSV, the per-class CSV and the figure.

Per (model, dataset, fraction) and evaluated class, on the test images:

- ``auc``: ROC AUC (:func:`medfilip.evaluation.metrics.auc`);
- ``f1`` / ``acc``: F1 and accuracy at the F1-maximising threshold chosen **on test** (the paper's
  protocol: :func:`~medfilip.evaluation.metrics.f1_max_threshold`);
- ``f1_val`` / ``acc_val``: at the F1-maximising threshold chosen **on validate** and applied to
  test (the honest column: :func:`~medfilip.evaluation.metrics.metrics_at_threshold`).

A fit's value is the mean over its evaluated classes (RSNA: pneumonia; VinBigData: the 8 classes),
classes skipped in that fit left out (the ``note`` says which); a fraction's value is the mean over
its seeds. Intervals: 95 % percentile bootstrap over the test images (``n_resamples`` resamples
from :func:`medfilip.evaluation.bootstrap.resample_indices`, seeded); within a replicate the
metric is recomputed from the resampled images (the test-chosen threshold is re-chosen, as the
protocol would) and averaged over classes and seeds like the point estimate. Every model scored
on a dataset sees the same resamples, so ``delta_<metric>_vs_medfilip`` is a paired difference.

The replicates are computed for all resamples at once from resample *counts* (a resample is a
weighting of the test images), which gives exactly the metric of the resampled images (tests check
it against metrics.py and against explicit resampling) at the cost of a few array passes.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfilip.evaluation.bootstrap import Interval, resample_indices
from medfilip.evaluation.metrics import auc, f1_max_threshold, metrics_at_threshold
from medfilip.evaluation.probe.fit import fraction_label
from medfilip.evaluation.probe.scores import ProbeScores
from medfilip.evaluation.settings import DEFAULT_BOOTSTRAP, BootstrapSettings
from medfilip.names import REFERENCE_RUN

log = logging.getLogger(__name__)

METRICS = ("acc", "f1", "auc", "acc_val", "f1_val")
DELTA_METRICS = ("acc", "f1", "auc")
LEVEL = 0.95


# -- metrics of weighted (resampled) test sets ------------------------------------------------
def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each test image is drawn in each resample."""
    b = indices.shape[0]
    flat = (indices + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def weighted_metrics(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, val_threshold: float
) -> dict[str, np.ndarray]:
    """Per weighting row (a resample): AUC, F1 and accuracy at the F1-max threshold of that row,
    and F1 / accuracy at ``val_threshold`` (fixed). Same conventions as medfilip.evaluation.metrics:
    ``score >= t`` is positive, ties stay together, among equal F1 the highest threshold wins."""
    keep = ~np.isnan(labels) & ~np.isnan(scores)
    s, y, w = scores[keep], labels[keep] > 0.5, weights[:, keep]
    b = w.shape[0]
    nan = np.full(b, np.nan)
    if s.size == 0:
        return dict.fromkeys(METRICS, nan)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    wp, wn = w * y, w * ~y
    tp = np.cumsum(wp, axis=1)[:, ends]
    fp = np.cumsum(wn, axis=1)[:, ends]
    pos, neg = wp.sum(axis=1), wn.sum(axis=1)
    total = pos + neg
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_curve = 2 * tp / (tp + fp + pos[:, None])
        best = np.argmax(f1_curve, axis=1)
        rows = np.arange(b)
        f1 = np.where(pos > 0, f1_curve[rows, best], np.nan)
        acc = np.where(pos > 0, (tp[rows, best] + neg - fp[rows, best]) / total, np.nan)
        pos_g = np.diff(tp, axis=1, prepend=0.0)
        neg_g = np.diff(fp, axis=1, prepend=0.0)
        area = (pos_g * (neg[:, None] - fp + 0.5 * neg_g)).sum(axis=1) / (pos * neg)
        area = np.where((pos > 0) & (neg > 0), area, np.nan)
        if np.isnan(val_threshold):
            f1_val = acc_val = nan
        else:
            pred = s >= val_threshold
            tp_v, fp_v = wp[:, pred].sum(axis=1), wn[:, pred].sum(axis=1)
            f1_val = np.where(pos > 0, 2 * tp_v / (tp_v + fp_v + pos), np.nan)
            acc_val = np.where(pos > 0, (tp_v + neg - fp_v) / total, np.nan)
    return {"acc": acc, "f1": f1, "auc": area, "acc_val": acc_val, "f1_val": f1_val}


def point_metrics(
    test_scores: np.ndarray, test_labels: np.ndarray, val_scores: np.ndarray, val_labels: np.ndarray
) -> dict[str, float]:
    """One class's metrics on the whole test set, from medfilip.evaluation.metrics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_test = f1_max_threshold(test_scores, test_labels)
        chosen = f1_max_threshold(val_scores, val_labels).threshold if len(val_scores) else float("nan")
        at_val = metrics_at_threshold(test_scores, test_labels, chosen)
        return {
            "acc": on_test.accuracy,
            "f1": on_test.f1,
            "auc": auc(test_scores, test_labels),
            "acc_val": at_val.accuracy,
            "f1_val": at_val.f1,
            "threshold": on_test.threshold,
            "threshold_val": chosen,
            "n_test_pos": on_test.n_pos,
            "n_test": on_test.n,
        }


@dataclass
class Scored:
    """One model on one dataset at one fraction: seed-mean estimates and their replicates."""

    estimate: dict[str, float]
    replicates: dict[str, np.ndarray]  # metric -> (B,)
    n_seeds: int
    notes: list[str]


def score_fraction(scores: ProbeScores, fraction: float, counts: np.ndarray) -> tuple[Scored, list[dict]]:
    """Seed-averaged class-mean metrics of one fraction, their replicates, and per-class rows."""
    per_class: list[dict] = []
    seed_est: list[dict[str, float]] = []
    seed_rep: list[dict[str, np.ndarray]] = []
    notes: list[str] = []
    for fit in scores.fits_at(fraction):
        t, v = scores.test_scores[fit.key], scores.validate_scores[fit.key]
        class_est, class_rep = [], []
        for j, name in enumerate(scores.classes):
            row = {
                "run": scores.name,
                "kind": scores.kind,
                "dataset": scores.dataset,
                "fraction": fraction,
                "seed": fit.seed,
                "class": name,
                "C": fit.C[j],
                "n_train": fit.n_train,
                "n_train_pos": fit.n_train_pos[j],
                "note": fit.skipped.get(name, ""),
            }
            if name in fit.skipped or np.isnan(t[:, j]).all():
                row["note"] = row["note"] or "no scores"
                per_class.append(row)
                continue
            m = point_metrics(t[:, j], scores.test_labels[:, j], v[:, j], scores.validate_labels[:, j])
            if np.isnan(m["auc"]) or np.isnan(m["f1"]):
                y = scores.test_labels[:, j]
                reason = (
                    f"{name}: undefined on test ({int(np.sum(y == 1))} positive, {int(np.sum(y == 0))} negative images)"
                )
                per_class.append({**row, **m, "note": reason})
                notes.append(f"seed {fit.seed}: {reason}")
                continue
            per_class.append({**row, **m})
            class_est.append(m)
            class_rep.append(weighted_metrics(t[:, j], scores.test_labels[:, j], counts, m["threshold_val"]))
        if fit.skipped:
            notes.append(f"seed {fit.seed}: " + "; ".join(fit.skipped.values()))
        if not class_est:
            continue
        seed_est.append({k: float(np.mean([e[k] for e in class_est])) for k in METRICS})
        seed_rep.append({k: np.mean([r[k] for r in class_rep], axis=0) for k in METRICS})
    if not seed_est:
        nan = np.full(counts.shape[0], np.nan)
        return Scored({k: float("nan") for k in METRICS}, dict.fromkeys(METRICS, nan), 0, notes), per_class
    est = {k: float(np.mean([e[k] for e in seed_est])) for k in METRICS}
    rep = {k: np.mean([r[k] for r in seed_rep], axis=0) for k in METRICS}
    return Scored(est, rep, len(seed_est), notes), per_class


def percentile_interval(estimate: float, values: np.ndarray, level: float = LEVEL) -> Interval:
    """The bootstrap module's percentile interval (undefined replicates left out)."""
    from medfilip.evaluation.bootstrap import _interval

    return _interval(estimate, np.asarray(values, np.float64), level)


def _r(value, digits: int = 4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits) if isinstance(value, (float, np.floating)) else value


# -- the table --------------------------------------------------------------------------------
def build_tables(
    all_scores: Sequence[ProbeScores],
    *,
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
    skip_rows: Sequence[dict] = (),
    reference: str = REFERENCE_RUN,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(table rows: one per model, per-class rows, long rows for the figure)."""
    datasets = sorted({s.dataset for s in all_scores}, key=lambda d: [s.dataset for s in all_scores].index(d))
    names: list[tuple[str, str]] = []
    for s in all_scores:
        if (s.name, s.kind) not in names:
            names.append((s.name, s.kind))
    fractions = {d: sorted({f for s in all_scores if s.dataset == d for f in s.fractions()}) for d in datasets}
    rows = {n: {"run": n, "kind": k, "note": ""} for n, k in names}
    notes: dict[str, list[str]] = {n: [] for n, _ in names}
    per_class: list[dict] = []
    long: list[dict] = []
    for d in datasets:
        mine = [s for s in all_scores if s.dataset == d]
        n_test = {len(s.test_rows) for s in mine}
        if len(n_test) != 1:
            raise ValueError(f"{d}: models scored on different test sets ({sorted(n_test)} images)")
        n = n_test.pop()
        counts = (
            resample_counts(resample_indices(n, bootstrap.n_resamples, bootstrap.seed), n) if n else np.zeros((0, 0))
        )
        ref = next((s for s in mine if s.name == reference), None)
        for s in mine:
            if s.note:
                notes[s.name].append(f"{d}: {s.note}")
            if ref is not None and not np.array_equal(ref.test_rows, s.test_rows):
                raise ValueError(f"{d}: {s.name} and {reference} were scored on different test images")
        for f in fractions[d]:
            prefix = f"{d}_{fraction_label(f)}"
            scored = {}
            for s in mine:
                if s.note or f not in s.fractions():
                    continue
                sc, pc = score_fraction(s, f, counts)
                scored[s.name] = sc
                per_class.extend(pc)
                notes[s.name].extend(f"{prefix} {x}" for x in sc.notes)
            for s in mine:
                row = rows[s.name]
                sc = scored.get(s.name)
                for m in METRICS:
                    if sc is None:
                        row.update({f"{prefix}_{m}": None, f"{prefix}_{m}_low": None, f"{prefix}_{m}_high": None})
                        continue
                    iv = percentile_interval(sc.estimate[m], sc.replicates[m])
                    row.update({k: _r(v) for k, v in iv.as_dict(f"{prefix}_{m}").items()})
                row[f"{prefix}_n_seeds"] = sc.n_seeds if sc else 0
                if sc is not None:
                    iv = percentile_interval(sc.estimate["auc"], sc.replicates["auc"])
                    long.append(
                        {
                            "run": s.name,
                            "kind": s.kind,
                            "dataset": d,
                            "fraction": f,
                            "auc": iv.estimate,
                            "auc_low": iv.low,
                            "auc_high": iv.high,
                            "f1": sc.estimate["f1"],
                            "acc": sc.estimate["acc"],
                        }
                    )
                for m in DELTA_METRICS:
                    col = f"delta_{prefix}_{m}_vs_{reference}"
                    if sc is None or s.name == reference or reference not in scored:
                        row.update({col: None, f"{col}_low": None, f"{col}_high": None})
                        continue
                    r = scored[reference]
                    iv = percentile_interval(sc.estimate[m] - r.estimate[m], sc.replicates[m] - r.replicates[m])
                    row.update({col: _r(iv.estimate), f"{col}_low": _r(iv.low), f"{col}_high": _r(iv.high)})
    table = []
    for n, _ in names:
        row = rows[n]
        row["note"] = " | ".join(dict.fromkeys(notes[n]))
        table.append(row)
    for extra in skip_rows:
        table.append({**dict.fromkeys(table[0] if table else {"run": None, "kind": None, "note": None}), **extra})
    per_class = [{k: _r(v) if isinstance(v, float) else v for k, v in r.items()} for r in per_class]
    return table, per_class, long


PER_CLASS_COLUMNS = [
    "run",
    "kind",
    "dataset",
    "fraction",
    "seed",
    "class",
    "C",
    "n_train",
    "n_train_pos",
    "auc",
    "acc",
    "f1",
    "threshold",
    "acc_val",
    "f1_val",
    "threshold_val",
    "n_test_pos",
    "n_test",
    "note",
]


def write_outputs(
    table: list[dict],
    per_class: list[dict],
    long: list[dict],
    out: Path,
    per_class_path: Path | None,
    figure: Path | None,
) -> None:
    from medfilip.io import write_csv_atomic

    columns = list(dict.fromkeys(k for r in table for k in r))
    columns = ["run", "kind"] + [c for c in columns if c not in ("run", "kind", "note")] + ["note"]
    write_csv_atomic(table, out, fieldnames=columns)
    if per_class_path is not None:
        write_csv_atomic(
            [{k: r.get(k) for k in PER_CLASS_COLUMNS} for r in per_class] or [dict.fromkeys(PER_CLASS_COLUMNS)],
            per_class_path,
            fieldnames=PER_CLASS_COLUMNS,
        )
    if figure is not None:
        write_figure(long, figure)


def write_figure(long: list[dict], path: Path) -> Path:
    """Test AUC against the fraction of train (log axis), one line per run, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfilip.io import save_figure

    datasets = list(dict.fromkeys(r["dataset"] for r in long)) or ["(no results)"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.0), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        mine = [r for r in long if r["dataset"] == d]
        for name in dict.fromkeys(r["run"] for r in mine):
            pts = sorted((r for r in mine if r["run"] == name), key=lambda r: r["fraction"])
            x = [100 * r["fraction"] for r in pts]
            y = np.array([r["auc"] for r in pts], float)
            low = np.array([r["auc_low"] for r in pts], float)
            high = np.array([r["auc_high"] for r in pts], float)
            err = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)])
            style = "--" if pts[0]["kind"] == "baseline" else "-"
            ax.errorbar(x, y, yerr=err, fmt=style, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("% of the train split")
        ax.set_ylabel("test AUC (mean over classes, 95% CI)")
        ax.set_title(d)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        if mine:
            ax.legend(fontsize=7)
    fig.suptitle("Linear probe (pretrained runs, solid) and fine-tuned baselines (dashed)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
