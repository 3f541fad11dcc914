"""The zero-shot table (paper Table I shape), its long form, and the bar figure.

``zeroshot.csv``: one row per run. For each set, leading with accuracy and F1 as Table I does, AUC
beside: ``{set}_acc``, ``{set}_f1`` (the ``test`` protocol: threshold chosen on test, as the paper),
``{set}_auc``, ``{set}_acc_valthr``, ``{set}_f1_valthr`` (the ``validate`` protocol: threshold from the
validate split, the honest number), ``{set}_top1`` on single-label sets, the negation columns
``{set}_auc_neg`` (texts "no {category}": AUC of minus their cosine, a model that reads negation scores
the positives low) and ``{set}_auc_comb`` (AUC of positive minus negated cosine), and ``{set}_n_test``.
Every metric has its 95 % bootstrap interval beside it (``_low``, ``_high``: percentiles over
``evaluation.bootstrap.n_resamples`` resamples of the store's test images). Every run other than
``medfilip`` has, for acc, f1 and auc, ``delta_{set}_{metric}_vs_medfilip`` = run minus medfilip with
its paired interval (the same resamples for both runs; an interval that excludes 0 is a difference
the test images support). Then the means over sets (``downstream_mean_*``: the phantom twins or the
real RSNA, NIH ...; ``mean_*``: every set), their intervals (each replicate averages the sets'
replicates) and deltas, and a ``note`` (what the control and copy sets are). The
``{set}_by_category`` and ``{set}_mismatched`` copies score the same images again with other texts
and are left out of the means. Every metric is the mean over the set's classes with a defined value
('normal' left out on single-label sets, see :func:`medfilip.evaluation.zeroshot.mean_classes`, and
out of the negation columns, which have no "no normal").

Each run is also scored with its own text form (``training.runs.*.eval_text``, else its label
variant's: the template for MedFILIP, the triplet or category name for the ablation rows, a
report-style sentence for report-text runs; :func:`medfilip.labels.templates.run_eval_text`):
the same columns again, prefixed ``own_`` (``own_downstream_mean_auc``, ``own_delta_...``, deltas to
medfilip in its own text), with ``own_text_variant``, after the common template's columns, whose
values are what they were without them. The own text leads where methods are compared.

The unseen-class control is a 2 x 2 (:func:`medfilip.evaluation.sets.control_copies`): the class
named in ``evaluation.mismatched_explanation`` ("covid-19 pneumonia") under its real name or
"condition x", with its own or another category's explanation: ``{set}`` (real, own),
``{set}_mismatched``, ``{set}_neutral``, ``{set}_neutral_mismatched``. Each has
``{set}_class_auc``: the AUC of that class alone (``{set}_auc`` averages in the other classes).

``corpus_severity`` (severity as severity, :mod:`medfilip.evaluation.sets`) adds
``corpus_severity_tau``: Kendall tau between the stated severity and cos(image, "severe c") -
cos(image, "mild c"), the mean over its categories (per category in the per-class file, protocol
``kendall_tau``), with its interval and difference to medfilip; the set is left out of the means.

``zeroshot_per_class.csv`` (common template): run, dataset, class, protocol, auc, f1, acc, precision, recall,
threshold, n_pos, n, auc_neg, auc_comb, kendall_tau.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfilip.evaluation.bootstrap import interval_from_replicates
from medfilip.evaluation.metrics import mean_ignoring_nan
from medfilip.io import save_figure, write_csv_atomic
from medfilip.names import REFERENCE_RUN

PER_CLASS_COLUMNS = [
    "run",
    "dataset",
    "class",
    "protocol",
    "auc",
    "f1",
    "acc",
    "precision",
    "recall",
    "threshold",
    "n_pos",
    "n",
    "auc_neg",
    "auc_comb",
    "kendall_tau",
]
# column suffix -> where its point estimate lives in a summary
SET_METRICS = {
    "acc": ("test", "accuracy"),
    "f1": ("test", "f1"),
    "auc": (None, "auc"),
    "acc_valthr": ("validate", "accuracy"),
    "f1_valthr": ("validate", "f1"),
    "top1": (None, "top1"),
    "auc_neg": ("negation", "auc_neg"),
    "auc_comb": ("negation", "auc_comb"),
    "tau": ("severity", "tau"),
    "class_auc": (
        "control",
        "auc",
    ),  # the COVID control's class alone (not the set's mean)  # corpus_severity: Kendall tau of the stated severity, mean over categories
}
DELTA_METRICS = ("acc", "f1", "auc", "tau", "class_auc")
MEAN_METRICS = ("acc", "f1", "auc", "acc_valthr", "f1_valthr")


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _point(summary: dict, metric: str) -> float:
    where, key = SET_METRICS[metric]
    if where is None:
        if key == "auc":
            part = summary.get("test") or summary.get("validate") or {}
            return part.get("auc", float("nan"))
        return summary.get(key, float("nan"))
    return summary.get(where, {}).get(key, float("nan"))


def _with_interval(row: dict, name: str, estimate: float, replicates: np.ndarray | None) -> None:
    row[name] = _round(estimate)
    if replicates is None or np.asarray(replicates).size == 0:
        row[f"{name}_low"] = row[f"{name}_high"] = None
        return
    iv = interval_from_replicates(estimate, replicates)
    row[f"{name}_low"], row[f"{name}_high"] = _round(iv.low), _round(iv.high)


def _mean_replicates(parts: list[np.ndarray]) -> np.ndarray | None:
    parts = [p for p in parts if p is not None and np.asarray(p).size]
    if not parts or len({p.size for p in parts}) != 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.vstack(parts), axis=0)


OWN_PREFIX = "own_"


def table_rows(summaries: Sequence[dict], reference: str = REFERENCE_RUN) -> list[dict]:
    """Rows of zeroshot.csv (runs in first-seen order, sets in first-seen order; module doc): the
    common template's columns (summaries without ``prompt`` or with "common"), then, for runs with
    summaries of their own text (``prompt`` "own"), the same columns prefixed ``own_`` and
    ``own_text_variant``."""
    common = [s for s in summaries if s.get("prompt", "common") == "common"]
    own = [s for s in summaries if s.get("prompt") == "own"]
    rows = _prompt_rows(common, reference)
    if own:
        own_rows = {r["run"]: r for r in _prompt_rows(own, reference)}
        variant = {s["run"]: s.get("text_variant") for s in own}
        for row in rows:
            extra = own_rows.get(row["run"])
            if extra is None:
                continue
            note = row.pop("note")
            row[f"{OWN_PREFIX}text_variant"] = variant.get(row["run"])
            row.update({f"{OWN_PREFIX}{k}": v for k, v in extra.items() if k not in ("run", "note")})
            row["note"] = note
    return rows


def _prompt_rows(summaries: Sequence[dict], reference_run: str) -> list[dict]:
    """The rows of one prompt's summaries (see :func:`table_rows`)."""
    runs = list(dict.fromkeys(s["run"] for s in summaries))
    sets = list(dict.fromkeys(s["dataset"] for s in summaries))
    by_key = {(s["run"], s["dataset"]): s for s in summaries}
    single = {s["dataset"] for s in summaries if "top1" in s}
    primary = {s["dataset"] for s in summaries if s.get("primary", True)}
    downstream = {s["dataset"] for s in summaries if s.get("source", "downstream") == "downstream"} & primary
    has = {m: {s["dataset"] for s in summaries if _defined_somewhere(s, m)} for m in SET_METRICS}
    notes = {s["dataset"]: s.get("note") for s in summaries if s.get("note")}
    reference = reference_run if reference_run in runs else None

    def reps(run: str, name: str, metric: str) -> np.ndarray | None:
        return by_key.get((run, name), {}).get("replicates", {}).get(metric)

    def mean_of(run: str, names: list[str], metric: str) -> tuple[float, np.ndarray | None]:
        points = [_point(by_key.get((run, n), {}), metric) for n in names]
        return mean_ignoring_nan(points), _mean_replicates([reps(run, n, metric) for n in names])

    groups = {"downstream_mean": [n for n in sets if n in downstream], "mean": [n for n in sets if n in primary]}
    rows = []
    for run in runs:
        row: dict = {"run": run}
        for name in sets:
            s = by_key.get((run, name), {})
            for metric in SET_METRICS:
                if name not in has[metric] or (metric == "top1" and name not in single):
                    continue
                _with_interval(row, f"{name}_{metric}", _point(s, metric), reps(run, name, metric))
            row[f"{name}_n_test"] = s.get("n_test")
            if reference and run != reference:
                ref = by_key.get((reference, name), {})
                for metric in DELTA_METRICS:
                    if name not in has[metric]:
                        continue
                    a, b = reps(run, name, metric), reps(reference, name, metric)
                    diff = None if a is None or b is None or a.size != b.size else a - b
                    _with_interval(
                        row, f"delta_{name}_{metric}_vs_{reference}", _point(s, metric) - _point(ref, metric), diff
                    )
        for group, names in groups.items():
            for metric in MEAN_METRICS:
                if not any(n in has[metric] for n in names):
                    continue
                estimate, replicates = mean_of(run, names, metric)
                _with_interval(row, f"{group}_{metric}", estimate, replicates)
                if reference and run != reference and metric in DELTA_METRICS:
                    ref_estimate, ref_replicates = mean_of(reference, names, metric)
                    diff = None if replicates is None or ref_replicates is None else replicates - ref_replicates
                    _with_interval(row, f"delta_{group}_{metric}_vs_{reference}", estimate - ref_estimate, diff)
        row["note"] = "; ".join(f"{n}: {t}" for n, t in notes.items()) or None
        rows.append(row)
    return rows


def _defined_somewhere(summary: dict, metric: str) -> bool:
    where, key = SET_METRICS[metric]
    if where is None:
        return key == "auc" or key in summary
    return key in summary.get(where, {})


def per_class_rows(per_class: Sequence[dict]) -> list[dict]:
    out = []
    for r in per_class:
        out.append(
            {
                "run": r["run"],
                "dataset": r["dataset"],
                "class": r["class"],
                "protocol": r["protocol"],
                "auc": _round(r["auc"]),
                "f1": _round(r["f1"]),
                "acc": _round(r["accuracy"]),
                "precision": _round(r["precision"]),
                "recall": _round(r["recall"]),
                "threshold": _round(r["threshold"], 6),
                "n_pos": r["n_pos"],
                "n": r["n"],
                "auc_neg": _round(r.get("auc_neg")),
                "auc_comb": _round(r.get("auc_comb")),
                "kendall_tau": _round(r.get("kendall_tau")),
            }
        )
    return out


def write_table(summaries: Sequence[dict], path: str | Path, reference: str = REFERENCE_RUN) -> list[dict]:
    rows = table_rows(summaries, reference)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    mean_heads = ("downstream_mean_", "mean_", "delta_downstream_mean_", "delta_mean_")
    means = [c for c in columns if c.startswith(mean_heads)]
    own = [c for c in columns if c.startswith(OWN_PREFIX)]
    own = [c for c in own if not c[len(OWN_PREFIX) :].startswith(mean_heads)] + [
        c for c in own if c[len(OWN_PREFIX) :].startswith(mean_heads)
    ]
    columns = [c for c in columns if c not in means and c not in own and c != "note"] + means + own + ["note"]
    write_csv_atomic(rows, path, fieldnames=columns)
    return rows


def write_per_class(per_class: Sequence[dict], path: str | Path) -> list[dict]:
    rows = per_class_rows([r for r in per_class if r.get("prompt", "common") == "common"])
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

    def bound(r: dict, c: str, side: str, v: float) -> float:
        b = r.get(f"{c}_{side}")
        return 0.0 if b is None or np.isnan(v) else abs(v - b)

    errors = np.array(
        [
            [
                [bound(r, c, "low", v) for c, v in zip(columns, vals)],
                [bound(r, c, "high", v) for c, v in zip(columns, vals)],
            ]
            for r, vals in zip(rows, values)
        ]
    )
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(min(16.0, 3.0 + 0.3 * len(groups) * max(len(runs), 1)), 4.8))
    colours = plt.get_cmap("tab10")
    for j, run in enumerate(runs):
        pos = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(
            pos,
            np.nan_to_num(values[j], nan=0.0),
            width,
            label=run,
            color=colours(j % 10),
            yerr=errors[j],
            error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "black"},
        )
        for b, v in zip(bars, values[j]):
            ax.annotate(
                "n/a" if np.isnan(v) else f"{v:.2f}",
                (b.get_x() + b.get_width() / 2, 0 if np.isnan(v) else v),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90 if len(runs) > 2 else 0,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("mean AUC over classes")
    ax.set_title("Zero-shot classification: mean AUC per evaluation set (95 % bootstrap intervals)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, dpi=150)
