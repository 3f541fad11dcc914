"""Readers of the downstream datasets in their published layouts (the twins use the same layouts).

Each reader returns a pa.Table, one row per kept image:

    image_id   string
    path       string   absolute path of the image file (it may be missing: preprocessing rejects it)
    view       string   PA / AP
    split      string   train | validate | test
    labels     list<float32>  1 / 0 / NaN aligned with the table's label_names (canonical names)
    boxes      list<struct<category, x0, y0, x1, y1>>  (rsna, nih, vinbig) in [0, 1] of the source image
    mask_rle, mask_height, mask_width  (siim) the relative RLE strings of the pneumothorax regions
                                       and the image size they refer to

with schema metadata ``dataset``, ``task`` (single_label | multi_label), ``label_names`` and
``classes`` (JSON lists; see ``label_names_of``). Which images are kept and their split: a twin's
``splits.csv`` when the root has one, else the sampling policy of medfilip.datasets.sampling
(seeded) over the whole dataset: validate + test first, then ``n_train`` train images from the rest,
patient-disjoint where the labels give a patient id (ChestX-ray14's ``Patient ID``; RSNA has one
image per patientId; VinBigData, SIIM and the COVID folders give none, so they are disjoint by
image). A large ``n_train`` (e.g. 1,000,000) takes every remaining labelled image: the real
partition left over by the evaluation splits.

torchxrayvision's dataset classes give the label logic where they fit:
``RSNA_Pneumonia_Dataset`` (Target per patient, extension=".dcm"; views from the DICOM header table
it ships), ``NIH_Dataset`` (multi-hot Finding Labels, BBox_List with "Infiltrate" renamed) and
``VinDr_Dataset`` (classes of any of the three radiologists). They do not fit:
``SIIM_Pneumothorax_Dataset`` keeps one row per RLE row (447 images have 2-10 rows, so labels repeat)
and caches its file map in a module global keyed by nothing (a second root reuses the first root's
files), so SIIM is read here; ``COVID19_Dataset`` is a different dataset (ieee8023
covid-chestxray-dataset), so the COVID-19 Radiography folders are read here. VinDr_Dataset gives no
boxes per radiologist choice, so its boxes come from medfilip.datasets.sources (one radiologist per
class, as the twin draws them).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from medfilip.datasets import sources
from medfilip.datasets.catalog import SPECS
from medfilip.datasets.sampling import (
    sample_balanced,
    sample_random,
    sample_splits,
)
from medfilip.names import SPLITS

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
BOX_TYPE = pa.struct(
    [("category", pa.string()), ("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32())]
)


class DatasetLayoutError(ValueError):
    """A dataset root that lacks a file or folder of its published layout."""


# -- small helpers ----------------------------------------------------------------------------
def label_names_of(table: pa.Table) -> list[str]:
    return json.loads(table.schema.metadata[b"label_names"])


def classes_of(table: pa.Table) -> list[str]:
    """The source class names read (a class whose folder is missing is left out)."""
    return json.loads(table.schema.metadata[b"classes"])


def task_of(table: pa.Table) -> str:
    return table.schema.metadata[b"task"].decode()


def _first_existing(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise DatasetLayoutError(f"{root}: no {what} (looked for {', '.join(names)})")


def file_map(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """File name -> path for every file with one of ``suffixes`` under root (any depth)."""
    found: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.lower().endswith(suffixes):
                found.setdefault(name, Path(dirpath) / name)
    return found


def dicom_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a DICOM header, or None when the file cannot be read."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # noqa: BLE001 - a bad file is preprocessing's to reject; fall back to the nominal size
        return None


def png_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception:  # noqa: BLE001
        return None


def _normalised_boxes(boxes: list[tuple[str, float, float, float, float]], size: tuple[int, int]) -> list[dict]:
    """(category, x0, y0, x1, y1 in pixels) -> BOX_TYPE dicts in [0, 1] of an image (height, width)."""
    h, w = size
    return [
        {
            "category": c,
            "x0": float(np.clip(x0 / w, 0, 1)),
            "y0": float(np.clip(y0 / h, 0, 1)),
            "x1": float(np.clip(x1 / w, 0, 1)),
            "y1": float(np.clip(y1 / h, 0, 1)),
        }
        for c, x0, y0, x1, y1 in boxes
    ]


def box_scale(
    boxes: list[tuple[str, float, float, float, float]], size: tuple[int, int], source_size: int
) -> tuple[int, int]:
    """The (height, width) the pixel ``boxes`` of an image of ``size`` refer to: the image's own size,
    unless a box reaches past it (by more than 2 %) while fitting the dataset's source size
    ``source_size`` (a downsampled copy of the images beside the original box list): then that."""
    h, w = size
    if not boxes:
        return size
    x_max = max(b[3] for b in boxes)
    y_max = max(b[4] for b in boxes)
    past = x_max > w * 1.02 or y_max > h * 1.02
    fits_source = x_max <= source_size * 1.02 and y_max <= source_size * 1.02
    return (source_size, source_size) if past and fits_source else size


def _present_only(
    dataset: str, root: Path, frame: pd.DataFrame, files: dict[str, Path], labels_file: Path
) -> tuple[pd.DataFrame, int]:
    """The rows of a real folder's label file whose image is in the folder (a label file of the whole
    dataset beside a part of its images), and how many were dropped. A twin (splits.csv) keeps every
    row: its missing images are preprocessing's to reject and count."""
    if (root / SPLITS_FILE).exists():
        return frame, 0
    present = frame["image_id"].isin(set(files)).to_numpy()
    dropped = int((~present).sum())
    if not present.any():
        raise DatasetLayoutError(
            f"{labels_file}: none of its {len(frame)} images is under {root} (e.g. {frame['image_id'].iloc[0]})"
        )
    if dropped:
        log.warning(
            "%s: %d of %d row(s) of %s name an image not under %s: dropped (e.g. %s)",
            dataset,
            dropped,
            len(frame),
            labels_file.name,
            root,
            frame.loc[~present, "image_id"].iloc[:3].tolist(),
        )
    return frame.loc[present].reset_index(drop=True), dropped


def _with_metadata(table: pa.Table, **values) -> pa.Table:
    return table.replace_schema_metadata({**table.schema.metadata, **{k: json.dumps(v) for k, v in values.items()}})


def _select(
    dataset: str,
    root: Path,
    frame: pd.DataFrame,
    settings,
    seed: int,
    sampler: Callable[[pd.DataFrame, int, int], np.ndarray],
    groups: str | None = None,
) -> pd.DataFrame:
    """The kept rows of ``frame`` (column image_id) with a ``split`` column: from the twin's
    splits.csv when the root has one, else sampled and split with the seed (``groups``: the
    column of patient ids that train must not share with validate / test)."""
    splits_csv = root / SPLITS_FILE
    if splits_csv.exists():
        marks = pd.read_csv(splits_csv, dtype=str)
        kept = frame.merge(marks[["image_id", "split"]], on="image_id", how="inner")
        missing = set(marks["image_id"]) - set(kept["image_id"])
        if missing:
            log.warning(
                "%s: %d image(s) in %s are not in the labels, e.g. %s",
                dataset,
                len(missing),
                splits_csv,
                sorted(missing)[:3],
            )
        bad = set(kept["split"]) - set(SPLITS)
        if bad:
            raise DatasetLayoutError(f"{splits_csv}: split must be one of {list(SPLITS)}, found {sorted(bad)}")
        return kept.reset_index(drop=True)

    def on_rows(pool: np.ndarray, n: int, sub_seed: int) -> np.ndarray:
        return pool[sampler(frame.iloc[pool].reset_index(drop=True), n, sub_seed)] if pool.size else pool

    idx, splits = sample_splits(
        len(frame),
        settings.n_test,
        settings.n_validate,
        settings.n_train,
        seed,
        dataset,
        on_rows,
        None if groups is None else frame[groups].to_numpy(),
    )
    kept = frame.iloc[idx].reset_index(drop=True)
    kept["split"] = splits
    return kept


def _random_sampler(frame: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    return sample_random(len(frame), n, seed)


def _balanced_sampler(frame: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    positives = np.stack(frame["_positives"].to_numpy()) if len(frame) else np.zeros((0, 0), bool)
    return sample_balanced(
        positives, n, seed, has_box=frame["_has_box"].to_numpy(), candidates=frame["_no_finding"].to_numpy()
    )


def _to_table(
    dataset: str, kept: pd.DataFrame, classes: list[str], extra: dict[str, pa.Array] | None = None
) -> pa.Table:
    spec = SPECS[dataset]
    columns = {
        "image_id": pa.array(kept["image_id"].astype(str).tolist(), pa.string()),
        "path": pa.array([str(p) for p in kept["path"]], pa.string()),
        "view": pa.array(kept["view"].tolist(), pa.string()),
        "split": pa.array(kept["split"].tolist(), pa.string()),
        "labels": pa.array([np.asarray(v, np.float32).tolist() for v in kept["labels"]], pa.list_(pa.float32())),
        **(extra or {}),
    }
    metadata = {
        "dataset": dataset,
        "task": spec.task,
        "label_names": json.dumps(spec.label_names(classes)),
        "classes": json.dumps(list(classes)),
    }
    return pa.table(columns).replace_schema_metadata(metadata)


def _xrv():
    import torchxrayvision as xrv

    return xrv


# -- RSNA -------------------------------------------------------------------------------------
def read_rsna(root: str | Path, settings, *, seed: int = 0) -> pa.Table:
    """RSNA Pneumonia: stage_2_train_images/<patientId>.dcm + stage_2_train_labels.csv."""
    root = Path(root)
    labels_csv = _first_existing(root, ("stage_2_train_labels.csv", "stage_1_train_labels.csv"), "RSNA labels CSV")
    image_dir = _first_existing(root, ("stage_2_train_images", "stage_1_train_images"), "RSNA image folder")
    ds = _xrv().datasets.RSNA_Pneumonia_Dataset(
        imgpath=str(image_dir), csvpath=str(labels_csv), views=["*"], extension=".dcm"
    )
    target = ds.labels[:, ds.pathologies.index("Lung Opacity")]
    frame = pd.DataFrame(
        {
            "image_id": ds.csv["patientId"].astype(str).to_numpy(),
            "view": ds.csv["view"].replace({"UNKNOWN": None}).to_numpy(),
            "target": target,
        }
    )
    frame = _select("rsna", root, frame, settings, seed, _random_sampler)
    by_class = {"Lung Opacity": frame["target"].to_numpy(), "No Lung Opacity": 1.0 - frame["target"].to_numpy()}
    frame["labels"] = list(np.stack([by_class[c] for c in settings.classes], axis=1).astype(np.float32))
    frame["path"] = [image_dir / f"{pid}.dcm" for pid in frame["image_id"]]
    raw = ds.raw_csv.dropna(subset=["x"])
    raw = raw[raw["patientId"].isin(set(frame["image_id"]))]
    pixel_boxes: dict[str, list] = {}
    for r in raw.itertuples(index=False):
        pixel_boxes.setdefault(r.patientId, []).append(("pneumonia", r.x, r.y, r.x + r.width, r.y + r.height))
    boxes = []
    for pid, path in zip(frame["image_id"], frame["path"]):
        found = pixel_boxes.get(pid, [])
        size = (dicom_size(path) if found else None) or (sources.RSNA_SIZE, sources.RSNA_SIZE)
        boxes.append(_normalised_boxes(found, size))
    return _to_table("rsna", frame, settings.classes, {"boxes": pa.array(boxes, pa.list_(BOX_TYPE))})


# -- ChestX-ray14 -----------------------------------------------------------------------------
def read_nih(root: str | Path, settings, *, seed: int = 0) -> pa.Table:
    """ChestX-ray14: images (any depth, e.g. images_001/images/*.png) + Data_Entry_2017(_v2020).csv
    [+ BBox_List_2017.csv; the copy torchxrayvision ships when the root has none]."""
    root = Path(root)
    entries = _first_existing(
        root,
        ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz"),
        "ChestX-ray14 Data_Entry CSV",
    )
    bbox = root / "BBox_List_2017.csv"
    bbox_arg = str(bbox) if bbox.exists() else str(sources.source_path(sources.NIH_BOXES))
    ds = _xrv().datasets.NIH_Dataset(
        imgpath=str(root), csvpath=str(entries), bbox_list_path=bbox_arg, views=["*"], unique_patients=False
    )
    classes = list(settings.classes)
    columns = [ds.pathologies.index(c) for c in classes]
    labels = ds.labels[:, columns]
    box_table = ds.pathology_maskscsv
    box_table = box_table[box_table["Finding Label"].isin(classes)]
    boxed = set(box_table["Image Index"])
    frame = pd.DataFrame(
        {
            "image_id": ds.csv["Image Index"].astype(str).to_numpy(),
            "view": ds.csv["view"].to_numpy(),
            "labels": list(labels),
            "_positives": list(labels > 0.5),
            "_has_box": ds.csv["Image Index"].isin(boxed).to_numpy(),
            "_no_finding": (ds.csv["Finding Labels"] == "No Finding").to_numpy(),
            "_patient": ds.csv["Patient ID"].astype(str).to_numpy()
            if "Patient ID" in ds.csv.columns
            else ds.csv["Image Index"].astype(str).to_numpy(),
        }
    )
    files = file_map(root, (".png",))
    frame, n_dropped = _present_only("nih", root, frame, files, entries)
    frame = _select("nih", root, frame, settings, seed, _balanced_sampler, groups="_patient")
    frame["path"] = [files.get(i, root / "images" / i) for i in frame["image_id"]]
    spec = SPECS["nih"]
    kept_boxes = box_table[box_table["Image Index"].isin(set(frame["image_id"]))]
    pixel_boxes: dict[str, list] = {}
    for r in kept_boxes.itertuples(index=False):
        pixel_boxes.setdefault(r[0], []).append((spec.canonical(r[1]), r.x, r.y, r.x + r.w, r.y + r.h))
    boxes = []
    rescaled = 0
    for image_id, path in zip(frame["image_id"], frame["path"]):
        found = pixel_boxes.get(image_id, [])
        size = (png_size(path) if found else None) or (sources.NIH_SIZE, sources.NIH_SIZE)
        scale = box_scale(found, size, sources.NIH_SIZE)
        rescaled += scale != size
        boxes.append(_normalised_boxes(found, scale))
    if rescaled:
        log.warning(
            "nih: %d image(s) with boxes past their own size in %s: read as %d-px source coordinates",
            rescaled,
            bbox_arg,
            sources.NIH_SIZE,
        )
    table = _to_table("nih", frame, classes, {"boxes": pa.array(boxes, pa.list_(BOX_TYPE))})
    return _with_metadata(table, n_dropped_rows=n_dropped, n_boxes_rescaled=int(rescaled))


# -- VinBigData -------------------------------------------------------------------------------
XRV_VINBIG_NAMES = {
    "Pleural effusion": "Effusion",
    "Pleural thickening": "Pleural_Thickening",
    "Other lesion": "Other Lesion",
}


def read_vinbig(root: str | Path, settings, *, seed: int = 0) -> pa.Table:
    """VinBigData (Kaggle) / VinDr-CXR: train/<image_id>.dicom + train.csv."""
    root = Path(root)
    labels_csv = _first_existing(root, ("train.csv", "annotations/annotations_train.csv"), "VinBigData train.csv")
    image_dir = _first_existing(root, ("train",), "VinBigData train/ folder")
    ds = _xrv().datasets.VinDr_Dataset(imgpath=str(image_dir), csvpath=str(labels_csv))
    classes = list(settings.classes)
    xrv_index = {name.lower(): i for i, name in enumerate(ds.pathologies)}  # xrv capitalises differently
    labels = ds.labels[:, [xrv_index[XRV_VINBIG_NAMES.get(c, c).lower()] for c in classes]]
    per_image = sources.read_vinbig_images(labels_csv).set_index("image_id")
    image_ids = ds.csv["image_id"].astype(str)
    frame = pd.DataFrame(
        {
            "image_id": image_ids.to_numpy(),
            "view": "PA",
            "labels": list(labels),
            "_positives": list(labels > 0.5),
            "_has_box": [any(c in per_image.at[i, "boxes"] for c in classes) for i in image_ids],
            "_no_finding": (ds.csv["class_name"] == "No finding").to_numpy(),
        }
    )
    frame = _select("vinbig", root, frame, settings, seed, _balanced_sampler)
    frame["path"] = [image_dir / f"{i}.dicom" for i in frame["image_id"]]
    spec = SPECS["vinbig"]
    boxes = []
    for image_id, path in zip(frame["image_id"], frame["path"]):
        found = [
            (spec.canonical(c), *box)
            for c, bs in sorted(per_image.at[image_id, "boxes"].items())
            if c in classes
            for box in bs
        ]
        side = int(per_image.at[image_id, "size"])
        size = (dicom_size(path) if found else None) or (side, side)
        boxes.append(_normalised_boxes(found, size))
    return _to_table("vinbig", frame, classes, {"boxes": pa.array(boxes, pa.list_(BOX_TYPE))})


# -- SIIM-ACR ---------------------------------------------------------------------------------
def read_siim(root: str | Path, settings, *, seed: int = 0) -> pa.Table:
    """SIIM-ACR: dicom-images-train/**/<ImageId>.dcm + train-rle.csv (or stage_2_train.csv)."""
    root = Path(root)
    rle_csv = _first_existing(root, ("train-rle.csv", "stage_2_train.csv"), "SIIM RLE CSV")
    images = sources.read_siim_images(rle_csv)
    frame = pd.DataFrame(
        {
            "image_id": images["image_id"],
            "target": images["target"].astype(np.float32),
            "rles": images["rles"],
            "view": "PA",
        }
    )
    frame = _select("siim", root, frame, settings, seed, _random_sampler)
    by_class = {"Pneumothorax": frame["target"].to_numpy(), "No Pneumothorax": 1.0 - frame["target"].to_numpy()}
    frame["labels"] = list(np.stack([by_class[c] for c in settings.classes], axis=1).astype(np.float32))
    image_dir = root / "dicom-images-train" if (root / "dicom-images-train").is_dir() else root
    files = file_map(image_dir, (".dcm",))
    frame["path"] = [files.get(f"{i}.dcm", image_dir / f"{i}.dcm") for i in frame["image_id"]]
    heights, widths = [], []
    for path in frame["path"]:
        # every image's own size (an empty mask too: train and test masks then match their images)
        h, w = dicom_size(path) or (sources.SIIM_SIZE, sources.SIIM_SIZE)
        heights.append(h)
        widths.append(w)
    extra = {
        "mask_rle": pa.array([list(r) for r in frame["rles"]], pa.list_(pa.string())),
        "mask_height": pa.array(heights, pa.int32()),
        "mask_width": pa.array(widths, pa.int32()),
    }
    return _to_table("siim", frame, settings.classes, extra)


def siim_mask(row: dict) -> np.ndarray:
    """The union of a SIIM row's RLE regions as a bool (mask_height, mask_width) mask."""
    from medfilip.datasets.rle import rle_decode

    mask = np.zeros((row["mask_height"], row["mask_width"]), bool)
    for rle in row["mask_rle"] or []:
        mask |= rle_decode(rle, row["mask_height"], row["mask_width"])
    return mask


# -- COVID-19 Radiography ---------------------------------------------------------------------
COVID_FOLDER_ALIASES = {
    "COVID": ("COVID", "COVID-19"),
    "Normal": ("Normal", "NORMAL"),
    "Viral Pneumonia": ("Viral Pneumonia", "Pneumonia"),
    "Lung_Opacity": ("Lung_Opacity", "Lung Opacity"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_covid(root: str | Path, settings, *, seed: int = 0) -> pa.Table:
    """COVID-19 Radiography Database: <class>/images/*.png (v4+) or <class>/*.png (v1-3);
    mask folders are skipped. Single-label: the folder is the class."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: not a folder")
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    folders = {
        c: next((subdirs[a.lower()] for a in COVID_FOLDER_ALIASES[c] if a.lower() in subdirs), None)
        for c in settings.classes
    }
    missing = [c for c, folder in folders.items() if folder is None]
    classes = [c for c in settings.classes if folders[c] is not None]
    if missing:
        # e.g. a v1-3 copy has no Lung_Opacity folder: its classes are the folders it has
        log.warning(
            "covid: %s has no folder for class(es) %s (looked for %s): read without them",
            root,
            missing,
            [COVID_FOLDER_ALIASES[c] for c in missing],
        )
    if len(classes) < 2:
        raise DatasetLayoutError(
            f"{root}: folders for only {classes} of the classes {list(settings.classes)} "
            f"(looked for {[COVID_FOLDER_ALIASES[c] for c in missing]}); a single-label set needs two"
        )
    records = []
    for k, class_name in enumerate(classes):
        folder = folders[class_name]
        image_dir = folder / "images" if (folder / "images").is_dir() else folder
        onehot = np.zeros(len(classes), np.float32)
        onehot[k] = 1.0
        for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            records.append({"image_id": path.stem, "path": path, "view": "PA", "labels": onehot})
    frame = pd.DataFrame(records, columns=["image_id", "path", "view", "labels"])
    frame = _select("covid", root, frame, settings, seed, _random_sampler)
    return _with_metadata(_to_table("covid", frame, classes), missing_classes=missing)


READERS: dict[str, Callable[..., pa.Table]] = {
    "rsna": read_rsna,
    "nih": read_nih,
    "vinbig": read_vinbig,
    "siim": read_siim,
    "covid": read_covid,
}


def read_dataset(dataset: str, root: str | Path, datasets_config) -> pa.Table:
    """The configured dataset read from ``root`` (a real folder or a twin)."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(READERS)}")
    settings = getattr(datasets_config, dataset)
    table = READERS[dataset](root, settings, seed=datasets_config.seed)
    if table.num_rows == 0:
        raise DatasetLayoutError(f"{root}: no {dataset} images found")
    return table
