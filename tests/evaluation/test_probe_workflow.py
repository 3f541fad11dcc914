"""The linear probe through snakemake on the session's shared tiny run (tests/conftest.py, tiny_pipeline):
features cached per (run, dataset), the table written, a new run re-uses the other runs' features, a probe
setting refits only the probe."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import yaml
from workflow_helpers import PROBE_TABLE as TABLE
from workflow_helpers import TINY_CONFIG, job_counts, output_of, snakemake


def _tiny(project) -> dict:
    """The project's config with the shared tiny run's sections (workflow_helpers.TINY_CONFIG) for the probe."""
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg.update(
        copy.deepcopy({key: TINY_CONFIG[key] for key in ("labels", "images", "datasets", "training", "evaluation")})
    )
    return cfg


@pytest.mark.slow
def test_tiny_linear_probe_table_and_reuse(tiny_pipeline, tmp_path: Path):
    """On the session's shared tiny run (tests/conftest.py): its probe jobs and table, then what re-runs
    (dry runs, with the changed configs saved in tmp_path)."""
    counts = tiny_pipeline.counts()
    assert counts["features"] == 4 and counts["probe_fit"] == 4 and counts["probe_baseline"] == 4, counts
    results = tiny_pipeline.results
    datasets = tiny_pipeline.config()["datasets"]
    assert [(datasets[d]["n_train"], datasets[d]["n_validate"], datasets[d]["n_test"]) for d in ("rsna", "vinbig")] == [
        (20, 8, 16),
        (30, 12, 24),
    ]
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
    more = tiny_pipeline.config()
    more["training"]["runs"]["medclip"] = {
        "label_variant": "triplet_explanation",
        "target": "multi_hot",
        "loss": "mse_ce",
    }
    counts = job_counts(tiny_pipeline.dry_run(tmp_path, TABLE, config=more))
    assert counts.get("features") == 2 and counts.get("probe_fit") == 2 and counts.get("train") == 1, counts
    assert "probe_baseline" not in counts

    # a probe setting: the probe fits and the table, never the features or the baselines' images
    changed = tiny_pipeline.config()
    changed["evaluation"]["linear_probe"]["c_grid"] = [0.01, 1.0]
    counts = job_counts(tiny_pipeline.dry_run(tmp_path, TABLE, config=changed))
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
