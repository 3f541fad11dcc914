"""The evaluation rules through Snakemake on a tiny config: reports -> ... -> two trained runs ->
zeroshot.csv (intervals, negation, the control), retrieval.csv and case_study.png."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "workflow" / "Snakefile"

# (FINDINGS, IMPRESSION, MeSH): the corpus images are drawn from the MeSH terms (one finding each)
KINDS = [
    ("The heart is mildly enlarged.", "Mild cardiomegaly.", ["Cardiomegaly/mild"]),
    ("The heart is severely enlarged.", "Severe cardiomegaly.", ["Cardiomegaly/severe"]),
    ("There is a small right pleural effusion.", "Small right pleural effusion.", ["Pleural Effusion/right/small"]),
    ("Left basilar atelectasis.", "Left basilar atelectasis.", ["Pulmonary Atelectasis/base/left"]),
    ("Moderate right-sided pneumothorax.", "Moderate right pneumothorax.", ["Pneumothorax/right/moderate"]),
]


def openi_xml(n: int, findings: str, impression: str, mesh: list[str]) -> str:
    majors = "".join(f"<major>{m}</major>" for m in mesh)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation><meta type="rr"/><uId id="CXR{n}"/><pmcId id="{n}"/>
<MedlineCitation Owner="Indiana University" Status="supplied by publisher"><Article PubModel="Electronic"><Abstract>
<AbstractText Label="FINDINGS">{findings}</AbstractText><AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation><MeSH>{majors}</MeSH>
<parentImage id="CXR{n}_IM-000{n}-1001"><figureId>F1</figureId></parentImage></eCitation>
"""


def job_counts(text: str) -> dict[str, int]:
    """Rule -> number of jobs, from snakemake's "Job stats" table."""
    start = text.find("Job stats:")
    counts = {}
    for line in text[start:].splitlines()[3:] if start >= 0 else []:
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.mark.slow
def test_tiny_run_writes_retrieval_case_study_and_zeroshot_with_intervals(tmp_path: Path):
    corpus = tmp_path / "iu_reports"
    corpus.mkdir()
    for n in range(1, 61):
        (corpus / f"{n}.xml").write_text(openi_xml(n, *KINDS[n % len(KINDS)]), encoding="utf-8")
    shutil.copytree(ROOT / "resources" / "vocabulary", tmp_path / "vocabulary")
    config = {
        "reports": {
            "source": "iu_xray",
            "n_shards": 1,
            "iu_xray": {"path": "iu_reports", "split_fractions": {"train": 0.4, "validate": 0.3, "test": 0.3}},
        },
        "extraction": {"rules": {"vocabulary_dir": "vocabulary"}},
        "labels": {"variants": ["triplet_explanation", "report"]},
        "images": {"size": 32},
        "datasets": {
            "render_size": 64,
            "covid": {"n_test": 12, "n_validate": 8},
            **{name: {"enabled": False} for name in ("rsna", "nih", "vinbig", "siim")},
        },
        "training": {
            "epochs": 1,
            "batch_size": 4,
            "num_workers": 0,
            "checkpoint_every": 50,
            "model": {"embed_dim": 16, "max_length": 24},
            "runs": {
                "medfilip": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce"},
                "convirt": {"label_variant": "report", "target": "identity", "loss": "infonce"},
            },
        },
        "evaluation": {
            "batch_size": 16,
            "bootstrap": {"n_resamples": 200, "seed": 0},
            "corpus": {
                "single_label_classes": ["normal", "cardiomegaly", "pneumothorax"],
                "multi_label_classes": ["cardiomegaly", "pneumothorax"],
                "fine_grained_min_count": 1,
            },
            "retrieval": {"ks": [1, 5]},
            "case_study": {"n_images": 3},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    targets = ["results/tables/zeroshot.csv", "results/tables/retrieval.csv", "results/figures/case_study.png"]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        *targets,
        "--configfile",
        str(tmp_path / "config.yaml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    # each run's held-out images are encoded once, by one job, for all three evaluations
    assert counts["image_embeddings"] == 2 and counts["zeroshot"] == counts["retrieval"] == counts["case_study"] == 1
    results = tmp_path / "results"

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
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert job_counts(proc.stdout + proc.stderr) == {"retrieval": 1}
