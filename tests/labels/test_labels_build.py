"""labels.parquet from a tiny report shard + entities + a knowledge dictionary built in tmp_path."""

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from medfilip.extraction.entities import ENTITY_SCHEMA
from medfilip.knowledge import load_knowledge
from medfilip.labels.build import build_labels, label_key, label_statistics
from medfilip.labels.settings import LabelsConfig

KNOWLEDGE = {
    "atelectasis": "a linear or plate-like opacity with volume loss",
    "pleural effusion": "a dependent homogeneous opacity with a meniscus",
    "cardiomegaly": "a cardiac silhouette wider than half the thorax",
    "normal": "clear lungs, sharp costophrenic angles and a normal heart size",
}
REPORTS = [
    ("R1", "Mild left basilar atelectasis. Small left effusion. No pneumothorax."),
    ("R2", "No acute disease."),
    ("R3", "Heart may be enlarged. Heart is enlarged."),
]
# report_id, severity, location, category, polarity
ENTITIES = [
    ("R1", "mild", "left base", "atelectasis", "present"),
    ("R1", "small", "left pleura", "pleural effusion", "present"),
    ("R1", None, "pleura", "pneumothorax", "negated"),
    ("R2", None, "pleura", "pleural effusion", "negated"),
    ("R3", None, "heart", "cardiomegaly", "uncertain"),
    ("R3", None, "heart", "cardiomegaly", "present"),  # same label twice: one row
    ("R3", None, None, None, "present"),  # no canonical category: dropped (paper §III-A)
    ("R9", None, None, "atelectasis", "present"),  # report not in the shards
]


@pytest.fixture
def inputs(tmp_path: Path):
    entries = {
        name: {"explanation": text, "context": f"context of {name}.", "synonyms": []}
        for name, text in KNOWLEDGE.items()
    }
    entries["pneumothorax"] = {"explanation": "a lucent rim without lung markings", "context": "air.", "synonyms": []}
    (tmp_path / "dictionary.yaml").write_text(yaml.safe_dump({"categories": entries}), encoding="utf-8")
    shard = tmp_path / "000.parquet"
    pq.write_table(pa.table({"report_id": [r for r, _ in REPORTS], "text": [t for _, t in REPORTS]}), shard)
    rows = [dict(zip(["report_id", "severity", "location", "category", "polarity"], e)) for e in ENTITIES]
    for row in rows:
        row.update(category_raw=row["category"], sentence="", backend="rules")
    entities = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=ENTITY_SCHEMA), entities)
    return shard, entities, load_knowledge(tmp_path / "dictionary.yaml")


def _labels(path, variant):
    return [r for r in pq.read_table(path).to_pylist() if r["variant"] == variant]


def test_labels_per_variant(inputs, tmp_path):
    shard, entities, knowledge = inputs
    out = tmp_path / "labels.parquet"
    summary = build_labels(
        [shard],
        entities,
        knowledge,
        LabelsConfig(),
        out,
        default_locations={"pleural effusion": "pleura", "cardiomegaly": "heart"},
    )
    assert summary.n_reports == 3 and summary.n_normal_reports == 1

    full = _labels(out, "triplet_explanation")
    by_report = {}
    for r in full:
        by_report.setdefault(r["report_id"], []).append(r["label"])
    assert by_report["R1"] == [
        "mild left base atelectasis, where atelectasis is a linear or plate-like opacity with volume loss",
        "small left pleura pleural effusion, where pleural effusion is a dependent homogeneous opacity with a meniscus",
    ]
    # no positive finding -> one normal label; the default location "heart" is left out; duplicates collapse
    assert by_report["R2"] == ["normal, where normal is clear lungs, sharp costophrenic angles and a normal heart size"]
    assert by_report["R3"] == ["cardiomegaly, where cardiomegaly is a cardiac silhouette wider than half the thorax"]
    r1 = [r for r in full if r["report_id"] == "R1"][0]
    assert r1["fine_grained_key"] == "mild|atelectasis" and r1["label_key"] == label_key(r1["label"])
    assert not r1["is_normal"] and [r["is_normal"] for r in full if r["report_id"] == "R2"] == [True]

    assert [r["label"] for r in _labels(out, "category") if r["report_id"] == "R1"] == [
        "atelectasis",
        "pleural effusion",
    ]
    assert [r["label"] for r in _labels(out, "triplet") if r["report_id"] == "R1"][0] == "mild left base atelectasis"
    report_rows = _labels(out, "report")
    assert [r["label"] for r in report_rows] == [t for _, t in REPORTS] and report_rows[0]["category"] is None
    assert summary.unique_labels == {"category": 4, "triplet": 4, "triplet_explanation": 4, "report": 3}


def test_negated_keep_and_uncertain_drop(inputs, tmp_path):
    shard, entities, knowledge = inputs
    out = tmp_path / "labels.parquet"
    build_labels(
        [shard], entities, knowledge, LabelsConfig(variants=["triplet"], negated="keep", uncertain="drop"), out
    )
    labels = {(r["report_id"], r["label"]) for r in pq.read_table(out).to_pylist()}
    assert ("R1", "no pneumothorax") in labels
    # R2 has only a negated finding: a normal report, with its negation kept beside the normal label
    assert ("R2", "no pleural effusion") in labels and ("R2", "normal") in labels
    # the present cardiomegaly mention survives, the uncertain one (same text) is not what kept it
    assert ("R3", "heart cardiomegaly") in labels
    assert {r["variant"] for r in pq.read_table(out).to_pylist()} == {"triplet"}


def test_category_without_knowledge_entry_is_an_error(inputs, tmp_path):
    shard, entities, _ = inputs
    (tmp_path / "small.yaml").write_text(
        yaml.safe_dump(
            {"categories": {"normal": {"explanation": "clear lungs", "context": "nothing.", "synonyms": []}}}
        ),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="atelectasis"):
        build_labels([shard], entities, load_knowledge(tmp_path / "small.yaml"), LabelsConfig(), tmp_path / "l.parquet")
    assert not (tmp_path / "l.parquet").exists()


def test_label_statistics(inputs, tmp_path):
    shard, entities, knowledge = inputs
    out = tmp_path / "labels.parquet"
    build_labels([shard], entities, knowledge, LabelsConfig(), out)
    stats = {(r["statistic"], r["variant"], r["key"]): r["value"] for r in label_statistics(out)}
    assert stats[("unique_labels", "triplet_explanation", "")] == 4
    assert stats[("labels_per_report_max", "triplet_explanation", "")] == 2
    assert stats[("labels_per_report_mean", "category", "")] == pytest.approx(4 / 3, abs=1e-3)
    assert stats[("normal_report_fraction", "report", "")] == pytest.approx(1 / 3, abs=1e-3)
    assert stats[("top_category_reports", "triplet_explanation", "atelectasis")] == 1
    path = tmp_path / "stats.csv"
    from medfilip.io import write_csv_atomic

    write_csv_atomic(label_statistics(out), path)
    assert next(csv.reader(path.open())) == ["statistic", "variant", "key", "value"]


def test_labels_stream_in_row_groups_with_the_same_rows(inputs, tmp_path, monkeypatch):
    import medfilip.labels.build as build

    shard, entities, knowledge = inputs
    whole = tmp_path / "whole.parquet"
    build_labels([shard], entities, knowledge, LabelsConfig(), whole)
    monkeypatch.setattr(build, "ROW_GROUP", 3)  # flush every 3 rows: several row groups
    streamed = tmp_path / "streamed.parquet"
    summary = build_labels([shard], entities, knowledge, LabelsConfig(), streamed)
    a, b = pq.read_table(whole), pq.read_table(streamed)
    assert b.num_rows == summary.n_rows == a.num_rows > 3
    assert pq.ParquetFile(streamed).metadata.num_row_groups == -(-a.num_rows // 3)
    assert pq.ParquetFile(whole).metadata.num_row_groups == 1
    assert a.equals(b)


def test_severity_scale_three_level_writes_one_scale_and_leaves_unstated_unstated(inputs, tmp_path):
    from medfilip.extraction.vocabulary import load_severity_scale

    shard, entities, knowledge = inputs
    scale = load_severity_scale(Path(__file__).resolve().parents[2] / "resources" / "vocabulary")
    assert {w: scale[w] for w in ("small", "minimal", "trace", "mild", "moderate", "large", "extensive", "marked")} == {
        "small": "mild",
        "minimal": "mild",
        "trace": "mild",
        "mild": "mild",
        "moderate": "moderate",
        "large": "severe",
        "extensive": "severe",
        "marked": "severe",
    }
    as_written, three = tmp_path / "as_written.parquet", tmp_path / "three.parquet"
    build_labels([shard], entities, knowledge, LabelsConfig(variants=["triplet"]), as_written)
    build_labels(
        [shard],
        entities,
        knowledge,
        LabelsConfig(variants=["triplet"], severity_scale="three_level"),
        three,
        severity_scale=scale,
    )
    before = {(r["report_id"], r["category"]): r for r in _labels(as_written, "triplet")}
    after = {(r["report_id"], r["category"]): r for r in _labels(three, "triplet")}
    assert before[("R1", "pleural effusion")]["severity"] == "small"
    assert after[("R1", "pleural effusion")]["severity"] == "mild"
    assert after[("R1", "pleural effusion")]["label"] == "mild left pleura pleural effusion"
    assert after[("R1", "pleural effusion")]["fine_grained_key"] == "mild|pleural effusion"
    # a severity the report does not state is not made "moderate"
    assert (
        after[("R3", "cardiomegaly")]["severity"] is None
        and after[("R3", "cardiomegaly")]["label"] == "heart cardiomegaly"
    )


def test_severity_scale_must_place_every_severity(tmp_path):
    from medfilip.extraction.vocabulary import VocabularyError, load_severity_scale

    (tmp_path / "modifiers.yaml").write_text(
        "severity:\n  small: {level: 1, words: [small]}\n  huge: {level: 3, words: [huge]}\n"
    )
    (tmp_path / "severity_scale.yaml").write_text("scale:\n  small: mild\n")
    with pytest.raises(VocabularyError, match=r"severity_scale.yaml: .*\['huge'\]"):
        load_severity_scale(tmp_path)
    (tmp_path / "severity_scale.yaml").write_text("scale:\n  small: mild\n  huge: enormous\n")
    with pytest.raises(VocabularyError, match="must be one of"):
        load_severity_scale(tmp_path)
