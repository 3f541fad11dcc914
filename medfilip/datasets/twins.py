"""Phantom twins of the downstream datasets, written in the real datasets' on-disk formats.

A twin keeps the real dataset's label file rows for a sample of its images (see
medfilip.datasets.sampling) and renders each image with the phantom simulator from those labels:
findings inside the real radiologists' boxes (RSNA, ChestX-ray14 where BBox_List has them,
VinBigData) or masks (SIIM-ACR), else at the category's typical zone. Twin images are
``datasets.render_size`` pixels square (the real ones are 1024 px and more), so every box and mask
written to the twin's label file is rescaled to the twin's pixels. Layouts:

- rsna:   stage_2_train_images/<patientId>.dcm, stage_2_train_labels.csv
- nih:    images/<Image Index>, Data_Entry_2017.csv, BBox_List_2017.csv
- vinbig: train/<image_id>.dicom (16-bit, 12 stored, MONOCHROME1), train.csv
- siim:   dicom-images-train/<study>/<series>/<ImageId>.dcm, train-rle.csv
- covid:  COVID/images/COVID-<n>.png, Normal/images/..., Viral Pneumonia/images/...

plus ``splits.csv`` (image_id, split) and ``manifest.json`` (written last). The twin is built in a
temporary folder and swapped in whole, so a stale image from an earlier config never lingers.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfilip.datasets import sources
from medfilip.datasets.catalog import SPECS
from medfilip.datasets.dicom import (
    DX_IMAGE_FOR_PRESENTATION,
    SECONDARY_CAPTURE,
    DicomStyle,
    stable_uid,
    write_dicom,
)
from medfilip.datasets.readers import SPLITS_FILE
from medfilip.datasets.rle import EMPTY, rle_decode, rle_encode
from medfilip.datasets.sampling import (
    allocate,
    assign_splits,
    balanced_sampler,
    derived_seed,
    random_sampler,
    sample_splits,
)
from medfilip.io import write_text_atomic
from medfilip.names import SPLITS

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SEVERITIES = ("mild", "moderate", "severe")
# COVID-19 Radiography Database (v4) folder sizes: the twin keeps these proportions
COVID_FOLDER_SIZES = {"COVID": 3616, "Normal": 10192, "Viral Pneumonia": 1345, "Lung_Opacity": 6012}
PNEUMONIA_LOBES = (
    "right lower lobe",
    "left lower lobe",
    "right middle lobe",
    "right upper lobe",
    "left upper lobe",
    "lingula",
)

DICOM_STYLES = {
    # RSNA and SIIM ship 8-bit MONOCHROME2 Secondary Capture (modality CR) files
    "rsna": DicomStyle(SECONDARY_CAPTURE, "CR", 8, "MONOCHROME2"),
    "siim": DicomStyle(SECONDARY_CAPTURE, "CR", 8, "MONOCHROME2"),
    # VinBigData ships DX files of 12-16 bits, many of them MONOCHROME1 (inverted)
    "vinbig": DicomStyle(DX_IMAGE_FOR_PRESENTATION, "DX", 12, "MONOCHROME1", window=True),
}


@dataclass
class TwinImage:
    """One image to render and write (plain data: it crosses to worker processes)."""

    image_id: str
    relpath: str  # under the twin root
    split: str
    view: str
    seed: int
    # each: {category, box (x0, y0, x1, y1 in [0, 1]) | None, location, severity, mask_rles [twin-size RLE]}
    findings: list[dict[str, Any]] = field(default_factory=list)
    dicom: dict[str, Any] | None = None  # write_dicom keywords (patient_id, uids, pixel_spacing, attributes)
    classes: list[str] = field(default_factory=list)  # the image's source classes (as in the label file)


@dataclass(frozen=True)
class TwinSummary:
    dataset: str
    root: Path
    n_images: int
    splits: dict[str, int]
    positives: dict[str, int]
    seconds: float


# -- building blocks ------------------------------------------------------------------------
def finding(category: str, *, box=None, location=None, severity=None, mask_rles=None) -> dict[str, Any]:
    return {
        "category": category,
        "box": None if box is None else tuple(float(np.clip(v, 0.0, 1.0)) for v in box),
        "location": location,
        "severity": severity,
        "mask_rles": list(mask_rles or []),
    }


def phantom_findings(specs: list[dict[str, Any]], size: int) -> list:
    """Plain finding dicts as medfilip.phantom.Finding objects (masks decoded at the twin's size)."""
    from medfilip.phantom.render import Finding

    out = []
    for spec in specs:
        mask = None
        if spec.get("mask_rles"):
            mask = np.zeros((size, size), bool)
            for rle in spec["mask_rles"]:
                mask |= rle_decode(rle, size, size)
        out.append(
            Finding(
                category=spec["category"],
                location=spec.get("location"),
                severity=spec.get("severity"),
                box=spec.get("box"),
                mask=mask,
            )
        )
    return out


def render_twin_image(image: TwinImage, size: int, *, with_findings: bool = True, phantom_settings=None) -> np.ndarray:
    """The twin's pixels for ``image`` (``with_findings=False``: the same patient without findings)."""
    from medfilip.phantom.render import render_phantom

    findings = phantom_findings(image.findings, size) if with_findings else []
    return render_phantom(findings, size=size, seed=image.seed, view=image.view, settings=phantom_settings)


def _write_image(task: tuple[TwinImage, str, int, str, Any]) -> str:
    image, root, size, dataset, phantom_settings = task
    pixels = render_twin_image(image, size, phantom_settings=phantom_settings)
    path = Path(root) / image.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dicom is not None:
        write_dicom(path, pixels, style=DICOM_STYLES[dataset], **image.dicom)
    else:
        from PIL import Image

        from medfilip.io import atomic_path

        with atomic_path(path) as tmp:
            Image.fromarray(pixels, mode="L").save(tmp, format="PNG")
    return image.image_id


def render_all(
    images: list[TwinImage],
    root: Path,
    size: int,
    dataset: str,
    *,
    workers: int = 1,
    progress: bool = True,
    phantom_settings=None,
) -> None:
    from medfilip.io import progress_bar as tqdm

    tasks = [(image, str(root), size, dataset, phantom_settings) for image in images]
    bar = {"total": len(tasks), "desc": f"twin {dataset}", "unit": "img", "disable": not progress}
    if workers <= 1 or len(tasks) < 8:
        for _ in tqdm(map(_write_image, tasks), **bar):
            pass
        return
    with mp.get_context().Pool(min(workers, len(tasks))) as pool:
        for _ in tqdm(pool.imap_unordered(_write_image, tasks, chunksize=4), **bar):
            pass


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A bool mask at size×size by area: a twin pixel is in the mask when half of what it covers is
    (any of it, if that would leave a non-empty mask empty)."""
    from PIL import Image

    if mask.shape == (size, size):
        return mask.copy()
    cover = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BOX))
    out = cover >= 128
    if mask.any() and not out.any():
        out = cover > 0
    return out


def _kept_and_splits(
    frame: pd.DataFrame, settings, seed: int, dataset: str, sampler, groups: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The sampled rows of a source table (validate + test, then train) and their split names."""
    idx, splits = sample_splits(
        len(frame), settings.n_test, settings.n_validate, settings.n_train, seed, dataset, sampler, groups
    )
    return frame.iloc[idx].reset_index(drop=True), splits


def _random_severity(rng: np.random.Generator) -> str:
    return str(rng.choice(SEVERITIES))


# -- per dataset ----------------------------------------------------------------------------
def twin_rsna(settings, size: int, seed: int):
    patients = sources.read_rsna_patients()  # one image per patientId: disjoint by construction
    kept, splits = _kept_and_splits(patients, settings, seed, "rsna", random_sampler)
    scale = size / sources.RSNA_SIZE
    images, label_rows = [], []
    for row, split in zip(kept.itertuples(index=False), splits):
        pid = row.patientId
        findings = (
            [
                finding(
                    "pneumonia",
                    box=(
                        x / sources.RSNA_SIZE,
                        y / sources.RSNA_SIZE,
                        (x + w) / sources.RSNA_SIZE,
                        (y + h) / sources.RSNA_SIZE,
                    ),
                )
                for x, y, w, h in row.boxes
            ]
            if row.target
            else []
        )
        if row.target:
            label_rows += [
                {
                    "patientId": pid,
                    "x": round(x * scale, 2),
                    "y": round(y * scale, 2),
                    "width": round(w * scale, 2),
                    "height": round(h * scale, 2),
                    "Target": 1,
                }
                for x, y, w, h in row.boxes
            ]
        else:
            label_rows.append({"patientId": pid, "x": None, "y": None, "width": None, "height": None, "Target": 0})
        dicom = {
            "patient_id": pid,
            "sop_instance_uid": stable_uid("rsna", pid, "image"),
            "study_uid": stable_uid("rsna", pid, "study"),
            "series_uid": stable_uid("rsna", pid, "series"),
            "view": row.view,
            "pixel_spacing": float(row.pixel_spacing) / scale,
            "attributes": {
                "PatientAge": f"{int(row.age):03d}Y" if pd.notna(row.age) else "",
                "PatientSex": str(row.sex) if pd.notna(row.sex) else "",
            },
        }
        images.append(
            TwinImage(
                pid,
                f"stage_2_train_images/{pid}.dcm",
                split,
                row.view,
                derived_seed(seed, "rsna", pid),
                findings,
                dicom,
                ["Lung Opacity" if row.target else "No Lung Opacity"],
            )
        )

    def write_labels(root: Path) -> None:
        pd.DataFrame(label_rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
            root / "stage_2_train_labels.csv", index=False
        )

    return images, write_labels


def twin_nih(settings, size: int, seed: int):
    entries = sources.read_nih_entries()
    boxes = sources.read_nih_boxes()
    classes = list(settings.classes)
    positives = np.array([[c in f for c in classes] for f in entries["findings"]], dtype=bool)
    boxed_ids = set(boxes.loc[boxes["label"].isin(classes), "image_index"])
    has_box = entries["Image Index"].isin(boxed_ids).to_numpy()
    no_finding = entries["findings"].apply(len).eq(0).to_numpy()
    kept, splits = _kept_and_splits(
        entries,
        settings,
        seed,
        "nih",
        balanced_sampler(positives, has_box, no_finding),
        groups=entries["Patient ID"].to_numpy(),
    )
    box_groups = {k: g for k, g in boxes[boxes["image_index"].isin(set(kept["Image Index"]))].groupby("image_index")}  # noqa: C416 - dict() would call the groupby's .keys attribute
    spec = SPECS["nih"]
    scale = size / sources.NIH_SIZE
    images, box_rows = [], []
    for row, split in zip(kept.to_dict("records"), splits):
        image_id = row["Image Index"]
        rng = np.random.default_rng(derived_seed(seed, "nih", image_id, "findings"))
        image_boxes = box_groups.get(image_id)
        findings = []
        for label in row["findings"]:
            mine = image_boxes[image_boxes["label"] == label] if image_boxes is not None else None
            if mine is not None and len(mine):
                for b in mine.itertuples(index=False):
                    findings.append(
                        finding(
                            spec.canonical(label),
                            box=(
                                b.x / sources.NIH_SIZE,
                                b.y / sources.NIH_SIZE,
                                (b.x + b.w) / sources.NIH_SIZE,
                                (b.y + b.h) / sources.NIH_SIZE,
                            ),
                        )
                    )
                    box_rows.append(
                        {
                            "Image Index": image_id,
                            "Finding Label": "Infiltrate" if label == "Infiltration" else label,
                            "Bbox [x": round(b.x * scale, 3),
                            "y": round(b.y * scale, 3),
                            "w": round(b.w * scale, 3),
                            "h]": round(b.h * scale, 3),
                        }
                    )
            else:
                findings.append(finding(spec.canonical(label), severity=_random_severity(rng)))
        view = row["View Position"] if row["View Position"] in ("PA", "AP") else "PA"
        images.append(
            TwinImage(
                image_id,
                f"images/{image_id}",
                split,
                view,
                derived_seed(seed, "nih", image_id),
                findings,
                classes=list(row["findings"]),
            )
        )

    def write_labels(root: Path) -> None:
        kept[sources.NIH_ENTRY_COLUMNS].to_csv(root / "Data_Entry_2017.csv", index=False)
        table = pd.DataFrame(box_rows, columns=["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
        for extra in ("", " ", "  "):  # the real file ends each row with three empty columns
            table[extra] = ""
        table.to_csv(
            root / "BBox_List_2017.csv",
            index=False,
            header=["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""],
        )

    return images, write_labels


def twin_vinbig(settings, size: int, seed: int):
    annotations = sources.read_vinbig_annotations()
    table = sources.read_vinbig_images()
    classes = list(settings.classes)
    positives = np.array([[c in found for c in classes] for found in table["classes"]], dtype=bool)
    has_box = np.array([any(c in b for c in classes) for b in table["boxes"]], dtype=bool)
    no_finding = table["classes"].apply(len).eq(0).to_numpy()
    # train.csv gives no patient id (one image per study): disjoint by image
    kept, splits = _kept_and_splits(table, settings, seed, "vinbig", balanced_sampler(positives, has_box, no_finding))
    spec = SPECS["vinbig"]
    images = []
    for row, split in zip(kept.to_dict("records"), splits):
        image_id, side = row["image_id"], row["size"]
        findings = [
            finding(spec.canonical(class_name), box=(x0 / side, y0 / side, x1 / side, y1 / side))
            for class_name, class_boxes in sorted(row["boxes"].items())
            for x0, y0, x1, y1 in class_boxes
        ]
        dicom = {
            "patient_id": image_id,
            "sop_instance_uid": stable_uid("vinbig", image_id, "image"),
            "study_uid": stable_uid("vinbig", image_id, "study"),
            "series_uid": stable_uid("vinbig", image_id, "series"),
            "view": "PA",
            "pixel_spacing": 0.139 * side / size,
        }
        images.append(
            TwinImage(
                image_id,
                f"train/{image_id}.dicom",
                split,
                "PA",
                derived_seed(seed, "vinbig", image_id),
                findings,
                dicom,
                list(row["classes"]),
            )
        )
    sides = dict(zip(kept["image_id"], kept["size"]))
    rows = annotations[annotations["image_id"].isin(sides)].copy()
    factor = rows["image_id"].map(lambda i: size / sides[i])
    for col in ("x_min", "y_min", "x_max", "y_max"):
        rows[col] = (rows[col] * factor).round(1)

    def write_labels(root: Path) -> None:
        rows.to_csv(root / "train.csv", index=False)

    return images, write_labels


def twin_siim(settings, size: int, seed: int):
    table = sources.read_siim_images()  # train-rle.csv gives no patient id: disjoint by image
    kept, splits = _kept_and_splits(table, settings, seed, "siim", random_sampler)
    images, rle_rows, n_lost = [], [], 0
    for row, split in zip(kept.itertuples(index=False), splits):
        image_id = row.image_id
        twin_rles = []
        for rle in row.rles:
            small = resize_mask(rle_decode(rle, sources.SIIM_SIZE, sources.SIIM_SIZE), size)
            if small.any():
                twin_rles.append(rle_encode(small))
            else:
                n_lost += 1
        findings = [finding("pneumothorax", mask_rles=twin_rles)] if twin_rles else []
        rle_rows += [{"ImageId": image_id, " EncodedPixels": r} for r in (twin_rles or [EMPTY])]
        study, series = stable_uid("siim", image_id, "study"), stable_uid("siim", image_id, "series")
        dicom = {
            "patient_id": str(uuid.uuid5(uuid.NAMESPACE_OID, image_id)),
            "sop_instance_uid": image_id,
            "study_uid": study,
            "series_uid": series,
            "view": "PA",
            "pixel_spacing": 0.168 * sources.SIIM_SIZE / size,
        }
        images.append(
            TwinImage(
                image_id,
                f"dicom-images-train/{study}/{series}/{image_id}.dcm",
                split,
                "PA",
                derived_seed(seed, "siim", image_id),
                findings,
                dicom,
                ["Pneumothorax" if twin_rles else "No Pneumothorax"],
            )
        )
    if n_lost:
        log.warning("siim: %d mask region(s) smaller than a %d-px twin pixel were dropped", n_lost, size)

    def write_labels(root: Path) -> None:
        pd.DataFrame(rle_rows, columns=["ImageId", " EncodedPixels"]).to_csv(root / "train-rle.csv", index=False)

    return images, write_labels


def twin_covid(settings, size: int, seed: int):
    classes = list(settings.classes)
    n = settings.n_test + settings.n_validate
    counts = allocate({c: COVID_FOLDER_SIZES[c] for c in classes}, n)
    order = [(c, i) for c in classes for i in range(1, counts[c] + 1)]
    splits = assign_splits(len(order), settings.n_test, settings.n_validate, derived_seed(seed, "covid", "split"))
    if settings.n_train:  # train images numbered on after the held-out ones of their folder
        extra = allocate({c: COVID_FOLDER_SIZES[c] for c in classes}, settings.n_train)
        order += [(c, counts[c] + i) for c in classes for i in range(1, extra[c] + 1)]
        splits = np.concatenate([splits, np.full(len(order) - len(splits), "train", dtype=object)])
    images = []
    for (class_name, number), split in zip(order, splits):
        image_id = f"{class_name}-{number}"
        rng = np.random.default_rng(derived_seed(seed, "covid", image_id, "findings"))
        if class_name == "COVID":
            findings = [finding("covid-19 pneumonia", location="bilateral lower lobe", severity=_random_severity(rng))]
        elif class_name == "Viral Pneumonia":
            findings = [finding("pneumonia", location=str(rng.choice(PNEUMONIA_LOBES)), severity=_random_severity(rng))]
        elif class_name == "Lung_Opacity":
            findings = [
                finding("lung opacity", location=str(rng.choice(PNEUMONIA_LOBES)), severity=_random_severity(rng))
            ]
        else:
            findings = []
        images.append(
            TwinImage(
                image_id,
                f"{class_name}/images/{image_id}.png",
                split,
                "PA",
                derived_seed(seed, "covid", image_id),
                findings,
                classes=[class_name],
            )
        )
    return images, lambda root: None


BUILDERS = {"rsna": twin_rsna, "nih": twin_nih, "vinbig": twin_vinbig, "siim": twin_siim, "covid": twin_covid}


def build_twin(
    dataset: str,
    out_dir: str | Path,
    datasets_config,
    *,
    phantom_settings=None,
    workers: int = 1,
    progress: bool = True,
) -> TwinSummary:
    """Sample, render and write the twin of ``dataset`` into ``out_dir`` (replaced whole)."""
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(BUILDERS)}")
    started = time.perf_counter()
    settings = getattr(datasets_config, dataset)
    size, seed = datasets_config.render_size, datasets_config.seed
    images, write_labels = BUILDERS[dataset](settings, size, seed)
    out = Path(out_dir)
    building = out.parent / f".{out.name}.building"
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(parents=True)
    try:
        render_all(
            images, building, size, dataset, workers=workers, progress=progress, phantom_settings=phantom_settings
        )
        write_labels(building)
        pd.DataFrame({"image_id": [i.image_id for i in images], "split": [i.split for i in images]}).to_csv(
            building / SPLITS_FILE, index=False
        )
        spec = SPECS[dataset]
        positives = {spec.canonical(c): sum(c in image.classes for image in images) for c in settings.classes}
        splits = {s: sum(i.split == s for i in images) for s in SPLITS}
        summary = TwinSummary(dataset, out, len(images), splits, positives, round(time.perf_counter() - started, 3))
        manifest = {
            **{k: v for k, v in asdict(summary).items() if k != "root"},
            "render_size": size,
            "seed": seed,
            "classes": list(settings.classes),
            "label_names": spec.label_names(settings.classes),
            "source_files": [str(sources.source_path(f).name) for f in sources.SOURCE_FILES[dataset]],
            "images_with_findings_drawn": sum(bool(i.findings) for i in images),
            "findings_in_boxes": sum(f["box"] is not None for i in images for f in i.findings),
            "findings_from_masks": sum(bool(f["mask_rles"]) for i in images for f in i.findings),
        }
        write_text_atomic(json.dumps(manifest, indent=2) + "\n", building / MANIFEST)
        _swap_in(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("twin %s: %d images (%s) in %.1fs -> %s", dataset, summary.n_images, summary.splits, summary.seconds, out)
    return summary


def _swap_in(building: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    building.rename(out)
    if old.exists():
        shutil.rmtree(old)
