"""The segmentation table (paper Table IV's shape), its long form, and the figure.

``results/tables/segmentation.csv``: one row per pretrained run, then the random-init baseline,
then the ``all_empty`` reference (an empty mask predicted for every image: what a UNet that never
fires would score under the Kaggle definition). For each fraction (``1pct``, ``10pct``, ``100pct``):

    dice_{f}      mean per-image Dice over every test image (Kaggle / official code: empty on empty = 1)
    dice_pos_{f}  mean per-image Dice over the test images with pneumothorax
    iou_{f}, iou_pos_{f}                      IoU, aggregated the same two ways
    delta_dice_{f}_vs_medfilip, delta_dice_pos_{f}_vs_medfilip   run minus the ``medfilip`` run

each with ``_low`` / ``_high``: the 95 % bootstrap percentile interval over test images (1,000
resamples, seeded; medfilip.evaluation.bootstrap). ``dice`` and ``iou`` resample every test image,
``dice_pos`` and ``iou_pos`` the images with pneumothorax (mean_interval); the deltas resample
every test image with the *same* resamples for both runs (paired). A fraction that was skipped
leaves its cells empty and says why in ``note``; no cell is empty without a note.

``results/tables/segmentation_long.csv``: one row per (run, fraction) with what was chosen on
validate (checkpoint step, threshold, minimum area, validate Dice), the train subset (images,
positives), steps and training speed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.evaluation.segmentation.finetune import BASELINE
from medfilip.evaluation.segmentation.metrics import mean_over_images, mean_over_positives
from medfilip.evaluation.segmentation.settings import fraction_label
from medfilip.evaluation.settings import DEFAULT_BOOTSTRAP, BootstrapSettings
from medfilip.names import REFERENCE_RUN

log = logging.getLogger(__name__)

ALL_EMPTY = "all_empty"
METRICS = ("dice", "dice_pos", "iou", "iou_pos")
DELTA_METRICS = ("dice", "dice_pos")
LONG_COLUMNS = (
    "run",
    "encoder",
    "fraction",
    "status",
    "reason",
    "n_train",
    "n_train_positive",
    "steps",
    "batch_size",
    "checkpoint_step",
    "threshold",
    "min_area",
    "validate_dice",
    "dice",
    "dice_pos",
    "iou",
    "iou_pos",
    "train_seconds",
    "train_images_per_s",
    "test_seconds",
)


class SegmentationTableError(ValueError):
    """Run results that cannot be put in one table; the message names the file."""


@dataclass
class RunScores:
    run: str
    encoder: str
    summary: dict[str, Any]
    image_ids: list[str]
    scores: dict[float, dict[str, np.ndarray]]  # fraction -> dice, iou, truth_area, pred_area
    folder: Path


def read_run(folder: str | Path) -> RunScores:
    import pyarrow.parquet as pq

    folder = Path(folder)
    summary_file = folder / "summary.json"
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SegmentationTableError(f"{summary_file}: unreadable ({err})") from None
    table = pq.read_table(folder / "scores.parquet").to_pandas()
    scores: dict[float, dict[str, np.ndarray]] = {}
    image_ids: list[str] = []
    for fraction, part in table.groupby("fraction", sort=True):
        ids = part["image_id"].tolist()
        if image_ids and ids != image_ids:
            raise SegmentationTableError(f"{folder / 'scores.parquet'}: fraction {fraction} scores other test images")
        image_ids = ids
        scores[float(fraction)] = {c: part[c].to_numpy() for c in ("dice", "iou", "truth_area", "pred_area")}
    return RunScores(summary["run"], summary.get("encoder", ""), summary, image_ids, scores, folder)


def _positive_mean(values: np.ndarray, positive: np.ndarray) -> float:
    return mean_over_positives(values, positive)


def build_rows(
    runs: list[RunScores],
    fractions: list[float],
    *,
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
    reference_run: str = REFERENCE_RUN,
) -> list[dict]:
    """The Table IV rows (see the module docstring)."""
    from medfilip.evaluation.bootstrap import mean_interval, paired_difference, resample_indices

    test_ids = next((r.image_ids for r in runs if r.image_ids), [])
    for r in runs:
        if r.image_ids and r.image_ids != test_ids:
            raise SegmentationTableError(
                f"{r.folder / 'scores.parquet'}: run {r.run} was scored on other test images than the others "
                "(rebuild the segmentation outputs from one store)"
            )
    n_test = len(test_ids)
    indices = resample_indices(n_test, bootstrap.n_resamples, bootstrap.seed) if n_test else None
    reference = next((r for r in runs if r.run == reference_run), None)
    labels = {f: fraction_label(f) for f in fractions}
    rows: list[dict] = []
    positive_test = None
    for r in runs:
        row: dict[str, Any] = {"run": r.run, "encoder": r.encoder}
        notes: list[str] = []
        skipped: dict[str, list[str]] = {}  # reason -> fraction labels (one note per reason)
        records = {float(rec["fraction"]): rec for rec in r.summary.get("fractions", [])}
        for f in fractions:
            lab = labels[f]
            rec = records.get(f)
            arrays = r.scores.get(f)
            if arrays is None:
                reason = rec["reason"] if rec and rec.get("reason") else "not run (fraction not in this run's outputs)"
                skipped.setdefault(reason, []).append(lab)
                continue
            positive = arrays["truth_area"] > 0
            positive_test = positive
            for metric, values in (("dice", arrays["dice"]), ("iou", arrays["iou"])):
                row.update(
                    mean_interval(values, n_resamples=bootstrap.n_resamples, seed=bootstrap.seed).as_dict(
                        f"{metric}_{lab}"
                    )
                )
                if positive.any():
                    row.update(
                        mean_interval(values[positive], n_resamples=bootstrap.n_resamples, seed=bootstrap.seed).as_dict(
                            f"{metric}_pos_{lab}"
                        )
                    )
            if not positive.any():
                notes.append(f"{lab}: no test image with pneumothorax, dice_pos and iou_pos undefined")
            if reference is not None and r is not reference and f in reference.scores:
                ref = reference.scores[f]
                row.update(
                    paired_difference(mean_over_images, [arrays["dice"]], [ref["dice"]], indices=indices).as_dict(
                        f"delta_dice_{lab}_vs_{reference_run}"
                    )
                )
                if positive.any():
                    row.update(
                        paired_difference(
                            _positive_mean, [arrays["dice"], positive], [ref["dice"], positive], indices=indices
                        ).as_dict(f"delta_dice_pos_{lab}_vs_{reference_run}")
                    )
        notes = [f"{', '.join(labs)}: skipped: {reason}" for reason, labs in skipped.items()] + notes
        if r.run == reference_run:
            notes.append("reference run of the delta columns")
        elif reference is None:
            notes.append(f"no run named {reference_run}: no paired deltas")
        row["n_test"] = n_test
        row["n_test_positive"] = int(positive_test.sum()) if positive_test is not None else None
        row["note"] = "; ".join(notes)
        rows.append(row)
    if positive_test is not None:
        empty = {"run": ALL_EMPTY, "encoder": "none: an empty mask for every test image"}
        dice = np.where(positive_test, 0.0, 1.0)
        for f in fractions:
            lab = labels[f]
            for metric in ("dice", "iou"):
                empty.update(
                    mean_interval(dice, n_resamples=bootstrap.n_resamples, seed=bootstrap.seed).as_dict(
                        f"{metric}_{lab}"
                    )
                )
                if positive_test.any():
                    empty.update(
                        {f"{metric}_pos_{lab}": 0.0, f"{metric}_pos_{lab}_low": 0.0, f"{metric}_pos_{lab}_high": 0.0}
                    )
        empty.update(
            n_test=n_test,
            n_test_positive=int(positive_test.sum()),
            note="reference without a model: the Kaggle Dice of predicting no pneumothorax anywhere "
            "(= the share of test images without one); no delta"
            + ("" if positive_test.any() else "; no test image with pneumothorax, dice_pos and iou_pos undefined"),
        )
        rows.append(empty)
    return rows


def table_columns(fractions: list[float], reference_run: str | None) -> list[str]:
    """The table's columns; with the delta columns against ``reference_run`` when it is one of the runs."""
    columns = ["run", "encoder"]
    for f in fractions:
        lab = fraction_label(f)
        for metric in METRICS:
            columns += [f"{metric}_{lab}", f"{metric}_{lab}_low", f"{metric}_{lab}_high"]
    if reference_run is not None:
        for f in fractions:
            lab = fraction_label(f)
            for metric in DELTA_METRICS:
                name = f"delta_{metric}_{lab}_vs_{reference_run}"
                columns += [name, f"{name}_low", f"{name}_high"]
    return [*columns, "n_test", "n_test_positive", "note"]


def _rounded(row: dict) -> dict:
    return {
        k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else ("" if isinstance(v, float) else v))
        for k, v in row.items()
    }


def long_rows(runs: list[RunScores]) -> list[dict]:
    rows = []
    for r in runs:
        for rec in r.summary.get("fractions", []):
            f = float(rec["fraction"])
            arrays = r.scores.get(f)
            row = {"run": r.run, "encoder": r.encoder, **{k: rec.get(k) for k in LONG_COLUMNS if k in rec}}
            if arrays is not None:
                positive = arrays["truth_area"] > 0
                row.update(
                    dice=mean_over_images(arrays["dice"]),
                    dice_pos=mean_over_positives(arrays["dice"], positive),
                    iou=mean_over_images(arrays["iou"]),
                    iou_pos=mean_over_positives(arrays["iou"], positive),
                )
            rows.append(_rounded({c: row.get(c) for c in LONG_COLUMNS}))
    return rows


def write_tables(run_folders: list[str | Path], out: str | Path, long_out: str | Path | None, cfg) -> list[dict]:
    from medfilip.io import write_csv_atomic

    runs = [read_run(f) for f in run_folders]
    fractions = sorted({float(rec["fraction"]) for r in runs for rec in r.summary.get("fractions", [])})
    if not fractions:
        fractions = list(cfg.evaluation.segmentation.fractions)
    reference = cfg.evaluation.reference_run
    rows = build_rows(runs, fractions, bootstrap=cfg.evaluation.bootstrap, reference_run=reference)
    columns = table_columns(fractions, reference if any(r.run == reference for r in runs) else None)
    write_csv_atomic(
        [_rounded({c: row.get(c, float("nan")) for c in columns}) for row in rows], out, fieldnames=columns
    )
    if long_out is not None:
        write_csv_atomic(long_rows(runs), long_out, fieldnames=list(LONG_COLUMNS))
    return rows


# -- figure -------------------------------------------------------------------------------------------
def write_figure(run_folders: list[str | Path], store_root: str | Path, out: str | Path) -> Path:
    """Image, truth and each run's prediction (largest fraction) for the same few test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfilip.evaluation.segmentation.data import store_masks
    from medfilip.images.store import ImageStore
    from medfilip.io import save_figure

    runs = [read_run(f) for f in run_folders]
    store = ImageStore.open(store_root)
    test_rows = store.indices("test")
    predictions: list[tuple[str, np.ndarray | None]] = []
    rows = None
    for r in runs:
        with np.load(r.folder / "examples.npz") as npz:
            ex_rows = npz["rows"]
            pred = npz["pred"] if "pred" in npz.files else None
        if ex_rows.size and rows is None:
            rows = ex_rows
        if pred is not None and rows is not None and not np.array_equal(ex_rows, rows):
            raise SegmentationTableError(f"{r.folder / 'examples.npz'}: other example images than the other runs")
        predictions.append((r.run, pred))
    fig_rows = 2 + len(predictions)
    if rows is None or rows.size == 0 or test_rows.size == 0:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "no segmentation predictions (every run was skipped: see results/tables/segmentation.csv)",
            ha="center",
            va="center",
            fontsize=9,
            wrap=True,
        )
        return save_figure(fig, out, dpi=100)
    store_rows = test_rows[rows]
    images = store.get_batch(store_rows)
    truth = store_masks(store, store_rows)
    size = store.size
    k = rows.size
    fig, axes = plt.subplots(fig_rows, k, figsize=(1.9 * k, 1.9 * fig_rows), squeeze=False)
    largest = max((float(rec["fraction"]) for r in runs for rec in r.summary.get("fractions", [])), default=1.0)
    titles = ["image", "truth", *[f"{name} ({fraction_label(largest)})" for name, _ in predictions]]
    for j in range(k):
        for i in range(fig_rows):
            ax = axes[i, j]
            ax.imshow(images[j], cmap="gray", vmin=0, vmax=255, extent=(0, size, size, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(titles[i], fontsize=7)
        _overlay(axes[1, j], truth[j], size, (0.1, 0.9, 0.2))
        for i, (_, pred) in enumerate(predictions):
            if pred is None:
                axes[2 + i, j].text(size / 2, size / 2, "skipped", color="yellow", ha="center", va="center", fontsize=7)
            else:
                _overlay(axes[2 + i, j], pred[j], size, (1.0, 0.2, 0.1))
                _contour(axes[2 + i, j], truth[j], size)
        axes[0, j].set_title("pneumothorax" if truth[j].any() else "none", fontsize=7)
    fig.suptitle(
        "SIIM-ACR test images: truth (green), prediction (red, truth outlined); choices made on validate", fontsize=8
    )
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def _overlay(ax, mask: np.ndarray, size: int, colour) -> None:
    rgba = np.zeros((*mask.shape, 4), np.float32)
    rgba[mask] = (*colour, 0.45)
    ax.imshow(rgba, extent=(0, size, size, 0), interpolation="nearest")


def _contour(ax, mask: np.ndarray, size: int) -> None:
    if mask.any():
        h, w = mask.shape
        xs = (np.arange(w) + 0.5) * size / w
        ys = (np.arange(h) + 0.5) * size / h
        ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=[(0.1, 0.9, 0.2)], linewidths=0.6)


__all__ = ["BASELINE", "build_rows", "write_tables", "write_figure"]
