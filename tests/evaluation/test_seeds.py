"""Means over seeds with Student-t intervals, paired differences to medfilip, and the power statement."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from medfilip.evaluation.seeds import (
    detectable_difference,
    methods,
    paired_t_power,
    paired_t_seeds,
    seeds_column,
    t_interval,
    write_seed_summary,
)
from medfilip.training.settings import RunSettings, TrainingConfig, run_value

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


def _zeroshot(tmp_path, auc=AUC):
    zs = tmp_path / "zeroshot.csv"
    with zs.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "rsna_auc", "downstream_mean_auc", "mean_auc"])
        w.writeheader()
        for run, v in auc.items():
            w.writerow({"run": run, "rsna_auc": v, "downstream_mean_auc": v, "mean_auc": v + 0.01})
    return zs


def test_runs_group_into_methods_by_settings_and_seed():
    cfg = TrainingConfig(runs={k: RunSettings(**v) for k, v in RUNS.items()})
    groups = methods(cfg.runs, default_seed=cfg.seed)
    assert groups[("triplet_explanation", "ssm", "mse_ce")] == {0: "medfilip", 1: "medfilip_s1", 2: "medfilip_s2"}
    assert groups[("report", "identity", "infonce")] == {5: "convirt_s5"}
    # the public helper reads a setting from a model or a plain dict alike
    assert run_value(cfg.runs["convirt_s5"], "loss") == run_value(RUNS["convirt_s5"], "loss") == "infonce"


def test_t_interval_equals_scipy():
    x = np.array([0.712, 0.694, 0.731, 0.705, 0.688])
    iv = t_interval(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (iv.mean, iv.low, iv.high, iv.n) == (pytest.approx(x.mean()), pytest.approx(low), pytest.approx(high), 5)
    assert iv.sd == pytest.approx(np.std(x, ddof=1))
    assert iv.p == pytest.approx(stats.ttest_1samp(x, 0.0).pvalue)
    # a 3-value interval is wide: t(0.975, 2) = 4.30, not the normal 1.96
    iv3 = t_interval([0.80, 0.70, 0.75])
    assert iv3.high - iv3.mean == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-5)
    one = t_interval([0.8, float("nan")])
    assert one.n == 1 and one.mean == 0.8 and math.isnan(one.low) and math.isnan(one.sd)


def test_power_seeds_match_textbook_values():
    # two-sided paired t, alpha 0.05, 80 % power: d = 1 -> 10 pairs, d = 0.5 -> 34 (Cohen; G*Power)
    assert paired_t_seeds(0.01, 0.01) == 10
    assert paired_t_seeds(0.005, 0.01) == 34
    assert paired_t_power(10, 1.0) >= 0.8 > paired_t_power(9, 1.0)
    assert paired_t_seeds(-0.01, 0.018) == paired_t_seeds(0.01, 0.018) == 28  # the 10-27 (normal: 26)
    assert paired_t_seeds(0.01, 0.0) is None and paired_t_seeds(0.01, float("nan")) is None


def test_detectable_difference_inverts_the_seeds_needed():
    # Cohen d = 1 needs 10 pairs: 10 pairs at SD 0.01 detect 0.01 (just under), 9 pairs do not
    assert detectable_difference(10, 0.01) <= 0.01 < detectable_difference(9, 0.01)
    d = detectable_difference(34, 0.02, power=0.9, alpha=0.1)
    assert paired_t_power(34, d / 0.02, alpha=0.1) == pytest.approx(0.9, abs=1e-6)
    assert detectable_difference(60, 0.027) == pytest.approx(0.00993, abs=5e-5)  # the worlds' sizing
    assert math.isnan(detectable_difference(1, 0.01)) and math.isnan(detectable_difference(10, 0.0))


def test_power_agrees_with_simulation():
    rng = np.random.default_rng(7)
    n, effect = 10, 1.0
    x = rng.normal(effect, 1.0, size=(20_000, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    simulated = float(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)))
    assert simulated == pytest.approx(paired_t_power(n, effect), abs=0.01)


def cell(x):
    """Table cells are rounded to 6 decimals."""
    return pytest.approx(x, abs=1e-6)


def test_seed_summary_means_and_paired_deltas(tmp_path):
    zs = _zeroshot(tmp_path)
    rows = {r["method"]: r for r in write_seed_summary(zs, RUNS, tmp_path / "seeds.csv")}
    med, base, conv = rows["medfilip"], rows["no_ssm"], rows["convirt_s5"]
    assert med["n_seeds"] == 3 and med["runs"] == "medfilip medfilip_s1 medfilip_s2"
    low, high = stats.t.interval(0.95, 2, loc=0.75, scale=stats.sem([0.8, 0.7, 0.75]))
    assert (med["downstream_mean_auc"], med["downstream_mean_auc_low"], med["downstream_mean_auc_high"]) == (
        cell(0.75),
        cell(low),
        cell(high),
    )
    assert med["downstream_mean_auc_values"] == "0.8000 0.7000 0.7500"
    assert med["delta_downstream_mean_auc_vs_medfilip"] == ""  # the reference itself
    # paired by seed: differences -0.02, -0.04, -0.01
    d = np.array([-0.02, -0.04, -0.01])
    low, high = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    delta = "delta_downstream_mean_auc_vs_medfilip"
    assert base[delta] == cell(d.mean())
    assert (base[f"{delta}_low"], base[f"{delta}_high"]) == (cell(low), cell(high))
    assert base[f"{delta}_sd"] == cell(d.std(ddof=1)) and base[f"{delta}_n"] == 3
    p = stats.ttest_rel([0.78, 0.66, 0.74], [0.8, 0.7, 0.75]).pvalue
    assert base[f"{delta}_p"] == pytest.approx(p, rel=1e-3)
    assert base[seeds_column("downstream_mean_auc")] == paired_t_seeds(0.01, d.std(ddof=1))
    # unpaired, the seed spread (0.66-0.80) swamps the 0.02 gap
    assert base["downstream_mean_auc_low"] < med["downstream_mean_auc"]
    assert conv[delta] == "" and "seeds without a medfilip run: [5]" in conv["note"]
    assert conv["downstream_mean_auc_low"] == "" and "one seed" in conv["note"]
    header = next(csv.reader((tmp_path / "seeds.csv").open()))
    assert header[:7] == ["method", "label_variant", "target", "loss", "n_seeds", "seeds", "runs"]
    assert header[-1] == "note" and "delta_mean_auc_vs_medfilip_low" in header
    assert "delta_mean_auc_seeds_for_0.01" in header


def test_the_reference_run_is_the_configured_one(tmp_path):
    # evaluation.reference_run: the paired differences are to that method, named after it
    zs = _zeroshot(tmp_path)
    rows = {r["method"]: r for r in write_seed_summary(zs, RUNS, tmp_path / "seeds.csv", reference_run="no_ssm")}
    delta = "delta_downstream_mean_auc_vs_no_ssm"
    assert rows["no_ssm"][delta] == "" and "delta_downstream_mean_auc_vs_medfilip" not in rows["medfilip"]
    # medfilip minus no_ssm, paired by seed: 0.02, 0.04, 0.01
    assert rows["medfilip"][delta] == cell(np.mean([0.02, 0.04, 0.01]))
    assert "seeds without a no_ssm run: [5]" in rows["convirt_s5"]["note"]


def test_seed_summary_rejects_a_table_without_runs(tmp_path):
    bad = tmp_path / "zeroshot.csv"
    bad.write_text("name,downstream_mean_auc\nmedfilip,0.7\n")
    with pytest.raises(ValueError, match="no 'run' column"):
        write_seed_summary(bad, RUNS, tmp_path / "seeds.csv")
    with pytest.raises(FileNotFoundError, match="no zero-shot table"):
        write_seed_summary(tmp_path / "missing.csv", RUNS, tmp_path / "seeds.csv")
