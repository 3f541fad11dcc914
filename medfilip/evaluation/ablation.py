"""The ablation table in the shape of the paper's Table VI: cumulative, report -> Entity -> FG -> SSM -> IKI.

Each row adds one component to the one above and names the training run that has it; the run is
found in ``training.runs`` by its settings (label variant, target, loss), not by name, so a run of
the embedded default counts when it fits (``medfilip`` is the last row):

=====================  ======  ==  ===  ===  ==========================================
row                    Entity  FG  SSM  IKI  run settings
=====================  ======  ==  ===  ===  ==========================================
report                                       report text, identity target (image-report)
+ Entity               x                     category labels, identity target
+ FG                   x       x             triplet labels, identity target
+ SSM                  x       x   x         triplet labels, SSM target
+ IKI (MedFILIP)       x       x   x    x    triplet + explanation labels, SSM target
=====================  ======  ==  ===  ===  ==========================================

All rows use the MSE + soft cross-entropy loss (paper eq. 9), so one thing changes per row.
An "identity" target on category labels gives 1 to every text of the image's categories (images
that share a category share its text): category-level matching, i.e. Entity without SSM.

The metrics are the run's zero-shot summary row of ``zeroshot.csv``: every ``{set}_auc``,
``{set}_f1``, ``{set}_acc`` and the two means, with their ``_low`` / ``_high`` interval columns
when the zero-shot table has them (selected by name). A row whose run is missing keeps its
component flags, leaves the metrics empty and says why in ``note``; ``config/ablation.yaml`` adds
the runs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfilip.io import write_csv_atomic
from medfilip.names import REFERENCE_RUN, LabelVariant, LossKind, TargetKind
from medfilip.training.settings import run_value

METRIC_SUFFIXES = ("_auc", "_f1", "_acc")
MEANS = ("downstream_mean_auc", "mean_auc")
INTERVAL = ("_low", "_high")
FLAG_COLUMNS = ["entity", "fg", "ssm", "iki"]


@dataclass(frozen=True)
class AblationRow:
    name: str
    entity: bool
    fg: bool
    ssm: bool
    iki: bool
    label_variant: str
    target: str
    loss: str = LossKind.mse_ce.value

    def settings(self) -> tuple[str, str, str]:
        return (self.label_variant, self.target, self.loss)


TABLE_VI = (
    AblationRow("report", False, False, False, False, LabelVariant.report.value, TargetKind.identity.value),
    AblationRow("+ Entity", True, False, False, False, LabelVariant.category.value, TargetKind.identity.value),
    AblationRow("+ FG", True, True, False, False, LabelVariant.triplet.value, TargetKind.identity.value),
    AblationRow("+ SSM", True, True, True, False, LabelVariant.triplet.value, TargetKind.ssm.value),
    AblationRow(
        "+ IKI (MedFILIP)", True, True, True, True, LabelVariant.triplet_explanation.value, TargetKind.ssm.value
    ),
)


def run_for(row: AblationRow, runs: dict[str, Any], reference_run: str = REFERENCE_RUN) -> str | None:
    """The run of ``training.runs`` with the row's settings (the reference run first when several match)."""
    matches = [
        name
        for name, s in runs.items()
        if (run_value(s, "label_variant"), run_value(s, "target"), run_value(s, "loss")) == row.settings()
    ]
    if not matches:
        return None
    return reference_run if reference_run in matches else matches[0]


def metric_columns(columns: list[str]) -> list[str]:
    """The zero-shot table's metric columns, each followed by its interval columns when present."""
    present = set(columns)
    out = []
    for c in columns:
        if c.endswith(INTERVAL) and c.rsplit("_", 1)[0] in present:
            continue
        if c in MEANS or c.endswith(METRIC_SUFFIXES):
            out.append(c)
            out += [c + s for s in INTERVAL if c + s in present]
    means = [c for c in out if any(c.startswith(m) for m in MEANS)]
    return [c for c in out if c not in means] + means


def read_zeroshot(path: str | Path) -> tuple[list[str], dict[str, dict]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no zero-shot table (run the zeroshot rule first)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        if "run" not in columns:
            raise ValueError(f"{path}: no 'run' column (not a zeroshot.csv)")
        rows = {r["run"]: r for r in reader}
    return columns, rows


def ablation_rows(
    columns: list[str], zeroshot: dict[str, dict], runs: dict[str, Any], reference_run: str = REFERENCE_RUN
) -> tuple[list[dict], list[str]]:
    """(rows of ablation.csv, its columns)."""
    metrics = metric_columns(columns)
    out = []
    for step, row in enumerate(TABLE_VI):
        run = run_for(row, runs, reference_run)
        record: dict = {
            "step": step,
            "row": row.name,
            **{f: "x" if getattr(row, f) else "" for f in FLAG_COLUMNS},
            "label_variant": row.label_variant,
            "target": row.target,
            "loss": row.loss,
            "run": run or "",
        }
        if run is None:
            note = (
                f"no run of training.runs has label_variant={row.label_variant}, target={row.target}, "
                f"loss={row.loss} (snakemake ... --configfile config/ablation.yaml trains it)"
            )
        elif run not in zeroshot:
            note = f"run {run} is not in the zero-shot table"
        else:
            note = ""
            record.update({c: zeroshot[run].get(c, "") for c in metrics})
        record.update({c: record.get(c, "") for c in metrics})
        record["note"] = note
        out.append(record)
    head = ["step", "row", *FLAG_COLUMNS, "label_variant", "target", "loss", "run"]
    return out, head + metrics + ["note"]


def write_ablation(
    zeroshot_csv: str | Path, runs: dict[str, Any], out: str | Path, reference_run: str = REFERENCE_RUN
) -> list[dict]:
    columns, zeroshot = read_zeroshot(zeroshot_csv)
    rows, fields = ablation_rows(columns, zeroshot, runs, reference_run)
    write_csv_atomic(rows, out, fieldnames=fields)
    return rows
