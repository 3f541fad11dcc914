"""The ablation table (paper Table VI shape) from a zero-shot table: rows, flags, runs by settings,
metric and interval columns by name, skip rows with a note."""

from __future__ import annotations

import csv

import pytest

from medfilip.evaluation.ablation import TABLE_VI, ablation_rows, metric_columns, write_ablation
from medfilip.training.settings import RunSettings

RUNS = {
    "medfilip": RunSettings(label_variant="triplet_explanation", target="ssm", loss="mse_ce"),
    "no_ssm": RunSettings(label_variant="triplet_explanation", target="identity", loss="mse_ce"),
    "abl_report": RunSettings(label_variant="report", target="identity", loss="mse_ce"),
    "abl_fg": RunSettings(label_variant="triplet", target="identity", loss="mse_ce"),
    "abl_ssm": RunSettings(label_variant="triplet", target="ssm", loss="mse_ce"),
    "convirt": RunSettings(label_variant="report", target="identity", loss="infonce"),  # another loss: not a row
}
COLUMNS = [
    "run",
    "rsna_auc",
    "rsna_auc_low",
    "rsna_auc_high",
    "rsna_f1",
    "rsna_acc",
    "rsna_f1_valthr",
    "rsna_top1",
    "nih_auc",
    "nih_f1",
    "nih_acc",
    "downstream_mean_auc",
    "downstream_mean_auc_low",
    "downstream_mean_auc_high",
    "mean_auc",
]


def zeroshot_csv(path, runs):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for k, run in enumerate(runs):
            w.writerow({c: (run if c == "run" else f"0.{k}{i:02d}") for i, c in enumerate(COLUMNS)})
    return path


def test_metric_columns_keep_intervals_beside_their_metric():
    assert metric_columns(COLUMNS) == [
        "rsna_auc",
        "rsna_auc_low",
        "rsna_auc_high",
        "rsna_f1",
        "rsna_acc",
        "nih_auc",
        "nih_f1",
        "nih_acc",
        "downstream_mean_auc",
        "downstream_mean_auc_low",
        "downstream_mean_auc_high",
        "mean_auc",
    ]


def test_ablation_table_shape(tmp_path):
    path = zeroshot_csv(tmp_path / "zeroshot.csv", ["convirt", "abl_report", "abl_fg", "abl_ssm", "medfilip", "no_ssm"])
    rows = write_ablation(path, RUNS, tmp_path / "ablation.csv")
    with (tmp_path / "ablation.csv").open(newline="") as fh:
        read = list(csv.DictReader(fh))
        header = list(read[0])
    assert header[:9] == ["step", "row", "entity", "fg", "ssm", "iki", "label_variant", "target", "loss"]
    assert header[9] == "run" and header[-1] == "note" and "rsna_auc_low" in header and "rsna_top1" not in header
    assert [r["row"] for r in read] == ["report", "+ Entity", "+ FG", "+ SSM", "+ IKI (MedFILIP)"]
    # cumulative: each row switches on exactly one more component, in Table VI's order
    flags = [[r[f] == "x" for f in ("entity", "fg", "ssm", "iki")] for r in read]
    assert flags == [
        [False] * 4,
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True] * 4,
    ]
    # runs found by settings: the report row is abl_report (mse_ce), not convirt (infonce)
    assert [r["run"] for r in read] == ["abl_report", "", "abl_fg", "abl_ssm", "medfilip"]
    # metrics are that run's zero-shot row (abl_report is row 1 of the zero-shot table -> "0.1..")
    assert read[0]["rsna_auc"] == "0.101" and read[0]["rsna_auc_low"] == "0.102"
    assert read[4]["downstream_mean_auc"] == "0.411" and read[4]["mean_auc"] == "0.414"
    # a row without a run: empty metrics and a reason
    assert read[1]["rsna_auc"] == "" and "label_variant=category, target=identity" in read[1]["note"]
    assert all(r["note"] == "" for k, r in enumerate(read) if k != 1)
    assert len(rows) == len(TABLE_VI) == 5


def test_run_missing_from_the_zeroshot_table_is_a_note(tmp_path):
    columns = ["run", "rsna_auc", "mean_auc"]
    rows, fields = ablation_rows(
        columns,
        {"medfilip": {"run": "medfilip", "rsna_auc": "0.7", "mean_auc": "0.7"}},
        {"medfilip": RUNS["medfilip"], "abl_ssm": RUNS["abl_ssm"]},
    )
    assert rows[3]["note"] == "run abl_ssm is not in the zero-shot table" and rows[3]["rsna_auc"] == ""
    assert rows[4]["rsna_auc"] == "0.7" and fields[-3:] == ["rsna_auc", "mean_auc", "note"]
    with pytest.raises(FileNotFoundError, match="no zero-shot table"):
        write_ablation(tmp_path / "missing.csv", RUNS, tmp_path / "out.csv")
