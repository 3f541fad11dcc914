"""Issue 12.8: location and label wording fixed at the vocabulary, one category per dataset class."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medfilip.datasets.catalog import SPECS
from medfilip.extraction.entities import build_entities
from medfilip.extraction.schema import TRIPLET_TYPE
from medfilip.knowledge import load_knowledge
from medfilip.labels.build import build_labels
from medfilip.labels.settings import LabelsConfig
from medfilip.labels.templates import render_label

ROOT = Path(__file__).resolve().parents[2]


def located(extractor, text):
    vocab = extractor.vocab
    return [(vocab.normalise(t.category), t.location) for t in extractor.extract_text(text)]


@pytest.fixture(scope="module")
def extractor(rules_backend):
    return rules_backend.extractor


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Left midlung opacity.", [("opacity", "left mid lung")]),
        ("Calcified granuloma in the left mid lung zone.", [("granuloma", "left mid lung")]),
        ("Right middle lobe atelectasis.", [("atelectasis", "right middle lobe")]),
        ("Opacity at the left heart border.", [("opacity", "left lung")]),
    ],
)
def test_rules_locations_name_places_that_exist(extractor, text, expected):
    assert located(extractor, text) == expected


def test_no_left_middle_lobe_and_no_heart_opacity_from_any_backend(rules_backend):
    vocab = rules_backend.vocabulary
    # what an LLM may answer is tidied the same way when entities are built
    assert vocab.tidy_location("left middle lobe", "opacity") == "left mid lung"
    assert vocab.tidy_location("Left  Middle Lobe", "nodule") == "left mid lung"
    assert vocab.tidy_location("heart", "opacity") == "lung"
    assert vocab.tidy_location("left heart", "atelectasis") == "left lung"
    assert vocab.tidy_location("right middle lobe", "opacity") == "right middle lobe"
    assert vocab.tidy_location("heart", "cardiomegaly") == "heart"
    assert vocab.tidy_location("right lower lung zone", "opacity") == "right lower lung zone"  # free text kept


def _labels(tmp_path: Path, vocab, triplets: list[dict]) -> list[str]:
    """Labels (triplet variant) of one report whose extraction gave ``triplets``, through entities."""
    shard = tmp_path / "000.parquet"
    pq.write_table(pa.table({"report_id": ["R1"], "text": ["x"]}), shard)
    extraction = tmp_path / "ex.parquet"
    pq.write_table(
        pa.table(
            {
                "report_id": ["R1"],
                "backend": ["openai"],
                "status": ["ok"],
                "triplets": pa.array([triplets], pa.list_(TRIPLET_TYPE)),
            }
        ),
        extraction,
    )
    build_entities([extraction], vocab, tmp_path / "entities.parquet")
    knowledge = load_knowledge(ROOT / "resources" / "knowledge" / "dictionary.yaml")
    build_labels(
        [shard],
        tmp_path / "entities.parquet",
        knowledge,
        LabelsConfig(variants=["triplet"]),
        tmp_path / "labels.parquet",
        extractions=[extraction],
        default_locations={n: c.location for n, c in vocab.by_name.items()},
        location_text=vocab.label_location,
    )
    return sorted(pq.read_table(tmp_path / "labels.parquet")["label"].to_pylist())


def test_labels_read_as_a_radiologist_writes(tmp_path, rules_backend):
    def t(category, location, severity=None):
        return {
            "sentence": "s",
            "category": category,
            "severity": severity,
            "location": location,
            "polarity": "present",
        }

    labels = _labels(
        tmp_path,
        rules_backend.vocabulary,
        [
            t("pleural effusion", "bilateral pleura", "small"),
            t("opacity", "heart"),
            t("atelectasis", "left middle lobe"),
            t("cardiomegaly", "left heart", "mild"),
            t("pneumothorax", "right pleura"),
        ],
    )
    assert labels == [
        "left mid lung atelectasis",
        "mild cardiomegaly",
        "opacity",
        "right pneumothorax",
        "small bilateral pleural effusion",
    ]
    assert not any("heart opacity" in x or "pleura pleural" in x or "left middle lobe" in x for x in labels)


def test_each_dataset_class_has_one_category_everywhere():
    """The knowledge dictionary resolves a dataset's class name to the catalog's category (Nodule/Mass
    is a nodule in both; RSNA's "Lung Opacity" deliberately means pneumonia there)."""
    knowledge = load_knowledge(ROOT / "resources" / "knowledge" / "dictionary.yaml")
    assert SPECS["vinbig"].categories["Nodule/Mass"] == "nodule"
    assert knowledge.resolve("Nodule/Mass") == "nodule"
    disagree = {
        (name, cls): (cat, knowledge.resolve(cls))
        for name, spec in SPECS.items()
        if name != "rsna"
        for cls, cat in spec.categories.items()
        if knowledge.resolve(cls) is not None and knowledge.resolve(cls) != cat
    }
    assert disagree == {}
    assert all(knowledge.resolve(cat) == cat for spec in SPECS.values() for cat in spec.categories.values())


def test_labels_render_without_location_repeats():
    assert (
        render_label("pleural effusion", "small", "bilateral", variant="triplet") == "small bilateral pleural effusion"
    )
