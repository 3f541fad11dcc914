"""The pre-registered primary endpoint (evaluation.primary_endpoint) and its row of seeds.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from medfilip.evaluation.seeds import endpoint_row, paired_t_seeds, write_seed_summary
from medfilip.pipeline.config import validate_config

RUNS = {
    "medfilip": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce"},
    "no_ssm": {"label_variant": "triplet_explanation", "target": "identity", "loss": "mse_ce"},
}
for k in (1, 2, 3):
    RUNS[f"medfilip_s{k}"] = {**RUNS["medfilip"], "seed": k}
    RUNS[f"no_ssm_s{k}"] = {**RUNS["no_ssm"], "seed": k}
MEDFILIP = [0.80, 0.79, 0.82, 0.81]
NO_SSM = [0.79, 0.80, 0.80, 0.78]
ENDPOINT = {"metric": "own_downstream_mean_auc", "contrast": "medfilip - no_ssm", "alpha": 0.1}


def table(tmp_path: Path) -> Path:
    rows = []
    for k, (a, b) in enumerate(zip(MEDFILIP, NO_SSM)):
        suffix = "" if k == 0 else f"_s{k}"
        for run, v in ((f"medfilip{suffix}", a), (f"no_ssm{suffix}", b)):
            rows.append({"run": run, "downstream_mean_auc": v - 0.1, "mean_auc": v - 0.2, "own_downstream_mean_auc": v})
    path = tmp_path / "zeroshot.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_endpoint_is_a_validated_key():
    cfg = validate_config({"training": {"runs": RUNS}, "evaluation": {"primary_endpoint": ENDPOINT}})
    ep = cfg.evaluation.primary_endpoint
    assert ep.methods == ("medfilip", "no_ssm") and ep.difference_that_matters == 0.01 and ep.power == 0.8
    assert not validate_config({}).evaluation.primary_endpoint.enabled
    for bad in ({**ENDPOINT, "contrast": "medfilip minus no_ssm"}, {**ENDPOINT, "alpha": 0.7}, {"contrast": "a - b"}):
        with pytest.raises((ValidationError, ValueError)):
            validate_config({"evaluation": {"primary_endpoint": bad}})


def test_the_endpoint_row_is_the_paired_t_of_scipy(tmp_path):
    cfg = validate_config({"training": {"runs": RUNS}, "evaluation": {"primary_endpoint": ENDPOINT}})
    rows = write_seed_summary(table(tmp_path), RUNS, tmp_path / "seeds.csv", endpoint=cfg.evaluation.primary_endpoint)
    row = rows[-1]
    assert row["method"] == "primary_endpoint" and row["n_seeds"] == 4
    d = np.array(MEDFILIP) - np.array(NO_SSM)
    low, high = stats.t.interval(0.9, 3, loc=d.mean(), scale=stats.sem(d))
    assert row["endpoint_difference"] == pytest.approx(d.mean(), abs=1e-6)
    assert (row["endpoint_low"], row["endpoint_high"]) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert row["endpoint_p"] == pytest.approx(stats.ttest_rel(MEDFILIP, NO_SSM).pvalue, rel=1e-3)
    assert row["endpoint_seeds_needed"] == paired_t_seeds(0.01, d.std(ddof=1), alpha=0.1, power=0.8)
    assert row["endpoint_level"] == pytest.approx(0.9) and "pre-registered" in row["note"]
    with open(tmp_path / "seeds.csv", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert written[-1]["endpoint_contrast"] == "medfilip - no_ssm" and written[0]["method"] == "medfilip"


def test_an_unknown_method_is_named(tmp_path):
    cfg = validate_config({"evaluation": {"primary_endpoint": {**ENDPOINT, "contrast": "medfilip - shuffled"}}})
    with pytest.raises(ValueError, match=r"no method \['shuffled'\] in training.runs"):
        endpoint_row({}, RUNS, cfg.evaluation.primary_endpoint)
