"""Twins in the real on-disk formats, read back by the real readers, and preprocessed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from medfilip.datasets import sources
from medfilip.datasets.catalog import DATASET_NAMES, SPECS
from medfilip.datasets.dicom import DX_IMAGE_FOR_PRESENTATION, SECONDARY_CAPTURE
from medfilip.datasets.readers import label_names_of, read_dataset, siim_mask, task_of
from medfilip.datasets.sampling import derived_seed
from medfilip.datasets.settings import DatasetsConfig
from medfilip.datasets.twins import build_twin
from medfilip.phantom.render import render_phantom

SIZE = 128
SMALL = {name: {"n_test": 12, "n_validate": 4, "n_train": 6} for name in DATASET_NAMES}
N = 22  # images per twin


@pytest.fixture(scope="module")
def config() -> DatasetsConfig:
    return DatasetsConfig(render_size=SIZE, seed=0, **SMALL)


@pytest.fixture(scope="module")
def twins(tmp_path_factory, config) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("twins")
    return {name: build_twin(name, root / name, config, progress=False).root for name in DATASET_NAMES}


@pytest.fixture(scope="module")
def tables(twins, config):
    return {name: read_dataset(name, twins[name], config) for name in DATASET_NAMES}


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path)) if path.endswith(".png") else pydicom.dcmread(path).pixel_array


# -- formats ----------------------------------------------------------------------------------
def test_manifests_and_splits(twins):
    for name, root in twins.items():
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["n_images"] == N and manifest["splits"] == {"train": 6, "validate": 4, "test": 12}
        assert manifest["label_names"] == SPECS[name].label_names(SPECS[name].default_classes)
        assert not list(root.parent.glob(f".{name}.*")), "no temporary folder left behind"
    assert json.loads((twins["siim"] / "manifest.json").read_text())["findings_from_masks"] > 0
    assert json.loads((twins["rsna"] / "manifest.json").read_text())["source_files"] == [
        sources.RSNA_LABELS,
        sources.RSNA_HEADERS,
    ]


def test_rsna_twin_is_8_bit_secondary_capture(twins):
    labels = pd.read_csv(twins["rsna"] / "stage_2_train_labels.csv")
    assert list(labels.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    headers = pd.read_csv(sources.source_path(sources.RSNA_HEADERS)).set_index("PatientID")
    files = sorted((twins["rsna"] / "stage_2_train_images").glob("*.dcm"))
    assert {f.stem for f in files} == set(labels["patientId"])
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.Modality == "CR"
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored) == ("MONOCHROME2", 8, 8)
    assert ds.PatientID == files[0].stem and ds.ViewPosition == headers.at[files[0].stem, "ViewPosition"]
    assert (ds.Rows, ds.Columns) == (SIZE, SIZE) and ds.pixel_array.shape == (SIZE, SIZE)
    assert float(ds.PixelSpacing[0]) == pytest.approx(headers.at[files[0].stem, "PixelSpacing"] * 1024 / SIZE, rel=1e-3)


def test_vinbig_twin_is_12_bit_monochrome1(twins):
    train = pd.read_csv(twins["vinbig"] / "train.csv")
    assert list(train.columns) == list(sources.read_vinbig_annotations().columns)
    assert train.groupby("image_id")["rad_id"].nunique().eq(3).all()  # every radiologist's rows kept
    assert train[["x_max", "y_max"]].max().max() <= SIZE  # boxes rescaled to the twin's pixels
    path = next((twins["vinbig"] / "train").glob("*.dicom"))
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == DX_IMAGE_FOR_PRESENTATION and ds.Modality == "DX"
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored) == ("MONOCHROME1", 16, 12)
    stored = ds.pixel_array
    assert stored.dtype == np.uint16 and stored.max() <= 4095
    # MONOCHROME1: air (dark on the rendered image) is stored bright
    rendered = render_phantom([], size=SIZE, seed=derived_seed(0, "vinbig", path.stem))
    assert np.corrcoef(stored.ravel(), rendered.ravel())[0, 1] < -0.9


def test_siim_twin_layout_and_masks(twins):
    rle = pd.read_csv(twins["siim"] / "train-rle.csv", dtype=str)
    assert list(rle.columns) == ["ImageId", " EncodedPixels"]
    files = list((twins["siim"] / "dicom-images-train").glob("*/*/*.dcm"))
    assert len(files) == N
    ds = pydicom.dcmread(files[0])
    assert ds.SOPInstanceUID == files[0].stem and ds.StudyInstanceUID == files[0].parent.parent.name
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.PatientID


def test_nih_and_covid_twins_are_pngs(twins):
    entries = pd.read_csv(twins["nih"] / "Data_Entry_2017.csv")
    assert list(entries.columns) == sources.NIH_ENTRY_COLUMNS
    boxes_header = (twins["nih"] / "BBox_List_2017.csv").read_text().splitlines()[0]
    assert boxes_header == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    for name, pattern in [("nih", "images/*.png"), ("covid", "*/images/*.png")]:
        files = sorted(twins[name].glob(pattern))
        assert len(files) == N
        with Image.open(files[0]) as img:
            assert img.mode == "L" and img.size == (SIZE, SIZE)
    assert {p.parent.parent.name for p in twins["covid"].glob("*/images/*.png")} == {
        "COVID",
        "Normal",
        "Viral Pneumonia",
    }


# -- readers on the twins ---------------------------------------------------------------------
def test_readers_give_the_real_labels(tables):
    for name, table in tables.items():
        assert table.num_rows == N
        assert sorted(table.column("split").to_pylist()) == ["test"] * 12 + ["train"] * 6 + ["validate"] * 4
        assert label_names_of(table) == SPECS[name].label_names(SPECS[name].default_classes)
        assert task_of(table) == SPECS[name].task
        assert all(Path(p).is_file() for p in table.column("path").to_pylist())
    rows = tables["rsna"].to_pylist()
    target = sources.read_rsna_patients().set_index("patientId")["target"]
    assert [r["labels"] for r in rows] == [[float(target[r["image_id"]]), 1.0 - target[r["image_id"]]] for r in rows]
    entries = sources.read_nih_entries().set_index("Image Index")["findings"]
    classes = SPECS["nih"].default_classes
    for r in tables["nih"].to_pylist():
        assert r["labels"] == [float(c in entries[r["image_id"]]) for c in classes]
    vinbig = sources.read_vinbig_images().set_index("image_id")["classes"]
    for r in tables["vinbig"].to_pylist():
        assert r["labels"] == [float(c in vinbig[r["image_id"]]) for c in SPECS["vinbig"].default_classes]
    siim = sources.read_siim_images().set_index("image_id")["target"]
    assert [r["labels"][0] for r in tables["siim"].to_pylist()] == [
        float(siim[r["image_id"]]) for r in tables["siim"].to_pylist()
    ]
    for r in tables["covid"].to_pylist():
        assert r["labels"] == [float(r["image_id"].startswith(p + "-")) for p in ("COVID", "Normal", "Viral Pneumonia")]
    # the multi-label samples are balanced: every class has a positive among 22 images
    for name in ("nih", "vinbig"):
        labels = np.array(tables[name].column("labels").to_pylist())
        assert (labels.sum(axis=0) >= 1).all(), name


def test_reader_without_splits_file_samples_and_splits(twins, config, tmp_path):
    copy = tmp_path / "covid"
    shutil.copytree(twins["covid"], copy)
    (copy / "splits.csv").unlink()
    table = read_dataset("covid", copy, config)
    assert sorted(table.column("split").to_pylist()) == ["test"] * 12 + ["train"] * 6 + ["validate"] * 4
    assert table.equals(read_dataset("covid", copy, config)), "seeded"
    fewer = DatasetsConfig(render_size=SIZE, covid={"n_test": 6, "n_validate": 2})
    assert read_dataset("covid", copy, fewer).num_rows == 8


def test_findings_drawn_inside_real_boxes_and_masks(tables):
    checked = 0
    for name in ("rsna", "siim"):
        for r in tables[name].to_pylist():
            if r["labels"][0] != 1.0:
                continue
            bare = render_phantom([], size=SIZE, seed=derived_seed(0, name, r["image_id"]), view=r["view"])
            changed = _pixels(r["path"]) != bare
            if name == "rsna":
                region = np.zeros((SIZE, SIZE), bool)
                for b in r["boxes"]:
                    region[
                        int(np.floor(b["y0"] * SIZE)) : int(np.ceil(b["y1"] * SIZE)),
                        int(np.floor(b["x0"] * SIZE)) : int(np.ceil(b["x1"] * SIZE)),
                    ] = True
                assert changed.sum() > 0.2 * region.sum(), "the opacity is drawn"
            else:
                region = siim_mask(r)
                assert region.shape == (SIZE, SIZE) and region.any()
            assert not (changed & ~region).any(), f"{name} {r['image_id']}: pixels changed outside the real box/mask"
            checked += 1
    assert checked >= 3
    # a negative image is the bare patient, byte for byte
    negative = next(r for r in tables["rsna"].to_pylist() if r["labels"][0] == 0.0)
    bare = render_phantom([], size=SIZE, seed=derived_seed(0, "rsna", negative["image_id"]), view=negative["view"])
    assert np.array_equal(_pixels(negative["path"]), bare)


def test_same_seed_same_twin(twins, config, tmp_path):
    again = build_twin("siim", tmp_path / "siim", config, progress=False).root
    assert (again / "train-rle.csv").read_bytes() == (twins["siim"] / "train-rle.csv").read_bytes()
    first = min(twins["siim"].rglob("*.dcm"))
    assert (again / first.relative_to(twins["siim"])).read_bytes() == first.read_bytes()


# -- preprocessing round trip ------------------------------------------------------------------
def test_dicom_round_trip_through_preprocessing(tables, tmp_path):
    from medfilip.images.preprocess import preprocess_images

    for name in ("rsna", "vinbig"):
        table = tables[name]
        store = preprocess_images(
            table, tmp_path / name, size=SIZE, dataset=name, label_names=label_names_of(table), progress=False
        )
        assert len(store) == N and store.label_names == label_names_of(table)
        assert np.array_equal(store.labels(), np.array(table.column("labels").to_pylist(), np.float32))
        assert len(store.indices("validate")) == 4
        for i, row in enumerate(store.index.to_pylist()):
            rendered = render_phantom([], size=SIZE, seed=derived_seed(0, name, row["image_id"]), view=row["view"])
            if name == "vinbig":
                # windowed 12-bit MONOCHROME1 comes back as the rendered image (within rounding)
                bare = not any(
                    pd.read_csv(Path(row["path"]).parent.parent / "train.csv").query("image_id == @row['image_id']")[
                        "class_name"
                    ]
                    != "No finding"
                )
                if bare:
                    assert np.abs(store[i].astype(int) - rendered.astype(int)).max() <= 1
                assert np.corrcoef(store[i].ravel(), _pixels(row["path"]).ravel())[0, 1] < -0.9
            else:
                assert np.corrcoef(store[i].ravel().astype(float), _pixels(row["path"]).ravel())[0, 1] > 0.99


@pytest.mark.slow
def test_cli_twin_and_preprocess(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("images: {size: 64}\ndatasets:\n  render_size: 96\n  covid: {n_test: 6, n_validate: 3}\n")
    run = [sys.executable, "-m", "medfilip", "-c", str(config)]
    proc = subprocess.run(
        [*run, "twin", "--dataset", "covid", "--out", str(tmp_path / "twin"), "--no-progress", "--workers", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "covid twin: 9 images" in proc.stdout
    proc = subprocess.run(
        [
            *run,
            "preprocess-dataset",
            "--dataset",
            "covid",
            "--root",
            str(tmp_path / "twin"),
            "--out",
            str(tmp_path / "store"),
            "--no-progress",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "store" / "meta.json").read_text())
    assert meta["size"] == 64 and meta["n_images"] == 9 and meta["task"] == "single_label"
    assert meta["label_names"] == ["covid-19 pneumonia", "normal", "pneumonia"]
    proc = subprocess.run(
        [*run, "preprocess-dataset", "--dataset", "covid", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "datasets.covid.root is null" in proc.stderr


def test_readers_accept_the_other_published_layouts(twins, config, tmp_path):
    # ChestX-ray14 as downloaded: images_001/images/*.png and the v2020 entry file name
    nih = tmp_path / "nih"
    shutil.copytree(twins["nih"], nih)
    (nih / "images_001").mkdir()
    (nih / "images").rename(nih / "images_001" / "images")
    (nih / "Data_Entry_2017.csv").rename(nih / "Data_Entry_2017_v2020.csv")
    table = read_dataset("nih", nih, config)
    assert table.num_rows == N and all("images_001/images/" in p for p in table.column("path").to_pylist())
    assert table.column("labels").to_pylist() == read_dataset("nih", twins["nih"], config).column("labels").to_pylist()
    # COVID-19 Radiography v1-3: <class>/*.png with "COVID-19" and "NORMAL" folder names
    covid = tmp_path / "covid"
    for old, new in [("COVID", "COVID-19"), ("Normal", "NORMAL"), ("Viral Pneumonia", "Viral Pneumonia")]:
        shutil.copytree(twins["covid"] / old / "images", covid / new)
    shutil.copy(twins["covid"] / "splits.csv", covid / "splits.csv")
    table = read_dataset("covid", covid, config)
    assert (
        table.column("labels").to_pylist() == read_dataset("covid", twins["covid"], config).column("labels").to_pylist()
    )
    # a root without the layout: a clear message
    with pytest.raises(ValueError, match="no RSNA labels CSV"):
        read_dataset("rsna", tmp_path / "covid", config)


# -- train splits -------------------------------------------------------------------------------
def test_train_split_leaves_validate_and_test_alone_and_is_patient_disjoint(twins, config, tmp_path):
    # the held-out images are those of a twin without train images, whatever n_train is
    for name in ("rsna", "nih", "vinbig", "siim"):
        marks = pd.read_csv(twins[name] / "splits.csv")
        no_train = DatasetsConfig(render_size=SIZE, seed=0, **{name: {"n_test": 12, "n_validate": 4, "n_train": 0}})
        other = build_twin(name, tmp_path / name, no_train, progress=False).root
        again = pd.read_csv(other / "splits.csv")
        held = marks[marks["split"] != "train"]
        assert sorted(zip(held.image_id, held.split)) == sorted(zip(again.image_id, again.split)), name
        assert set(marks.loc[marks["split"] == "train", "image_id"]).isdisjoint(held["image_id"])
    # ChestX-ray14 gives patients several images: no train patient has a held-out image
    entries = sources.read_nih_entries().set_index("Image Index")["Patient ID"]
    marks = pd.read_csv(twins["nih"] / "splits.csv")
    patients = marks.assign(patient=marks["image_id"].map(entries)).groupby("split")["patient"].apply(set)
    assert patients["train"].isdisjoint(patients["validate"] | patients["test"])


def test_siim_train_images_keep_their_masks(tables):
    rows = [r for r in tables["siim"].to_pylist() if r["split"] == "train"]
    assert len(rows) == 6
    siim = sources.read_siim_images().set_index("image_id")["target"]
    for r in rows:
        mask = siim_mask(r)
        assert mask.shape == (SIZE, SIZE)
        assert bool(mask.any()) == bool(siim[r["image_id"]]), r["image_id"]


def test_reader_of_a_real_folder_draws_a_patient_disjoint_train_split(twins, config, tmp_path):
    nih = tmp_path / "nih"
    shutil.copytree(twins["nih"], nih)
    (nih / "splits.csv").unlink()
    fewer = DatasetsConfig(render_size=SIZE, nih={"n_test": 8, "n_validate": 4, "n_train": 1000})
    table = read_dataset("nih", nih, fewer).to_pandas()
    # all 22 images: 12 held out, and every one of the rest whose patient is not held out goes to train
    assert (table["split"] != "train").sum() == 12
    entries = pd.read_csv(nih / "Data_Entry_2017.csv").set_index("Image Index")["Patient ID"]
    patient = table["image_id"].map(entries)
    held = set(patient[table["split"] != "train"])
    assert set(patient[table["split"] == "train"]).isdisjoint(held)
    assert (table["split"] == "train").sum() == (~patient.isin(held)).sum()
