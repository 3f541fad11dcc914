"""The evaluation rules through Snakemake on the session's shared tiny run (tests/conftest.py, tiny_pipeline):
reports -> ... -> two trained runs -> zeroshot.csv (intervals, negation, the control), retrieval.csv and
case_study.png."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from workflow_helpers import EVALUATION_TARGETS, job_counts, output_of


@pytest.mark.slow
def test_tiny_run_writes_retrieval_case_study_and_zeroshot_with_intervals(tiny_pipeline, tmp_path: Path):
    """On the session's shared tiny run (tests/conftest.py): 60 reports, 60 % held out, two trained runs."""
    config = tiny_pipeline.config()
    assert len(list((tiny_pipeline.root / "iu_reports").glob("*.xml"))) == 60
    assert config["reports"]["iu_xray"]["split_fractions"]["train"] == 0.4
    assert config["evaluation"]["retrieval"]["ks"] == [1, 5] and config["evaluation"]["case_study"]["n_images"] == 3
    counts = tiny_pipeline.counts()
    # each run's held-out images are encoded once, by one job, for all three evaluations
    assert counts["image_embeddings"] == 2 and counts["zeroshot"] == counts["retrieval"] == counts["case_study"] == 1
    results = tiny_pipeline.results

    zeroshot = {r["run"]: r for r in csv.DictReader((results / "tables" / "zeroshot.csv").open())}
    assert set(zeroshot) == {"medfilip", "convirt"}
    for row in zeroshot.values():
        for column in ("covid_acc", "covid_f1", "covid_auc", "covid_auc_neg", "covid_mismatched_auc", "mean_auc"):
            value, low, high = (float(row[c]) for c in (column, f"{column}_low", f"{column}_high"))
            assert 0.0 <= low <= value <= high <= 1.0, (column, row[column], low, high)
    assert "covid_mismatched" in zeroshot["convirt"]["note"]
    # each run scored with its own text form too; the report-text run with a report-style sentence
    assert zeroshot["convirt"]["own_text_variant"] == "report_sentence"
    assert zeroshot["medfilip"]["own_mean_auc"] == zeroshot["medfilip"]["mean_auc"]
    assert "corpus_severity" in zeroshot["convirt"]["note"]
    delta = zeroshot["convirt"]
    d, lo, hi = (float(delta[f"delta_covid_auc_vs_medfilip{s}"]) for s in ("", "_low", "_high"))
    assert lo <= d <= hi
    assert d == pytest.approx(float(delta["covid_auc"]) - float(zeroshot["medfilip"]["covid_auc"]), abs=2e-4)

    retrieval = list(csv.DictReader((results / "tables" / "retrieval.csv").open()))
    # runs x prompts (template, baseline, the run's own text) x directions x relevance
    assert len(retrieval) == 2 * 3 * 2 * 2
    own = {r["run"]: r["text_variant"] for r in retrieval if r["prompt"] == "own"}
    assert own == {"medfilip": "triplet_explanation", "convirt": "report_sentence"}
    n_images = int(retrieval[0]["n_images"])
    assert n_images >= 20  # 60 % of 60 reports are held out, each with one finding
    for r in retrieval:
        assert 0.0 <= float(r["p_at_1_low"]) <= float(r["p_at_1"]) <= float(r["p_at_1_high"]) <= 1.0
        assert float(r["r_at_5"]) >= float(r["r_at_1"])
    assert (results / "figures" / "case_study.png").stat().st_size > 10_000
    case = list(csv.DictReader((results / "tables" / "case_study.csv").open()))
    assert len(case) == 3 * 3 * 2  # images x texts x runs
    for rule in ("retrieval", "case_study"):
        assert (results / "logs" / rule / f"{rule}.log").exists()
        assert (results / "benchmarks" / rule / f"{rule}.tsv").exists()

    # a retrieval setting re-runs retrieval only: no image is encoded again, no other table re-made
    config["evaluation"]["retrieval"]["ks"] = [1, 5, 10]
    proc = tiny_pipeline.dry_run(tmp_path, *EVALUATION_TARGETS, config=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {"retrieval": 1}
