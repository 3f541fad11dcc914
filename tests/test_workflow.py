"""The Snakemake workflow: schema, lint, and real runs on a tiny IU-Xray corpus.

The runs use `--directory tmp_path`, so results/ is written there; the shipped
resources/ are found in the repository by the workflow's path fallback
(config/README.md, "Paths").
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from workflow_helpers import REPORTS, ROOT, job_counts, mtimes, output_of, snakemake

from medfilip.pipeline.config import PipelineConfig

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TARGETS = ("results/entities.parquet", "results/tables/extraction_quality.csv")
EXPECTED_PRESENT = {
    "cardiomegaly",
    "pleural effusion",
    "atelectasis",
    "granuloma",
    "pneumothorax",
    "degenerative changes",
}


# -- schema ----------------------------------------------------------------------------------
def _normalise_pydantic(node: dict, defs: dict) -> dict:
    if "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:  # Optional[X]: X's bounds live in its branch
        branches = {k: v for t in node["anyOf"] for k, v in t.items() if k in ("minimum", "maximum")}
        node = {**node, **branches, "type": sorted(t["type"] for t in node["anyOf"])}
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    out = {k: node[k] for k in ("default", "minimum", "maximum", "enum") if k in node}
    out["type"] = node["type"] if isinstance(node.get("type"), list) else [node.get("type", "object")]
    if "properties" in node:
        out["properties"] = {k: _normalise_pydantic(v, defs) for k, v in node["properties"].items()}
        out.pop("default", None)  # object defaults are spelled differently; their leaves are compared
    return out


def _normalise_schema(node: dict) -> dict:
    out = {k: node[k] for k in ("default", "minimum", "maximum", "enum") if k in node}
    out["type"] = sorted(node["type"]) if isinstance(node["type"], list) else [node["type"]]
    if "properties" in node:
        assert node.get("additionalProperties") is False, "every object forbids unknown keys"
        out["properties"] = {k: _normalise_schema(v) for k, v in node["properties"].items()}
        out.pop("default", None)
    return out


def test_schema_mirrors_config_models():
    ours = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    theirs = PipelineConfig.model_json_schema(by_alias=True)
    assert _normalise_schema(ours) == _normalise_pydantic(theirs, theirs["$defs"])

    def leaves(node, path=""):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}{key}: no description"
            yield from leaves(sub, f"{path}{key}.")

    list(leaves(ours))


# -- snakemake -------------------------------------------------------------------------------
@pytest.mark.slow
def test_lint_is_clean(tmp_path: Path):
    proc = snakemake(tmp_path, "--lint", configfile=ROOT / "config" / "config.yaml")
    assert proc.returncode == 0, output_of(proc)
    assert "Lints for" not in output_of(proc)
    assert "Congratulations" in output_of(proc)
    assert not (tmp_path / "results").exists(), "linting writes nothing"


@pytest.mark.slow
def test_run_rerun_and_vocabulary_edit(project: Path):
    config = str(project / "config.yaml")
    proc = snakemake(project, "--cores", "2", *TARGETS, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {"report_shards": 1, "extract_triplets": 2, "entities": 1, "extraction_quality": 1}

    results = project / "results"
    shards = sorted((results / "reports" / "shards").glob("*.parquet"))
    assert [p.name for p in shards] == ["000.parquet", "001.parquet"]
    assert pq.read_table(results / "reports" / "rejects.parquet").num_rows == 1
    entities = pq.read_table(results / "entities.parquet").to_pylist()
    present = {e["category"] for e in entities if e["polarity"] == "present"}
    assert present >= EXPECTED_PRESENT
    assert {e["report_id"] for e in entities} <= {r[0] for r in REPORTS}
    assert (results / "tables" / "extraction_quality.csv").read_text().startswith("category,")
    assert (results / "logs" / "extract_triplets" / "rules" / "000.log").exists()
    assert (results / "benchmarks" / "report_shards" / "report_shards.tsv").exists()
    # the CLI was handed the effective config: merged, defaults filled in, paths resolved
    (effective_file,) = (results / "config").glob("effective-*.yaml")  # one per invocation's config
    effective = yaml.safe_load(effective_file.read_text())
    assert effective["reports"]["n_shards"] == 2
    assert effective["extraction"]["rules"]["vocabulary_dir"] == "vocabulary"
    assert effective["quality"]["mesh_mapping"] == str(ROOT / "resources" / "mesh" / "mesh_to_category.yaml")

    proc = snakemake(project, "--cores", "2", *TARGETS, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert "Nothing to be done" in output_of(proc)

    # a key that does not change any result re-runs nothing; one that does re-runs its stage
    quiet = yaml.safe_load(Path(config).read_text())
    quiet["extraction"]["flush_every"] = 7
    (project / "quiet.yaml").write_text(yaml.safe_dump(quiet))
    proc = snakemake(project, "-n", *TARGETS, configfile=project / "quiet.yaml")
    assert "Nothing to be done" in output_of(proc), output_of(proc)
    reseeded = yaml.safe_load(Path(config).read_text())
    reseeded["reports"]["iu_xray"]["split_seed"] = 3
    (project / "reseeded.yaml").write_text(yaml.safe_dump(reseeded))
    proc = snakemake(project, "-n", *TARGETS, configfile=project / "reseeded.yaml")
    assert job_counts(proc).get("report_shards") == 1, output_of(proc)

    # editing the vocabulary re-runs extraction and what follows it, never the reports
    before = mtimes([*shards, results / "extraction" / "rules" / "000.parquet", results / "entities.parquet"])
    with open(project / "vocabulary" / "triggers.yaml", "a", encoding="utf-8") as fh:
        fh.write("\n# edited by the test\n")
    proc = snakemake(project, "--cores", "2", *TARGETS, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {"extract_triplets": 2, "entities": 1, "extraction_quality": 1}
    after = mtimes(before)
    assert all(after[p] == before[p] for p in shards)
    assert (
        after[results / "extraction" / "rules" / "000.parquet"]
        > before[results / "extraction" / "rules" / "000.parquet"]
    )
    assert after[results / "entities.parquet"] > before[results / "entities.parquet"]


@pytest.mark.slow
def test_jobs_get_command_line_overrides(project: Path):
    # --config values reach the CLI too (through results/config/effective-<hash>.yaml); snakemake
    # reads nested --config values as strings, which must still validate
    proc = snakemake(
        project,
        "--cores",
        "1",
        "results/reports/rejects.parquet",
        "--config",
        "reports={n_shards: 3, iu_xray: {path: iu_reports}}",
        configfile=project / "config.yaml",
    )
    assert proc.returncode == 0, output_of(proc)
    shards = sorted(p.name for p in (project / "results" / "reports" / "shards").glob("*.parquet"))
    assert shards == ["000.parquet", "001.parquet", "002.parquet"]
    (effective,) = (project / "results" / "config").glob("effective-*.yaml")
    assert yaml.safe_load(effective.read_text())["reports"]["n_shards"] == 3


@pytest.mark.slow
def test_bad_config_fails_before_any_job(project: Path):
    bad = yaml.safe_load((project / "config.yaml").read_text())
    bad["reports"]["n_shards"] = 0
    (project / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(project, "--cores", "2", "all", configfile=project / "bad.yaml")
    assert proc.returncode != 0
    assert "reports.n_shards = 0" in output_of(proc)
    assert "Job stats" not in output_of(proc)
    assert not (project / "results").exists()


@pytest.mark.slow
def test_knowledge_edit_reruns_labels_and_below_never_extraction(project: Path):
    """Issue 4's DAG precision: one dictionary entry edited -> labels, embeddings and their
    dependants re-run; reports, extraction and entities do not."""
    from medfilip.embeddings import model_slug

    shutil.copy(ROOT / "resources" / "knowledge" / "dictionary.yaml", project / "knowledge.yaml")
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["knowledge"] = {"path": "knowledge.yaml"}
    cfg["labels"] = {"variants": ["triplet_explanation", "report"]}
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    config = project / "config.yaml"
    embeddings = f"results/embeddings/{model_slug(None)}.parquet"
    targets = ("results/labels.parquet", embeddings, "results/figures/ssm_heatmap.png")
    proc = snakemake(project, "--cores", "2", *targets, "results/tables/extraction_quality.csv", configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {
        "report_shards": 1,
        "extract_triplets": 2,
        "entities": 1,
        "extraction_quality": 1,
        "structured_labels": 1,
        "embed_labels": 1,
        "ssm_heatmap": 1,
    }
    labels = pq.read_table(project / "results" / "labels.parquet").to_pylist()
    assert {r["variant"] for r in labels} == {"triplet_explanation", "report"}
    assert any(r["label"].startswith("mild cardiomegaly, where cardiomegaly is ") for r in labels)
    # E_sim embeds the variants an SSM is built from (the medfilip run's, the heatmap's), not report texts
    assert pq.read_table(project / embeddings).num_rows == len(
        {r["label"] for r in labels if r["variant"] == "triplet_explanation"}
    )

    # edit one entry
    knowledge = yaml.safe_load((project / "knowledge.yaml").read_text())
    knowledge["categories"]["pneumothorax"]["explanation"] = "a dark rim of free air along the chest wall"
    (project / "knowledge.yaml").write_text(yaml.safe_dump(knowledge, sort_keys=False))

    proc = snakemake(project, "-n", *targets, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {"structured_labels": 1, "embed_labels": 1, "ssm_heatmap": 1}
    # and over the whole DAG: nothing upstream of the labels is planned
    proc = snakemake(project, "-n", "all", configfile=config)
    assert proc.returncode == 0, output_of(proc)
    planned = job_counts(proc)
    assert {"structured_labels", "embed_labels"} <= set(planned)
    assert not {"report_shards", "extract_triplets", "entities", "extraction_quality"} & set(planned), planned

    # running it embeds only the changed label strings
    proc = snakemake(project, "--cores", "2", *targets, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    log = (project / "results" / "logs" / "embed_labels" / "embed_labels.log").read_text()
    new = pq.read_table(project / "results" / "labels.parquet").to_pylist()
    changed = {r["label"] for r in new} - {r["label"] for r in labels}
    assert changed and all("a dark rim of free air along the chest wall" in t for t in changed)
    assert re.search(rf"\b{len(changed)} embedded\b", log), log


@pytest.mark.slow
def test_tiny_end_to_end_zeroshot(tiny_pipeline, tmp_path: Path):
    """`results/tables/zeroshot.csv` from nothing: reports -> extraction -> labels -> embeddings ->
    phantom corpus + the twins -> two training runs -> zero-shot table, all through snakemake (the
    session's shared tiny run, tests/conftest.py)."""
    cfg = tiny_pipeline.config()
    counts = tiny_pipeline.counts()
    twins = [
        name for name, section in cfg["datasets"].items() if isinstance(section, dict) and section.get("enabled", True)
    ]
    assert sorted(twins) == ["covid", "rsna", "siim", "vinbig"]
    assert counts["train"] == 2 and counts["dataset_twin"] == len(twins) and counts["preprocess_dataset"] == len(twins)
    assert counts["corpus_images"] == 1 and counts["zeroshot"] == 1 and counts["embed_labels"] == 1
    assert counts["train_curves"] == 1

    results = tiny_pipeline.results
    table = list(csv.DictReader((results / "tables" / "zeroshot.csv").open()))
    assert sorted(row["run"] for row in table) == ["convirt", "medfilip"]  # yaml.safe_dump sorted the runs
    for row in table:
        for column in ("rsna_auc", "covid_auc", "covid_top1", "mean_auc"):
            assert 0.0 <= float(row[column]) <= 1.0, (column, row)
    assert (results / "figures" / "zeroshot.png").stat().st_size > 0
    log = list(csv.DictReader((results / "models" / "medfilip" / "train_log.csv").open()))
    measured = yaml.safe_load((results / "models" / "medfilip" / "config.yaml").read_text())["measured"]
    batch = cfg["training"]["batch_size"]
    assert measured["steps"] == len(log) == measured["n_images"] // batch >= 1  # 1 epoch, last batch dropped
    assert all(float(r["loss"]) > 0 for r in log)
    # the rendered twins are DICOM / PNG in the real layouts, read back by the real readers
    rsna = cfg["datasets"]["rsna"]
    n_rsna = rsna["n_test"] + rsna["n_validate"] + rsna["n_train"]
    assert len(list((results / "twins" / "rsna" / "stage_2_train_images").glob("*.dcm"))) == n_rsna
    assert (results / "twins" / "covid" / "COVID").is_dir()

    proc = tiny_pipeline.dry_run(tmp_path, "results/tables/zeroshot.csv")
    assert "Nothing to be done" in output_of(proc), output_of(proc)


def test_embedded_variants_cover_ssm_runs_and_the_heatmap():
    from medfilip.pipeline.config import validate_config
    from medfilip.pipeline.workflows.training import embedded_variants

    # the default: medfilip's SSM labels (= the heatmap's); convirt's report texts are not embedded
    assert embedded_variants(validate_config({})) == ["triplet_explanation"]
    ablation = {
        "no_fg": {"label_variant": "category", "target": "ssm", "loss": "mse_ce"},
        "convirt": {"label_variant": "report", "target": "identity", "loss": "infonce"},
    }
    assert embedded_variants(validate_config({"training": {"runs": ablation}})) == ["category", "triplet_explanation"]
    # without the full template, the heatmap draws (and E_sim embeds) the fullest variant written
    no_template = validate_config(
        {"labels": {"variants": ["triplet", "report"]}, "training": {"runs": {"convirt": ablation["convirt"]}}}
    )
    assert embedded_variants(no_template) == ["triplet"]
