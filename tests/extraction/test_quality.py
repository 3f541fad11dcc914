"""Scoring against MeSH annotations and the entities table, on tables built here with known answers."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medfilip.extraction.entities import build_entities
from medfilip.extraction.quality import MeshMapping, score_extraction, write_quality


@pytest.fixture(scope="module")
def mapping(repo, rules_backend):
    return MeshMapping.load(repo / "resources" / "mesh" / "mesh_to_category.yaml", rules_backend.vocabulary)


def test_mesh_terms_map_heads_and_anatomy_modifiers(mapping):
    lab = mapping.label("Pulmonary Atelectasis/base/left/mild")
    assert (lab.category, set(lab.lateralities), set(lab.regions), set(lab.severity_levels)) == (
        "atelectasis",
        {"left"},
        {"base"},
        {1},
    )
    assert mapping.label("Lung/hypoinflation/mild").category == "hypoinflation"  # finding as modifier
    assert mapping.label("Thoracic Vertebrae/degenerative").category == "degenerative changes"
    assert mapping.label("Shoulder/right/degenerative").category == "degenerative changes"  # wildcard head
    assert mapping.label("normal") is None
    assert mapping.label("Heart Atria/enlarged") == "heart atria"  # unmapped head is reported by name


def test_unknown_category_in_mapping_is_an_error(tmp_path, rules_backend):
    bad = tmp_path / "m.yaml"
    bad.write_text("rules:\n  - {head: Foo, category: not-a-category}\n")
    with pytest.raises(
        ValueError, match=r"m.yaml: rules\[0\] \('Foo'\): category 'not-a-category' is not in the vocabulary"
    ):
        MeshMapping.load(bad, rules_backend.vocabulary)


def _entities(rows):
    cols = ["report_id", "category", "polarity", "location", "severity"]
    return pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})


def test_precision_recall_f1_and_agreement(mapping):
    reports = pa.table(
        {
            "report_id": ["a", "b", "c", "d", "e"],
            "annotations": [
                ["Cardiomegaly/mild", "Pleural Effusion/left/small"],
                ["normal"],
                ["Pleural Effusion/right"],
                ["No Indexing"],  # not scored
                ["Pulmonary Atelectasis/base/left"],
            ],
        }
    )
    entities = _entities(
        [
            ("a", "cardiomegaly", "present", "heart", "moderate"),  # TP, severity level disagrees
            ("a", "pleural effusion", "present", "left pleura", "small"),  # TP, location and severity agree
            ("b", "pleural effusion", "present", None, None),  # FP
            ("c", "pleural effusion", "negated", "right pleura", None),  # negated: FN for effusion
            ("d", "cardiomegaly", "present", None, None),  # report not scored
            ("e", "atelectasis", "uncertain", "left base", None),  # uncertain is not "present": FN
        ]
    )
    rows, diag = score_extraction(reports, entities, mapping)
    by = {r["category"]: r for r in rows}
    assert diag["n_reports_scored"] == 4
    eff = by["pleural effusion"]
    assert (eff["tp"], eff["fp"], eff["fn"]) == (1, 1, 1)
    assert eff["precision"] == eff["recall"] == eff["f1"] == 0.5
    assert (eff["location_pairs"], eff["location_agreement"]) == (1, 1.0)
    assert (eff["severity_pairs"], eff["severity_agreement"]) == (1, 1.0)
    card = by["cardiomegaly"]
    assert (card["tp"], card["fp"], card["fn"], card["f1"]) == (1, 0, 0, 1.0)
    assert (card["severity_pairs"], card["severity_agreement"]) == (1, 0.0)
    micro = by["micro-average"]
    assert (micro["tp"], micro["fp"], micro["fn"]) == (2, 1, 2)
    assert micro["precision"] == round(2 / 3, 4) and micro["recall"] == 0.5
    rows_u, _ = score_extraction(reports, entities, mapping, polarities=("present", "uncertain"))
    assert {r["category"]: r for r in rows_u}["atelectasis"]["tp"] == 1


def test_write_quality_csv_and_figure(tmp_path, mapping):
    reports = pa.table({"report_id": ["a"], "annotations": [["Cardiomegaly"]]})
    rows, diag = score_extraction(reports, _entities([("a", "cardiomegaly", "present", None, None)]), mapping)
    write_quality(rows, diag, tmp_path / "q.csv", tmp_path / "q.png")
    with open(tmp_path / "q.csv") as fh:
        table = list(csv.DictReader(fh))
    assert table[-2]["category"] == "micro-average" and table[-2]["f1"] == "1.0"
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"


def test_entities_normalise_and_keep_raw(tmp_path, rules_backend):
    def triplet(cat, pol="present"):
        return {"severity": None, "location": None, "category": cat, "polarity": pol, "sentence": f"{cat}."}

    shard = pa.table(
        {
            "report_id": ["r1", "r2"],
            "backend": ["rules", "rules"],
            "status": ["ok", "failed"],
            "triplets": [
                [triplet("pleural effusions"), triplet("pleural effusions"), triplet("situs inversus", "negated")],
                [triplet("cardiomegaly")],
            ],
        }
    )
    pq.write_table(shard, tmp_path / "000.parquet")
    table = build_entities([tmp_path / "000.parquet"], rules_backend.vocabulary, tmp_path / "entities.parquet")
    rows = pq.read_table(tmp_path / "entities.parquet").to_pylist()
    assert table.num_rows == 2  # duplicate statement collapsed, failed report contributes nothing
    assert [(r["category_raw"], r["category"], r["polarity"]) for r in rows] == [
        ("pleural effusions", "pleural effusion", "present"),
        ("situs inversus", None, "negated"),
    ]
