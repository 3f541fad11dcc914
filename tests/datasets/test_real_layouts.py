"""Reader paths a real copy of a dataset takes (issue 21), each on a tiny generated copy of its layout:
a ChestX-ray14 label file of more images than the folder holds, boxes at the image's scale or at the
1024-px source scale, a patient-disjoint train split, a COVID-19 Radiography copy without a class
folder, the ieee8023 metadata and the adult-only COVID layout built from it, and datasets.real_root."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from medfilip.datasets.ieee8023 import covid_adult_rows, read_ieee8023, write_covid_adult_layout
from medfilip.datasets.readers import DatasetLayoutError, box_scale, classes_of, label_names_of, read_covid, read_nih
from medfilip.datasets.settings import CovidSettings, DatasetsConfig, NihSettings

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
)


def _png(path, side=64, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side), value, np.uint8)).save(path)


def _nih(root, entries, present, boxes=(), side=64):
    """entries: (image id, findings, patient); present: the ids written as PNGs; boxes: (id, label, x, y, w, h)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{i},{f},0,{p},50,M,PA,1024,1024,0.14,0.14\n" for i, f, p in entries]
    (root / "Data_Entry_2017_v2020.csv").write_text(HEADER + "".join(lines))
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        + "".join(f"{i},{c},{x},{y},{w},{h}\n" for i, c, x, y, w, h in boxes)
    )
    for i in present:
        _png(root / "images" / i, side)


def test_nih_rows_of_missing_images_are_dropped_and_counted(tmp_path, caplog):
    entries = [(f"0000000{k}_000.png", "Effusion" if k % 2 else "No Finding", k) for k in range(1, 8)]
    present = [e[0] for e in entries[:5]]
    _nih(tmp_path / "nih", entries, present)
    settings = NihSettings(n_test=3, n_validate=2, n_train=0, classes=["Effusion", "Atelectasis"])
    with caplog.at_level(logging.WARNING):
        table = read_nih(tmp_path / "nih", settings)
    assert sorted(table.column("image_id").to_pylist()) == present
    assert json.loads(table.schema.metadata[b"n_dropped_rows"]) == 2
    assert "2 of 7 row(s)" in caplog.text
    labels = dict(zip(table.column("image_id").to_pylist(), table.column("labels").to_pylist()))
    assert labels["00000001_000.png"] == [1.0, 0.0] and labels["00000002_000.png"] == [0.0, 0.0]


def test_nih_with_no_image_present_names_the_label_file(tmp_path):
    _nih(tmp_path / "nih", [("00000001_000.png", "Effusion", 1)], present=[])
    (tmp_path / "nih" / "images").mkdir()
    with pytest.raises(DatasetLayoutError, match="Data_Entry_2017_v2020.csv: none of its 1 images"):
        read_nih(tmp_path / "nih", NihSettings(n_test=1, n_validate=0))


@pytest.mark.parametrize(
    "scale, expected",
    [(1, (0.25, 0.5, 0.5, 0.75)), (16, (0.25, 0.5, 0.5, 0.75))],
    ids=["boxes at the image's 64 px", "boxes at the 1024-px source scale"],
)
def test_nih_boxes_at_either_scale_normalise_alike(tmp_path, caplog, scale, expected):
    ids = ["00000001_000.png", "00000002_000.png"]
    _nih(
        tmp_path / "nih",
        [(ids[0], "Effusion", 1), (ids[1], "No Finding", 2)],
        ids,
        boxes=[(ids[0], "Effusion", 16 * scale, 32 * scale, 16 * scale, 16 * scale)],
        side=64,
    )
    with caplog.at_level(logging.WARNING):
        table = read_nih(tmp_path / "nih", NihSettings(n_test=2, n_validate=0, classes=["Effusion"]))
    boxes = dict(zip(table.column("image_id").to_pylist(), table.column("boxes").to_pylist()))
    (box,) = boxes[ids[0]]
    assert box["category"] == "pleural effusion"
    assert (box["x0"], box["y0"], box["x1"], box["y1"]) == pytest.approx(expected)
    assert boxes[ids[1]] == []
    assert json.loads(table.schema.metadata[b"n_boxes_rescaled"]) == (scale != 1)
    assert ("1024-px source coordinates" in caplog.text) == (scale != 1)


def test_box_scale_keeps_boxes_that_fit_their_image():
    assert box_scale([], (64, 64), 1024) == (64, 64)
    assert box_scale([("c", 0, 0, 64, 64)], (64, 64), 1024) == (64, 64)
    assert box_scale([("c", 0, 0, 65, 60)], (64, 64), 1024) == (64, 64)  # within 2 %
    assert box_scale([("c", 10, 10, 900, 700)], (256, 256), 1024) == (1024, 1024)
    assert box_scale([("c", 10, 10, 2000, 700)], (256, 256), 1024) == (256, 256)  # fits neither: left as is


def test_nih_train_split_is_patient_disjoint(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for patient in range(1, 31):
        for visit in range(int(rng.integers(1, 4))):
            entries.append((f"{patient:08d}_{visit:03d}.png", "Effusion" if patient % 3 else "No Finding", patient))
    _nih(tmp_path / "nih", entries, [e[0] for e in entries], side=16)
    table = read_nih(tmp_path / "nih", NihSettings(n_test=12, n_validate=6, n_train=1_000_000)).to_pandas()
    table["patient"] = table["image_id"].str[:8]
    held_out = set(table.loc[table["split"] != "train", "patient"])
    train = set(table.loc[table["split"] == "train", "patient"])
    assert train and not (train & held_out)
    assert (table["split"] != "train").sum() == 18
    # every image of a patient with no held-out image is in train (a large n_train takes them all)
    assert len(table) == len([e for e in entries if f"{e[2]:08d}" in train]) + 18


def _covid(root, folders):
    for folder, n in folders.items():
        for k in range(n):
            _png(root / folder / f"{folder.replace(' ', '_')}-{k}.png", 16, 40 + k)


def test_covid_without_a_class_folder_reads_the_classes_it_has(tmp_path, caplog):
    _covid(tmp_path / "covid", {"COVID": 3, "Normal": 2, "Viral Pneumonia": 2})
    settings = CovidSettings(n_test=10, n_validate=0, classes=["COVID", "Normal", "Viral Pneumonia", "Lung_Opacity"])
    with caplog.at_level(logging.WARNING):
        table = read_covid(tmp_path / "covid", settings)
    assert classes_of(table) == ["COVID", "Normal", "Viral Pneumonia"]
    assert label_names_of(table) == ["covid-19 pneumonia", "normal", "pneumonia"]
    assert json.loads(table.schema.metadata[b"missing_classes"]) == ["Lung_Opacity"]
    assert table.num_rows == 7 and "Lung_Opacity" in caplog.text
    per_class = np.array(table.column("labels").to_pylist()).sum(axis=0)
    assert per_class.tolist() == [3, 2, 2]


def test_covid_with_one_class_folder_is_an_error(tmp_path):
    _covid(tmp_path / "covid", {"COVID": 3})
    with pytest.raises(DatasetLayoutError, match="folders for only \\['COVID'\\]"):
        read_covid(tmp_path / "covid", CovidSettings(n_test=3, n_validate=0))


def _ieee(root):
    """A pack-like ieee8023/ beside covid/COVID/: 7 rows, one naming a missing image."""
    rows = [
        ("covid/COVID/ieee8023__a.png", "ieee8023/lung_masks/a.png", "1", 54, "COVID-19", "fever and cough"),
        ("covid/COVID/ieee8023__b.png", "", "2", None, "COVID-19, ARDS", ""),
        ("covid/COVID/ieee8023__c.png", "", "3", 12, "COVID-19", "child"),
        ("ieee8023/images/d.png", "", "4", 60, "Streptococcus", "lobar consolidation"),
        ("ieee8023/images/e.png", "", "5", 40, "No Finding", "no acute findings"),
        ("ieee8023/images/f.png", "", "6", 70, "ARDS", ""),
        ("ieee8023/images/missing.png", "", "7", 30, "Klebsiella", "x"),
    ]
    for pack_path, mask, *_ in rows:
        if "missing" not in pack_path:
            _png(root / pack_path, 16)
        if mask:
            _png(root / mask, 16, 255)
    frame = pd.DataFrame(
        rows, columns=["pack_path", "lung_mask_path", "patientid", "age", "finding", "clinical_notes"]
    ).assign(view="PA", sex="M")
    frame.to_csv(root / "ieee8023" / "metadata.csv", index=False)
    return root / "ieee8023"


def test_ieee8023_metadata_and_the_adult_covid_layout(tmp_path):
    ieee = _ieee(tmp_path)
    meta = read_ieee8023(ieee)
    assert len(meta) == 6 and meta.attrs["n_dropped"] == 1
    assert meta["is_covid"].tolist() == [True, True, True, False, False, False]
    assert meta["lung_mask"].notna().sum() == 1 and meta.loc[0, "lung_mask"].is_file()
    assert meta.loc[1, "clinical_notes"] == ""
    rows = covid_adult_rows(meta)
    # the 12-year-old, No Finding and ARDS alone are left out; the unknown age is kept and counted
    assert rows["image_id"].tolist() == ["ieee8023__a", "ieee8023__b", "d"]
    assert rows["cls"].tolist() == ["COVID", "COVID", "Pneumonia"]
    assert rows.attrs["n_age_missing"] == 1 and rows.attrs["n_minors_left_out"] == 1
    counts = write_covid_adult_layout(meta, tmp_path / "adult")
    assert counts == {"COVID": 2, "Pneumonia": 1, "age_missing": 1, "minors_left_out": 1}
    # the COVID-19 Radiography reader reads the layout; the default classes lack a Normal folder
    table = read_covid(tmp_path / "adult", CovidSettings(n_test=10, n_validate=0))
    assert label_names_of(table) == ["covid-19 pneumonia", "pneumonia"]
    assert sorted(table.column("image_id").to_pylist()) == ["d", "ieee8023__a", "ieee8023__b"]


def test_ieee8023_without_its_columns_names_them(tmp_path):
    (tmp_path / "metadata.csv").write_text("patientid,finding\n1,COVID-19\n")
    with pytest.raises(DatasetLayoutError, match="lacks column\\(s\\) \\['view', 'pack_path or filename'\\]"):
        read_ieee8023(tmp_path)


def test_real_root_fills_dataset_roots(tmp_path):
    cfg = DatasetsConfig(real_root=tmp_path, nih={"root": "{real_root}/nih"}, covid={"root": "{real_root}/covid"})
    assert cfg.nih.root == tmp_path / "nih" and cfg.covid.root == tmp_path / "covid"
    assert cfg.rsna.root is None
    with pytest.raises(
        ValidationError, match="datasets.nih.root is \\{real_root\\}/nih but datasets.real_root is null"
    ):
        DatasetsConfig(nih={"root": "{real_root}/nih"})
