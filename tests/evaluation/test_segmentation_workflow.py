"""The segmentation rules through snakemake on a tiny config: reports -> ... -> two trained runs and
the SIIM twin -> one segmentation job per run + the random-init baseline -> segmentation.csv and
its figure. Then the DAG: adding a run fine-tunes that run only; a segmentation setting re-runs
segmentation only; the bootstrap seed re-runs the table only."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import subprocess  # noqa: E402

from test_workflow import REPORTS, SNAKEFILE, job_counts, openi_xml, output_of  # noqa: E402

from medfilip.datasets.settings import SiimSettings  # noqa: E402

TARGETS = (
    "results/tables/segmentation.csv",
    "results/tables/segmentation_long.csv",
    "results/figures/segmentation.png",
)
HAS_TRAIN_SPLITS = "n_train" in SiimSettings.model_fields  # datasets.<name>.n_train (the probe's train splits)


def snakemake(workdir: Path, *args: str, configfile: str | Path) -> subprocess.CompletedProcess:
    """As tests/test_workflow.py's, with room for two pretraining runs and five fine-tunings on a busy machine."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *args,
        "--configfile",
        str(configfile),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    corpus = tmp_path / "iu_reports"
    corpus.mkdir()
    for rid, findings, impression, mesh in REPORTS:
        (corpus / f"{rid.removeprefix('CXR')}.xml").write_text(
            openi_xml(rid, findings, impression, mesh), encoding="utf-8"
        )
    siim = {"n_test": 12, "n_validate": 8, **({"n_train": 16} if HAS_TRAIN_SPLITS else {})}
    config = {
        "reports": {"source": "iu_xray", "n_shards": 1, "iu_xray": {"path": "iu_reports"}},
        "labels": {"variants": ["triplet_explanation", "report"]},
        "images": {"size": 32},
        "datasets": {
            "render_size": 64,
            "siim": siim,
            **{name: {"enabled": False} for name in ("rsna", "nih", "vinbig", "covid")},
        },
        "training": {
            "epochs": 1,
            "batch_size": 2,
            "num_workers": 0,
            "checkpoint_every": 2,
            "model": {"embed_dim": 16, "max_length": 24},
            "runs": {
                "medfilip": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce"},
                "convirt": {"label_variant": "report", "target": "identity", "loss": "infonce"},
            },
        },
        "evaluation": {
            "corpus": {"enabled": False},
            "batch_size": 8,
            "segmentation": {
                "image_size": 32,
                "fractions": [0.5, 1.0],
                "min_steps": 2,
                "max_steps": 2,
                "checks": 1,
                "batch_size": 4,
                "decoder_channels": [16, 16, 8, 8, 8],
                "examples": 2,
                "device": "cpu",
            },
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_tiny_segmentation_through_snakemake(project: Path):
    config = project / "config.yaml"
    proc = snakemake(project, "--cores", "2", *TARGETS, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    counts = job_counts(proc)
    assert (
        counts["segmentation_run"] == 2 and counts["segmentation_baseline"] == 1 and counts["segmentation_table"] == 1
    )
    results = project / "results"
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
        assert [r["n_train"] for r in summary["fractions"]] == [8, 16]
        assert summary["image_arch"] == "resnet18" and "pretrained" in summary["encoder"]
    else:  # the store has no train split yet: documented skip rows, the workflow still finishes
        assert [r["run"] for r in rows] == ["convirt", "medfilip", "random_init"]
        assert all("50pct, 100pct: skipped: " in r["note"] and "no train split" in r["note"] for r in rows)

    proc = snakemake(project, "-n", *TARGETS, configfile=config)
    assert "Nothing to be done" in output_of(proc), output_of(proc)

    # adding a run trains and fine-tunes that run only
    cfg = yaml.safe_load(config.read_text())
    cfg["training"]["runs"]["medclip"] = {
        "label_variant": "triplet_explanation",
        "target": "multi_hot",
        "loss": "mse_ce",
    }
    (project / "more.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(project, "-n", *TARGETS, configfile=project / "more.yaml")
    assert job_counts(proc) == {"train": 1, "segmentation_run": 1, "segmentation_table": 1}, output_of(proc)

    # a segmentation setting re-runs segmentation and nothing upstream; the device re-runs nothing
    cfg = yaml.safe_load(config.read_text())
    cfg["evaluation"]["segmentation"]["lr"] = 0.01
    (project / "lr.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(project, "-n", *TARGETS, configfile=project / "lr.yaml")
    assert job_counts(proc) == {"segmentation_run": 2, "segmentation_baseline": 1, "segmentation_table": 1}, output_of(
        proc
    )
    cfg = yaml.safe_load(config.read_text())
    cfg["evaluation"]["segmentation"]["device"] = "auto"
    (project / "device.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(project, "-n", *TARGETS, configfile=project / "device.yaml")
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
