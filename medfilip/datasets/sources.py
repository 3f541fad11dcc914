"""The real label files torchxrayvision ships, parsed into tidy per-image tables.

These are the sources the twins are sampled from. Coordinate systems (checked against the files):

- RSNA ``kaggle_stage_2_train_labels.csv.zip``: one row per box (patientId, x, y, width, height,
  Target), Target 0 rows have no box; 30,227 rows, 26,684 patients, 6,012 with Target 1, 9,555
  boxes, in pixels of the 1024x1024 DICOMs. ``kaggle_stage_2_train_images_dicom_headers.csv.gz``
  gives ViewPosition (PA/AP), PixelSpacing, PatientAge/Sex per patient.
- ChestX-ray14 ``Data_Entry_2017_v2020.csv.gz``: 112,120 images, ``Finding Labels`` joined by
  "|" ("No Finding" = none); ``BBox_List_2017.csv.gz``: 984 boxes on 880 images, 8 classes
  (spelled "Infiltrate" there), x/y/w/h in pixels of the 1024x1024 PNGs (the original sizes in
  Data_Entry are those of the DICOMs before NIH resized them).
- VinBigData ``vinbigdata-train.csv.gz``: 67,914 rows (image_id, class_name, class_id, rad_id,
  x_min, y_min, x_max, y_max), 15,000 images each read by 3 of 17 radiologists, boxes in pixels of
  the original DICOMs, whose sizes the file does not give. We assume a square of side
  ``VINBIG_NOMINAL_SIZE`` (2,750 px; grown to the largest coordinate of the image when a box
  reaches past it): with it the median cardiomegaly box centre (1,410, 1,672 px) sits at (0.51,
  0.61) of the image, where the heart is on a PA film; box coordinates reach 3,131 x 3,384 px.
- SIIM-ACR ``siim-pneumothorax-train-rle.csv.gz``: 12,954 rows, 12,047 images, 2,669 with
  pneumothorax; several rows per image when there are several regions; relative RLE of 1024x1024
  masks (see medfilip.datasets.rle); the column is spelled " EncodedPixels" (leading space).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from medfilip.datasets.rle import EMPTY

RSNA_SIZE = 1024
NIH_SIZE = 1024
SIIM_SIZE = 1024
VINBIG_NOMINAL_SIZE = 2750

RSNA_LABELS = "kaggle_stage_2_train_labels.csv.zip"
RSNA_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
NIH_ENTRIES = "Data_Entry_2017_v2020.csv.gz"
NIH_BOXES = "BBox_List_2017.csv.gz"
VINBIG_LABELS = "vinbigdata-train.csv.gz"
SIIM_RLE = "siim-pneumothorax-train-rle.csv.gz"

SOURCE_FILES = {
    "rsna": (RSNA_LABELS, RSNA_HEADERS),
    "nih": (NIH_ENTRIES, NIH_BOXES),
    "vinbig": (VINBIG_LABELS,),
    "siim": (SIIM_RLE,),
    "covid": (),
}


@lru_cache(maxsize=1)
def xrv_data_dir() -> Path:
    """torchxrayvision/data, found without importing torchxrayvision (which imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed: its data/ folder holds the label files")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def source_path(filename: str) -> Path:
    path = xrv_data_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file missing from torchxrayvision")
    return path


# -- RSNA -----------------------------------------------------------------------------------
def read_rsna_boxes(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """stage_2_train_labels.csv as is: one row per box (Target 0 rows have NaN boxes)."""
    df = pd.read_csv(path or source_path(RSNA_LABELS))
    missing = {"patientId", "x", "y", "width", "height", "Target"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: RSNA labels lack column(s) {sorted(missing)}")
    return df


def read_rsna_patients(labels_path=None, headers_path=None) -> pd.DataFrame:
    """One row per patient: patientId, target (0/1), boxes [(x, y, w, h)...] in 1024-px coordinates,
    view, pixel_spacing, age, sex (the last four from the shipped DICOM headers)."""
    boxes = read_rsna_boxes(labels_path)
    headers = pd.read_csv(headers_path or source_path(RSNA_HEADERS))
    has_box = boxes["x"].notna()
    box_lists = (
        boxes[has_box]
        .assign(box=lambda d: list(zip(d.x, d.y, d.width, d.height)))
        .groupby("patientId", sort=False)["box"]
        .apply(list)
    )
    patients = boxes.groupby("patientId", sort=False)["Target"].max().rename("target").reset_index()
    patients["boxes"] = patients["patientId"].map(box_lists).apply(lambda b: b if isinstance(b, list) else [])
    meta = headers.set_index("PatientID")[["ViewPosition", "PixelSpacing", "PatientAge", "PatientSex"]]
    meta.columns = ["view", "pixel_spacing", "age", "sex"]
    patients = patients.join(meta, on="patientId")
    patients["view"] = patients["view"].fillna("PA")
    patients["pixel_spacing"] = patients["pixel_spacing"].fillna(0.143)
    return patients


# -- ChestX-ray14 ---------------------------------------------------------------------------
NIH_ENTRY_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


def read_nih_entries(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Data_Entry_2017(_v2020).csv with a ``findings`` column (list of Finding Labels, [] = No Finding)."""
    df = pd.read_csv(path or source_path(NIH_ENTRIES))
    df = df.loc[:, [c for c in df.columns if not c.startswith("Unnamed")]]
    if "Patient Sex" in df.columns and "Patient Gender" not in df.columns:
        df = df.rename(columns={"Patient Sex": "Patient Gender"})
    for col in ("Image Index", "Finding Labels"):
        if col not in df.columns:
            raise ValueError(f"{path}: ChestX-ray14 entries lack column {col!r}")
    df["findings"] = df["Finding Labels"].str.split("|").apply(lambda xs: [x for x in xs if x != "No Finding"])
    return df


def read_nih_boxes(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """BBox_List_2017.csv as image_index, label (Data_Entry spelling: Infiltrate -> Infiltration),
    x, y, w, h (1024-px coordinates)."""
    df = pd.read_csv(
        path or source_path(NIH_BOXES), header=0, usecols=range(6), names=["image_index", "label", "x", "y", "w", "h"]
    )
    df["label"] = df["label"].replace({"Infiltrate": "Infiltration"})
    return df


# -- VinBigData -----------------------------------------------------------------------------
def read_vinbig_annotations(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """train.csv as is: one row per (image, radiologist, finding[, box])."""
    df = pd.read_csv(path or source_path(VINBIG_LABELS))
    missing = {"image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: VinBigData labels lack column(s) {sorted(missing)}")
    return df


def vinbig_image_size(annotations: pd.DataFrame) -> pd.Series:
    """Assumed side of each image (the file has no sizes): see the module docstring."""
    extent = annotations.groupby("image_id")[["x_max", "y_max"]].max().max(axis=1)
    return np.ceil(extent.fillna(0).clip(lower=VINBIG_NOMINAL_SIZE)).astype(int)


def read_vinbig_images(path=None) -> pd.DataFrame:
    """One row per image: image_id, classes (sorted, "No finding" dropped), boxes
    {class: [(x0, y0, x1, y1)...] from one radiologist: the one who drew most boxes of that class,
    ties to the lowest rad_id}, size (assumed side in px)."""
    ann = read_vinbig_annotations(path)
    sizes = vinbig_image_size(ann)
    findings = ann[ann["class_name"] != "No finding"]
    classes = findings.groupby("image_id")["class_name"].apply(lambda s: sorted(set(s)))
    boxed = findings.dropna(subset=["x_min"])
    counts = boxed.groupby(["image_id", "class_name", "rad_id"]).size().rename("n").reset_index()
    chosen_rads = counts.sort_values(["image_id", "class_name", "n", "rad_id"], ascending=[True, True, False, True])
    chosen_rads = chosen_rads.drop_duplicates(["image_id", "class_name"])[["image_id", "class_name", "rad_id"]]
    chosen = boxed.merge(chosen_rads, on=["image_id", "class_name", "rad_id"])
    boxes: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    for image_id, class_name, x0, y0, x1, y1 in zip(
        chosen.image_id, chosen.class_name, chosen.x_min, chosen.y_min, chosen.x_max, chosen.y_max
    ):
        boxes.setdefault(image_id, {}).setdefault(class_name, []).append((x0, y0, x1, y1))
    images = pd.DataFrame({"image_id": sorted(ann["image_id"].unique())})
    images["classes"] = images["image_id"].map(classes).apply(lambda c: c if isinstance(c, list) else [])
    images["boxes"] = images["image_id"].map(lambda i: boxes.get(i, {}))
    images["size"] = images["image_id"].map(sizes).astype(int)
    return images


# -- SIIM-ACR -------------------------------------------------------------------------------
def read_siim_rle(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """train-rle.csv as image_id, rle (stripped; "-1" = no pneumothorax), one row per region."""
    df = pd.read_csv(path or source_path(SIIM_RLE), dtype=str)
    df.columns = [c.strip() for c in df.columns]
    if not {"ImageId", "EncodedPixels"} <= set(df.columns):
        raise ValueError(f"{path}: SIIM RLE file needs columns ImageId, EncodedPixels")
    return pd.DataFrame({"image_id": df["ImageId"].str.strip(), "rle": df["EncodedPixels"].fillna(EMPTY).str.strip()})


def read_siim_images(path=None) -> pd.DataFrame:
    """One row per image: image_id, rles (the non-empty RLE strings, [] = no pneumothorax), target."""
    rows = read_siim_rle(path)
    rles = rows.groupby("image_id", sort=True)["rle"].apply(lambda s: [r for r in s if r != EMPTY])
    images = rles.rename("rles").reset_index()
    images["target"] = images["rles"].apply(len).gt(0).astype(int)
    return images
