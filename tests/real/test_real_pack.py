"""The cxr_real pack of real radiographs through the readers and `medfilip predict` (issue 21).

The pack is found at $MEDFILIP_CXR_REAL, else at ../shared/data/cxr_real beside the repository (where
CI keeps it). Without it every test here is skipped, saying where it looked. Nothing of the pack is
copied into the repository.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
ENV = "MEDFILIP_CXR_REAL"


def pack_root() -> Path:
    return Path(os.environ.get(ENV) or ROOT.parent / "shared" / "data" / "cxr_real")


@pytest.fixture(scope="module")
def pack() -> Path:
    root = pack_root()
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"the cxr_real pack is not at {root} (set {ENV} to its folder to run these tests)")
    return root


def test_nih_pack_through_the_reader(pack):
    from medfilip.datasets.readers import read_nih
    from medfilip.datasets.settings import NihSettings

    table = read_nih(pack / "nih", NihSettings(n_test=400, n_validate=150, n_train=600)).to_pandas()
    assert set(table["split"].value_counts().to_dict()) == {"test", "validate", "train"}
    assert (table["split"] == "test").sum() == 400 and (table["split"] == "validate").sum() == 150
    assert table["path"].map(lambda p: Path(p).is_file()).all()
    patient = table["image_id"].str[:8]
    assert not set(patient[table["split"] == "train"]) & set(patient[table["split"] != "train"])
    boxes = [b for bs in table["boxes"] for b in bs]
    assert boxes and all(0 <= b["x0"] < b["x1"] <= 1 and 0 <= b["y0"] < b["y1"] <= 1 for b in boxes)
    # the pack's boxes are at 256 px (its README): none is read as 1024-px source coordinates
    assert (
        json.loads(read_nih(pack / "nih", NihSettings(n_test=10, n_validate=0)).schema.metadata[b"n_boxes_rescaled"])
        == 0
    )


def test_nih64_covid_and_ieee8023_packs(pack):
    from medfilip.datasets.ieee8023 import covid_adult_rows, read_ieee8023
    from medfilip.datasets.readers import read_covid, read_nih
    from medfilip.datasets.settings import CovidSettings, NihSettings

    nih64 = read_nih(pack / "nih_64px", NihSettings(n_test=400, n_validate=150))
    assert nih64.num_rows == 550 and json.loads(nih64.schema.metadata[b"n_dropped_rows"]) == 0
    with Image.open(nih64.column("path")[0].as_py()) as img:
        assert img.size == (64, 64)
    covid = read_covid(pack / "covid", CovidSettings(n_test=1000, n_validate=0))
    assert np.array(covid.column("labels").to_pylist()).sum(axis=0).tolist() == [441, 100, 26]
    meta = read_ieee8023(pack / "ieee8023")
    assert len(meta) == 275 and (meta["clinical_notes"] != "").sum() == 183
    masked = meta[meta["lung_mask"].notna()]
    assert len(masked) == 20
    for _, row in masked.head(3).iterrows():
        with Image.open(row["path"]) as img, Image.open(row["lung_mask"]) as mask:
            assert img.size == mask.size  # aligned to the image
    adult = covid_adult_rows(meta)
    assert adult["cls"].value_counts().to_dict() == {"COVID": 198, "Pneumonia": 61}


def test_predict_on_real_radiographs(pack, tmp_path, capsys):
    """`medfilip predict` reads the pack's PNGs as they are (256-px NIH, 64-px NIH, non-square
    ieee8023, paediatric Kermany) with a tiny model trained here on phantoms."""
    sys.path.insert(0, str(ROOT / "tests" / "library"))
    from library_fixtures import KNOWLEDGE, train_tiny_model

    from medfilip.predict import main

    run = train_tiny_model(tmp_path, epochs=1.0)
    images = [
        *sorted((pack / "nih" / "images").glob("*.png"))[:2],
        sorted((pack / "nih_64px" / "images").glob("*.png"))[0],
        sorted((pack / "ieee8023" / "images").glob("*.png"))[0],
        sorted((pack / "kermany" / "NORMAL").glob("*.png"))[0],
    ]
    classes = ["normal", "pleural effusion", "cardiomegaly", "pneumonia"]
    argv = ["predict", *map(str, images), "--model", str(run), "--knowledge", str(KNOWLEDGE), "--format", "json"]
    assert main([*argv, "--classes", *classes]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["images"]] == [str(p) for p in images]
    for record in out["images"]:
        probabilities = [p["probability"] for p in record["predictions"]]
        assert sorted(p["class"] for p in record["predictions"]) == sorted(classes)
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert probabilities == sorted(probabilities, reverse=True)
