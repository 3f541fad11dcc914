"""The segmentation rules through snakemake on the session's shared tiny run (tests/conftest.py,
tiny_pipeline): reports -> ... -> two trained runs and the SIIM twin -> one segmentation job per run +
the random-init baseline -> segmentation.csv and its figure. Then the DAG: adding a run fine-tunes that run only; a segmentation setting re-runs
segmentation only; the bootstrap seed re-runs the table only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from workflow_helpers import SEGMENTATION_TARGETS as TARGETS
from workflow_helpers import job_counts, output_of

from medfilip.datasets.settings import SiimSettings

HAS_TRAIN_SPLITS = "n_train" in SiimSettings.model_fields  # datasets.<name>.n_train (the probe's train splits)


@pytest.mark.slow
def test_tiny_segmentation_through_snakemake(tiny_pipeline, tmp_path: Path):
    """On the session's shared tiny run (tests/conftest.py): its segmentation jobs, tables and figure, then
    what re-runs (dry runs, with the changed configs saved in tmp_path)."""
    counts = tiny_pipeline.counts()
    assert (
        counts["segmentation_run"] == 2 and counts["segmentation_baseline"] == 1 and counts["segmentation_table"] == 1
    )
    results = tiny_pipeline.results
    rows = list(csv.DictReader((results / "tables" / "segmentation.csv").open()))
    assert (results / "figures" / "segmentation.png").stat().st_size > 0
    assert (results / "logs" / "segmentation" / "medfilip.log").exists()
    assert (results / "benchmarks" / "segmentation" / "random_init.tsv").exists()
    for row in rows:  # no blank cell without a note, never a NaN
        assert "nan" not in {v.lower() for v in row.values()}
        if any(v == "" for k, v in row.items() if k != "note"):
            assert row["note"], row
    if HAS_TRAIN_SPLITS:
        # the runs in config order (yaml.safe_dump sorted them), then the baseline and the reference
        assert [r["run"] for r in rows] == ["convirt", "medfilip", "random_init", "all_empty"]
        for row in rows:
            assert 0.0 <= float(row["dice_100pct"]) <= 1.0 and 0.0 <= float(row["dice_50pct"]) <= 1.0
        assert rows[0]["delta_dice_100pct_vs_medfilip"] != "" and rows[1]["delta_dice_100pct_vs_medfilip"] == ""
        summary = json.loads((results / "segmentation" / "runs" / "medfilip" / "summary.json").read_text())
        assert tiny_pipeline.config()["datasets"]["siim"]["n_train"] == 16
        assert [r["n_train"] for r in summary["fractions"]] == [8, 16]
        assert summary["image_arch"] == "resnet18" and "pretrained" in summary["encoder"]
    else:  # the store has no train split yet: documented skip rows, the workflow still finishes
        assert [r["run"] for r in rows] == ["convirt", "medfilip", "random_init"]
        assert all("50pct, 100pct: skipped: " in r["note"] and "no train split" in r["note"] for r in rows)

    proc = tiny_pipeline.dry_run(tmp_path, *TARGETS)
    assert "Nothing to be done" in output_of(proc), output_of(proc)

    # adding a run trains and fine-tunes that run only
    cfg = tiny_pipeline.config()
    cfg["training"]["runs"]["medclip"] = {
        "label_variant": "triplet_explanation",
        "target": "multi_hot",
        "loss": "mse_ce",
    }
    proc = tiny_pipeline.dry_run(tmp_path, *TARGETS, config=cfg)
    assert job_counts(proc) == {"train": 1, "segmentation_run": 1, "segmentation_table": 1}, output_of(proc)

    # a segmentation setting re-runs segmentation and nothing upstream; the device re-runs nothing
    cfg = tiny_pipeline.config()
    cfg["evaluation"]["segmentation"]["lr"] = 0.01
    proc = tiny_pipeline.dry_run(tmp_path, *TARGETS, config=cfg)
    assert job_counts(proc) == {"segmentation_run": 2, "segmentation_baseline": 1, "segmentation_table": 1}, output_of(
        proc
    )
    cfg = tiny_pipeline.config()
    cfg["evaluation"]["segmentation"]["device"] = "auto"
    proc = tiny_pipeline.dry_run(tmp_path, *TARGETS, config=cfg)
    assert "Nothing to be done" in output_of(proc), output_of(proc)


def test_segmentation_targets_follow_the_config():
    from medfilip.pipeline.config import rule_settings, validate_config
    from medfilip.pipeline.workflows.segmentation import run_folders, segmentation_targets

    cfg = validate_config({})
    assert segmentation_targets(cfg) == [
        "results/tables/segmentation.csv",
        "results/tables/segmentation_long.csv",
        "results/figures/segmentation.png",
    ]
    assert run_folders(cfg)[-1] == "results/segmentation/baseline/random_init"
    assert [f.rsplit("/", 1)[-1] for f in run_folders(cfg)[:-1]] == list(cfg.training.runs)
    assert segmentation_targets(validate_config({"datasets": {"siim": {"enabled": False}}})) == []
    assert segmentation_targets(validate_config({"evaluation": {"segmentation": {"enabled": False}}})) == []
    settings = cfg.model_dump(mode="json", by_alias=True)
    job = rule_settings(settings, "segmentation_run")
    assert "evaluation.segmentation.device" not in job and "evaluation.segmentation.fractions" in job
    assert job["training.model.image_arch"] == "resnet18" and job["training.model.image_channels"] == 1
    assert rule_settings(settings, "segmentation_table") == {
        "evaluation.bootstrap.n_resamples": 1000,
        "evaluation.bootstrap.seed": 0,
        "evaluation.reference_run": "medfilip",
    }
