"""Means over seeds with bootstrap intervals, and differences to medfilip paired by seed."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medfilip.training.seeds import methods, write_seed_summary
from medfilip.training.settings import RunSettings, TrainingConfig

RUNS = {
    "medfilip": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce"},
    "medfilip_s1": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce", "seed": 1},
    "medfilip_s2": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce", "seed": 2},
    "no_ssm": {"label_variant": "triplet_explanation", "target": "identity", "loss": "mse_ce"},
    "no_ssm_s1": {"label_variant": "triplet_explanation", "target": "identity", "loss": "mse_ce", "seed": 1},
    "no_ssm_s2": {"label_variant": "triplet_explanation", "target": "identity", "loss": "mse_ce", "seed": 2},
    "convirt_s5": {"label_variant": "report", "target": "identity", "loss": "infonce", "seed": 5},
}
AUC = {
    "medfilip": 0.80,
    "medfilip_s1": 0.70,
    "medfilip_s2": 0.75,
    "no_ssm": 0.78,
    "no_ssm_s1": 0.66,
    "no_ssm_s2": 0.74,
    "convirt_s5": 0.6,
}


def test_runs_group_into_methods_by_settings_and_seed():
    cfg = TrainingConfig(runs={k: RunSettings(**v) for k, v in RUNS.items()})
    groups = methods(cfg.runs, default_seed=cfg.seed)
    assert groups[("triplet_explanation", "ssm", "mse_ce")] == {0: "medfilip", 1: "medfilip_s1", 2: "medfilip_s2"}
    assert groups[("report", "identity", "infonce")] == {5: "convirt_s5"}


def test_seed_summary_means_and_paired_deltas(tmp_path):
    zs = tmp_path / "zeroshot.csv"
    with zs.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "rsna_auc", "downstream_mean_auc", "mean_auc"])
        w.writeheader()
        for run, v in AUC.items():
            w.writerow({"run": run, "rsna_auc": v, "downstream_mean_auc": v, "mean_auc": v + 0.01})
    rows = {r["method"]: r for r in write_seed_summary(zs, RUNS, tmp_path / "seeds.csv", n_resamples=500)}
    med, base, conv = rows["medfilip"], rows["no_ssm"], rows["convirt_s5"]
    assert med["n_seeds"] == 3 and med["runs"] == "medfilip medfilip_s1 medfilip_s2"
    assert med["downstream_mean_auc"] == pytest.approx(0.75)
    assert med["downstream_mean_auc_low"] <= 0.75 <= med["downstream_mean_auc_high"]
    assert med["downstream_mean_auc_values"] == "0.8000 0.7000 0.7500"
    assert med["delta_downstream_mean_auc_vs_medfilip"] == ""  # the reference itself
    # paired by seed: differences -0.02, -0.04, -0.01 -> mean -0.0233; an interval below 0
    assert base["delta_downstream_mean_auc_vs_medfilip"] == pytest.approx(np.mean([-0.02, -0.04, -0.01]))
    assert base["delta_downstream_mean_auc_vs_medfilip_high"] < 0
    # unpaired, the seed spread (0.66-0.80) would swamp the 0.02 gap
    assert base["downstream_mean_auc_low"] < med["downstream_mean_auc"]
    assert conv["delta_downstream_mean_auc_vs_medfilip"] == "" and "seeds without a medfilip run: [5]" in conv["note"]
    header = next(csv.reader((tmp_path / "seeds.csv").open()))
    assert header[:7] == ["method", "label_variant", "target", "loss", "n_seeds", "seeds", "runs"]
    assert header[-1] == "note" and "delta_mean_auc_vs_medfilip_low" in header
