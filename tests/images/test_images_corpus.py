"""The pretraining corpus: findings from MeSH or entities, one frontal (+ lateral) image per report,
rendered PNGs in the IU-Xray layout (resumable), real image folders, and the corpus store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from medfilip.extraction.quality import MeshMapping
from medfilip.extraction.vocabulary import Vocabulary
from medfilip.images.corpus import (
    build_corpus_store,
    corpus_images,
    image_seed,
    mesh_findings,
    stored_render_key,
)
from medfilip.images.preprocess import letterbox

ROOT = Path(__file__).resolve().parents[2]
SIZE = 48


@pytest.fixture(scope="module")
def mapping() -> MeshMapping:
    return MeshMapping.load(
        ROOT / "resources/mesh/mesh_to_category.yaml", Vocabulary.load(ROOT / "resources/vocabulary")
    )


def _img(image_id: str, view: str | None) -> dict:
    return {"image_id": image_id, "path": f"{image_id}.png", "view": view}


REPORTS = [
    # report_id, split, images, annotations
    (
        "CXR1",
        "train",
        [_img("CXR1_IM-1-1001", "PA"), _img("CXR1_IM-1-2001", "LL")],
        ["Opacity/lung/upper lobe/right", "Pulmonary Atelectasis/base/left/mild", "Pleural Effusion/bilateral/small"],
    ),
    ("CXR2", "test", [_img("CXR2_IM-2-1001", None), _img("CXR2_IM-2-2001", None)], ["normal"]),
    ("CXR3", "validate", [], ["Cardiomegaly/severe"]),
    ("CXR4", "train", [_img("CXR4_IM-4-2001", "LATERAL")], ["Cardiomegaly/severe"]),
    ("CXR5", "test", [_img("CXR5_IM-5-1001", "AP")], ["Cardiomegaly/moderate", "Thoracic Vertebrae/degenerative"]),
]


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    table = pa.table(
        {
            "report_id": [r[0] for r in REPORTS],
            "source": ["iu_xray"] * len(REPORTS),
            "split": [r[1] for r in REPORTS],
            "images": pa.array(
                [r[2] for r in REPORTS],
                pa.list_(pa.struct([("image_id", pa.string()), ("path", pa.string()), ("view", pa.string())])),
            ),
            "annotations": [r[3] for r in REPORTS],
        }
    )
    path = tmp_path / "shards" / "000.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return path


ENTITIES = pa.table(
    {
        "report_id": ["CXR1", "CXR1", "CXR1", "CXR2", "CXR5"],
        "category": ["pneumothorax", "pneumothorax", "consolidation", "pleural effusion", "cardiomegaly"],
        "location": ["left apex", "left apex", "right lower lobe", None, None],
        "severity": ["small", "small", None, None, "mild"],
        "polarity": ["present", "present", "negated", "negated", "present"],
    }
)


def test_mesh_terms_become_findings(mapping):
    assert mesh_findings(["normal"], mapping) == []
    assert mesh_findings(None, mapping) == []
    assert mesh_findings(
        [
            "Opacity/lung/upper lobe/right",
            "Pulmonary Atelectasis/base/left/mild",
            "Pleural Effusion/bilateral/small",
            "Cardiomegaly/severe",
            "Nonsense Head/left",
        ],
        mapping,
    ) == [
        ("opacity", "right upper lobe", None),
        ("atelectasis", "left base", "mild"),
        ("pleural effusion", "bilateral", "mild"),
        ("cardiomegaly", None, "severe"),
    ]


def test_one_frontal_image_per_report(shard, mapping):
    table = pq.read_table(shard)
    images, skipped = corpus_images(table, findings="mesh", mapping=mapping)
    assert [(im.image_id, im.view, im.report_id, im.split) for im in images] == [
        ("CXR1_IM-1-1001", "PA", "CXR1", "train"),
        ("CXR2_IM-2-1001", "PA", "CXR2", "test"),  # unknown view: the first one, drawn as PA
        ("CXR5_IM-5-1001", "AP", "CXR5", "test"),
    ]
    assert images[1].findings == ()
    assert skipped == {"no image listed": 1, "no frontal image listed": 1}

    images, _ = corpus_images(table, findings="mesh", mapping=mapping, second_view=True)
    assert [(im.image_id, im.view) for im in images if im.view == "LATERAL"] == [
        ("CXR1_IM-1-2001", "LATERAL"),
        ("CXR4_IM-4-2001", "LATERAL"),
    ]
    assert images[1].findings == images[0].findings  # the lateral shows the same findings


def test_entities_mode_keeps_present_only(shard):
    images, _ = corpus_images(pq.read_table(shard), findings="entities", entities=ENTITIES)
    by_report = {im.report_id: im.findings for im in images}
    assert by_report == {
        "CXR1": (("pneumothorax", "left apex", "small"),),
        "CXR2": (),
        "CXR5": (("cardiomegaly", None, "mild"),),
    }
    with pytest.raises(ValueError, match="entities"):
        corpus_images(pq.read_table(shard), findings="entities")


def test_seeds_are_stable_and_distinct():
    assert image_seed("CXR1_IM-1-1001") == image_seed("CXR1_IM-1-1001")
    assert image_seed("CXR1_IM-1-1001") != image_seed("CXR1_IM-1-2001")
    assert image_seed("CXR1_IM-1-1001", 1) != image_seed("CXR1_IM-1-1001")
    assert 0 <= image_seed("x") < 2**31


def test_rendered_corpus_store_and_resume(shard, mapping, tmp_path):
    png_dir = tmp_path / "corpus" / "iu_xray" / "images"
    store = build_corpus_store(
        [shard],
        tmp_path / "store",
        size=SIZE,
        findings="mesh",
        mapping=mapping,
        png_dir=png_dir,
        workers=1,
        progress=False,
    )
    assert sorted(p.name for p in png_dir.iterdir()) == [
        "CXR1_IM-1-1001.png",
        "CXR2_IM-2-1001.png",
        "CXR5_IM-5-1001.png",
    ]
    assert len(store) == 3 and store.size == SIZE and store.meta["rendered"] == {"rendered": 3}
    rows = store.index.to_pylist()
    assert [r["report_id"] for r in rows] == ["CXR1", "CXR2", "CXR5"]
    assert [r["split"] for r in rows] == ["train", "test", "test"]
    assert [r["view"] for r in rows] == ["PA", "PA", "AP"]
    assert rows[0]["findings"] == [  # what was drawn: an unstated severity is the phantom's default
        {"category": "opacity", "location": "right upper lobe", "severity": "moderate"},
        {"category": "atelectasis", "location": "left base", "severity": "mild"},
        {"category": "pleural effusion", "location": "bilateral", "severity": "mild"},
    ]
    assert rows[1]["findings"] == []  # "normal": nothing drawn
    # the store holds exactly the PNGs' pixels
    for i, name in enumerate(["CXR1_IM-1-1001", "CXR2_IM-2-1001", "CXR5_IM-5-1001"]):
        np.testing.assert_array_equal(store[i], np.asarray(Image.open(png_dir / f"{name}.png")))
    assert not np.array_equal(store[0], store[1])
    mtimes = {p.name: p.stat().st_mtime_ns for p in png_dir.iterdir()}

    # a re-run renders nothing; the store is the same
    again = build_corpus_store(
        [shard],
        tmp_path / "store",
        size=SIZE,
        findings="mesh",
        mapping=mapping,
        png_dir=png_dir,
        workers=2,
        progress=False,
    )
    assert again.meta["rendered"] == {"kept": 3}
    assert {p.name: p.stat().st_mtime_ns for p in png_dir.iterdir()} == mtimes
    np.testing.assert_array_equal(again.get_batch([0, 1, 2]), store.get_batch([0, 1, 2]))

    # entities mode: reports whose findings differ are rendered again, the normal one is kept
    key_before = stored_render_key(png_dir / "CXR2_IM-2-1001.png")
    ents = build_corpus_store(
        [shard],
        tmp_path / "store",
        size=SIZE,
        findings="entities",
        entities=ENTITIES,
        png_dir=png_dir,
        workers=1,
        progress=False,
    )
    assert ents.meta["rendered"] == {"rendered": 2, "kept": 1}
    assert stored_render_key(png_dir / "CXR2_IM-2-1001.png") == key_before
    assert ents.index.column("findings").to_pylist()[0] == [
        {"category": "pneumothorax", "location": "left apex", "severity": "small"}
    ]


def test_real_image_folder_is_read_not_rendered(shard, mapping, tmp_path):
    real = tmp_path / "NLMCXR_png"
    real.mkdir()
    rng = np.random.default_rng(0)
    pixels = {}
    for name in ("CXR1_IM-1-1001", "CXR5_IM-5-1001"):  # CXR2's file is missing
        pixels[name] = rng.integers(0, 256, (60, 50), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(real / f"{name}.png")
    store = build_corpus_store(
        [shard],
        tmp_path / "store",
        size=SIZE,
        findings="mesh",
        mapping=mapping,
        image_root=real,
        png_dir=tmp_path / "unused",
        progress=False,
    )
    assert not (tmp_path / "unused").exists()
    assert store.image_ids == ["CXR1_IM-1-1001", "CXR5_IM-5-1001"]
    np.testing.assert_array_equal(store[0], letterbox(pixels["CXR1_IM-1-1001"], SIZE))
    assert store.rejects().to_pylist() == [
        {"path": str(real / "CXR2_IM-2-1001.png"), "image_id": "CXR2_IM-2-1001", "reason": "file not found"}
    ]
    assert store.index.column("findings").to_pylist()[1] == [
        {"category": "cardiomegaly", "location": None, "severity": "moderate"},
        {"category": "degenerative changes", "location": None, "severity": None},
    ]


def test_mimic_cxr_reads_jpgs_under_the_image_root(tmp_path, mapping):
    rel = "files/p10/p10000032/s50414267/02aa804e.jpg"
    (tmp_path / "mimic" / rel).parent.mkdir(parents=True)
    Image.fromarray(np.full((80, 64), 90, np.uint8)).save(tmp_path / "mimic" / rel, quality=95)
    table = pa.table(
        {
            "report_id": ["s50414267"],
            "source": ["mimic_cxr"],
            "split": ["validate"],
            "images": [[{"image_id": "02aa804e", "path": rel, "view": "AP"}]],
            "annotations": [[]],
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    store = build_corpus_store(
        [tmp_path / "m.parquet"],
        tmp_path / "store",
        size=SIZE,
        findings="entities",
        entities=ENTITIES,
        image_root=tmp_path / "mimic",
        progress=False,
    )
    assert store.image_ids == ["02aa804e"] and store.index.column("view").to_pylist() == ["AP"]
    assert abs(int(store[0][SIZE // 2, SIZE // 2]) - 90) <= 2
    with pytest.raises(ValueError, match="MIMIC-CXR reports need their JPGs"):
        build_corpus_store(
            [tmp_path / "m.parquet"],
            tmp_path / "s2",
            size=SIZE,
            findings="entities",
            entities=ENTITIES,
            png_dir=tmp_path / "png",
            progress=False,
        )


def test_cli_builds_the_store_from_real_files(shard, tmp_path, capsys):
    from medfilip.pipeline.cli import main

    real = tmp_path / "png"
    real.mkdir()
    for name in ("CXR1_IM-1-1001", "CXR2_IM-2-1001", "CXR5_IM-5-1001"):
        Image.fromarray(np.full((40, 40), 120, np.uint8)).save(real / f"{name}.png")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "images": {"size": 32, "corpus": {"image_root": str(real)}},
                "quality": {"mesh_mapping": str(ROOT / "resources/mesh/mesh_to_category.yaml")},
                "extraction": {"rules": {"vocabulary_dir": str(ROOT / "resources/vocabulary")}},
            }
        )
    )
    assert (
        main(
            [
                "-c",
                str(config),
                "corpus-images",
                "--reports",
                str(shard),
                "--out",
                str(tmp_path / "store"),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 images of 32x32 (corpus)" in out and "0 rejected" in out
    assert main(["image-store", str(tmp_path / "store")]) == 0


def test_second_view_is_skipped_while_the_phantom_has_no_lateral(shard, mapping, tmp_path):
    store = build_corpus_store(
        [shard],
        tmp_path / "store",
        size=SIZE,
        findings="mesh",
        mapping=mapping,
        second_view=True,
        png_dir=tmp_path / "png",
        progress=False,
    )
    assert store.meta["rendered"] == {"rendered": 3, "skipped": 2}
    assert set(store.index.column("view").to_pylist()) == {"PA", "AP"}
    assert not (tmp_path / "png" / "CXR1_IM-1-2001.png").exists()
