"""The validate AUC curve file of a run (``validate_curve.csv`` beside ``train_log.csv``): training
appends a row per check of the probe it was given (:class:`medfilip.evaluation.curve.ValidateProbe`),
the train_curves figure reads it."""

from __future__ import annotations

import csv
from pathlib import Path

CURVE_FILE = "validate_curve.csv"
CURVE_COLUMNS = ["step", "epoch", "validate_auc", "n_images", "n_classes"]


def append_curve(path: str | Path, row: dict) -> None:
    """One row of validate_curve.csv (the header when the file is new)."""
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k) for k in CURVE_COLUMNS})


def read_curve(path: str | Path) -> dict[str, list[float]]:
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(r[k]) for r in rows if r.get(k) not in (None, "")] for k in CURVE_COLUMNS} if rows else {}
