"""The zero-shot table (paper Table I shape), its long form, and the bar figure.

``zeroshot.csv``: one row per run; for each set ``{set}_auc``, ``{set}_f1``, ``{set}_acc`` (the
``test`` protocol: threshold chosen on test, as the paper), ``{set}_f1_valthr``, ``{set}_acc_valthr``
(the ``validate`` protocol: threshold from the validate split), ``{set}_top1`` on single-label
sets; then ``downstream_mean_auc`` (mean over the downstream sets: the phantom twins or the real
RSNA, NIH ... of each set's mean AUC) and ``mean_auc`` (over every set); the ``{set}_by_category``
copies are left out of both means (they score the same images again with other texts). Every
metric is the mean over the set's classes with a defined value ('normal' left out on single-label
sets, see :func:`medfilip.evaluation.zeroshot.mean_classes`).

``zeroshot_per_class.csv``: run, dataset, class, protocol, auc, f1, acc, precision, recall,
threshold, n_pos, n.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from medfilip.evaluation.metrics import mean_ignoring_nan
from medfilip.io import save_figure, write_csv_atomic

PER_CLASS_COLUMNS = ["run", "dataset", "class", "protocol", "auc", "f1", "acc", "precision", "recall", "threshold", "n_pos", "n"]


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def table_rows(summaries: Sequence[dict]) -> list[dict]:
    """Rows of zeroshot.csv (runs in first-seen order, sets in first-seen order)."""
    runs = list(dict.fromkeys(s["run"] for s in summaries))
    sets = list(dict.fromkeys(s["dataset"] for s in summaries))
    by_key = {(s["run"], s["dataset"]): s for s in summaries}
    single = {s["dataset"] for s in summaries if "top1" in s}
    primary = {s["dataset"] for s in summaries if s.get("primary", True)}
    downstream = {s["dataset"] for s in summaries if s.get("source", "downstream") == "downstream"} & primary
    rows = []
    for run in runs:
        row: dict = {"run": run}
        for name in sets:
            s = by_key.get((run, name), {})
            test, val = s.get("test", {}), s.get("validate", {})
            row[f"{name}_auc"] = _round(test.get("auc", val.get("auc")))
            if test:
                row[f"{name}_f1"] = _round(test.get("f1"))
                row[f"{name}_acc"] = _round(test.get("accuracy"))
            if val:
                row[f"{name}_f1_valthr"] = _round(val.get("f1"))
                row[f"{name}_acc_valthr"] = _round(val.get("accuracy"))
            if name in single:
                row[f"{name}_top1"] = _round(s.get("top1"))
        row["downstream_mean_auc"] = _round(mean_ignoring_nan(row[f"{n}_auc"] for n in sets if n in downstream))
        row["mean_auc"] = _round(mean_ignoring_nan(row[f"{n}_auc"] for n in sets if n in primary))
        rows.append(row)
    return rows


def per_class_rows(per_class: Sequence[dict]) -> list[dict]:
    out = []
    for r in per_class:
        out.append({
            "run": r["run"], "dataset": r["dataset"], "class": r["class"], "protocol": r["protocol"],
            "auc": _round(r["auc"]), "f1": _round(r["f1"]), "acc": _round(r["accuracy"]),
            "precision": _round(r["precision"]), "recall": _round(r["recall"]),
            "threshold": _round(r["threshold"], 6), "n_pos": r["n_pos"], "n": r["n"],
        })
    return out


def write_table(summaries: Sequence[dict], path: str | Path) -> list[dict]:
    rows = table_rows(summaries)
    means = ["downstream_mean_auc", "mean_auc"]
    columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in means]
    write_csv_atomic(rows, path, fieldnames=columns + means)
    return rows


def write_per_class(per_class: Sequence[dict], path: str | Path) -> list[dict]:
    rows = per_class_rows(per_class)
    write_csv_atomic(rows, path, fieldnames=PER_CLASS_COLUMNS)
    return rows


def write_figure(summaries: Sequence[dict], path: str | Path) -> Path:
    """Grouped bars: one group per set (and the two means), one bar per run, height = mean AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    rows = table_rows(summaries)
    runs = [r["run"] for r in rows]
    sets = list(dict.fromkeys(s["dataset"] for s in summaries))
    groups = sets + ["downstream mean", "mean"]
    columns = [f"{g}_auc" for g in sets] + ["downstream_mean_auc", "mean_auc"]
    values = np.array([[np.nan if r.get(c) is None else r[c] for c in columns] for r in rows], dtype=float)
    values = values.reshape(len(runs), len(groups))
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(min(16.0, 3.0 + 0.3 * len(groups) * max(len(runs), 1)), 4.8))
    colours = plt.get_cmap("tab10")
    for j, run in enumerate(runs):
        pos = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(pos, np.nan_to_num(values[j], nan=0.0), width, label=run, color=colours(j % 10))
        for b, v in zip(bars, values[j]):
            ax.annotate("n/a" if np.isnan(v) else f"{v:.2f}", (b.get_x() + b.get_width() / 2, 0 if np.isnan(v) else v),
                        ha="center", va="bottom", fontsize=7, rotation=90 if len(runs) > 2 else 0,
                        xytext=(0, 2), textcoords="offset points")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("mean AUC over classes")
    ax.set_title("Zero-shot classification: mean AUC per evaluation set")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, dpi=150)
