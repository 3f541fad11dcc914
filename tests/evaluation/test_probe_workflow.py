"""The linear probe through snakemake on a tiny config: features cached per (run, dataset), the
table written, a new run re-uses the other runs' features, a probe setting refits only the probe."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import yaml

from tests.test_workflow import SNAKEFILE, job_counts, output_of, project  # noqa: F401 (fixture)

TABLE = "results/tables/linear_probe.csv"


def snakemake(workdir, *args, configfile):
    """As tests.test_workflow.snakemake, with room for four trainings and four baselines on a busy machine."""
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
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


def _tiny(project) -> dict:
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg.update(
        {
            "labels": {"variants": ["triplet_explanation", "report"]},
            "images": {"size": 32},
            "datasets": {
                "render_size": 64,
                "rsna": {"n_test": 16, "n_validate": 8, "n_train": 20},
                "vinbig": {"n_test": 24, "n_validate": 12, "n_train": 30},
                **{name: {"enabled": False} for name in ("nih", "siim", "covid")},
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
                "linear_probe": {
                    "fractions": [0.1, 1.0],
                    "seeds": 2,
                    "c_grid": [0.1, 1.0],
                    "batch_size": 16,
                    "baselines": {"image_size": 32, "epochs": 1, "batch_size": 8},
                },
            },
        }
    )
    return cfg


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two trainings, four baselines: ~2 min on 2 idle cores, far more on a busy machine
def test_tiny_linear_probe_table_and_reuse(project):
    cfg = _tiny(project)
    config = project / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(project, "--cores", "2", TABLE, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    counts = job_counts(proc)
    assert counts["features"] == 4 and counts["probe_fit"] == 4 and counts["probe_baseline"] == 4, counts
    results = project / "results"
    for run in ("medfilip", "convirt"):
        for d, n in (("rsna", (20, 8, 16)), ("vinbig", (30, 12, 24))):
            for split, k in zip(("train", "validate", "test"), n):
                meta = yaml.safe_load((results / "features" / run / d / f"{split}.json").read_text())
                assert len(meta["image_ids"]) == k and len(meta["model_sha256"]) == 64
    rows = {r["run"]: r for r in csv.DictReader((results / "tables" / "linear_probe.csv").open())}
    assert set(rows) == {"medfilip", "convirt", "resnet18_random", "convnext_tiny_random", "resnet18_imagenet"}
    assert rows["resnet18_imagenet"]["note"].startswith("skipped: no weights configured")
    for name in ("medfilip", "convirt", "resnet18_random", "convnext_tiny_random"):
        for d in ("rsna", "vinbig"):
            value = rows[name][f"{d}_100pct_auc"]
            assert value and 0.0 <= float(value) <= 1.0, (name, d, rows[name])
            assert float(rows[name][f"{d}_100pct_auc_low"]) <= float(value) <= float(rows[name][f"{d}_100pct_auc_high"])
    assert rows["convirt"]["delta_rsna_100pct_auc_vs_medfilip"] != ""
    assert int(rows["medfilip"]["rsna_10pct_n_seeds"]) >= 1
    assert (results / "tables" / "linear_probe_per_class.csv").stat().st_size > 0
    assert (results / "figures" / "linear_probe.png").stat().st_size > 0

    # adding a run: its training, features and probes only; the others' features are re-used
    more = _tiny(project)
    more["training"]["runs"]["medclip"] = {
        "label_variant": "triplet_explanation",
        "target": "multi_hot",
        "loss": "mse_ce",
    }
    config.write_text(yaml.safe_dump(more))
    counts = job_counts(snakemake(project, "-n", TABLE, configfile=config))
    assert counts.get("features") == 2 and counts.get("probe_fit") == 2 and counts.get("train") == 1, counts
    assert "probe_baseline" not in counts

    # a probe setting: the probe fits and the table, never the features or the baselines' images
    changed = _tiny(project)
    changed["evaluation"]["linear_probe"]["c_grid"] = [0.01, 1.0]
    config.write_text(yaml.safe_dump(changed))
    counts = job_counts(snakemake(project, "-n", TABLE, configfile=config))
    assert counts.get("probe_fit") == 4 and counts.get("linear_probe") == 1, counts
    assert "features" not in counts and "probe_baseline" not in counts and "train" not in counts


def test_a_probed_dataset_without_train_split_is_a_skip_and_a_typo_an_error(project):
    from medfilip.pipeline.config import validate_config
    from medfilip.pipeline.workflows.probe import dataset_skips, probe_datasets

    cfg = _tiny(project)
    cfg["datasets"]["rsna"]["n_train"] = 0
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(project, "-n", TABLE, configfile=project / "config.yaml")
    assert proc.returncode == 0, output_of(proc)
    counts = job_counts(proc)
    # no job for rsna (no train split): vinbig's features and probes only, the table still planned
    assert counts["features"] == 2 and counts["probe_fit"] == 2 and counts["probe_baseline"] == 2, counts
    assert counts["linear_probe"] == 1
    checked = validate_config(cfg)
    assert probe_datasets(checked) == ["vinbig"]
    assert dataset_skips(checked) == {"rsna": "rsna: skipped: no train split (datasets.rsna.n_train = 0)"}

    cfg["evaluation"]["linear_probe"]["datasets"] = ["rsna", "vinbigdata"]
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(project, "-n", TABLE, configfile=project / "config.yaml")
    assert proc.returncode != 0
    assert "unknown dataset 'vinbigdata'" in output_of(proc) and "Traceback" not in output_of(proc)
