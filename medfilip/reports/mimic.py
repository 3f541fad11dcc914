"""Reader for the MIMIC-CXR free-text reports.

Layout (as PhysioNet ships ``mimic-cxr-reports.zip`` and MIMIC-CXR-JPG)::

    root/files/p10/p10000032/s50414267.txt          one report per study
    image_root/files/p10/p10000032/s50414267/{dicom_id}.jpg

plus ``mimic-cxr-2.0.0-split.csv(.gz)`` (dicom_id, study_id, subject_id, split:
the official patient-level train/validate/test split) and, optionally,
``mimic-cxr-2.0.0-metadata.csv(.gz)`` (dicom_id, study_id, ViewPosition, ...).

Report texts are read one at a time while iterating (the corpus has ~227k of
them); only the two CSVs are held in memory, as dicts keyed by study id.
Image paths are relative to ``image_root`` (the image stage resolves them);
the reader never opens an image.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from medfilip.names import SPLITS, ReportSource
from medfilip.reports.records import Reject, Report, ReportImage
from medfilip.reports.sections import findings_and_impression

log = logging.getLogger(__name__)

SOURCE = ReportSource.mimic_cxr.value

# files/pXX/pNNNNNNNN/sNNNNNNNN.txt, relative to root.
_REPORT_PATH = re.compile(r"^files/p(\d{2})/p(\d+)/s(\d+)\.txt$")
_STUDY_DIR = re.compile(r"^s\d+$")

SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "study_id", "ViewPosition")


@dataclass
class _Study:
    """What the split file says about one study."""

    subject_id: str
    splits: set[str] = field(default_factory=set)
    dicom_ids: list[str] = field(default_factory=list)


def _open_csv(path: Path) -> IO[str]:
    """Open a CSV as text, gzip-compressed or not (sniffed from the magic bytes, not the suffix)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _check_columns(reader: csv.DictReader, path: Path, required: tuple[str, ...]) -> None:
    present = reader.fieldnames or []
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(present) or 'none'})")


def load_split_csv(path: str | Path) -> dict[str, _Study]:
    """study_id -> subject, split(s) and dicom ids listed in ``mimic-cxr-2.0.0-split.csv(.gz)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: MIMIC-CXR split file not found")
    studies: dict[str, _Study] = {}
    with _open_csv(path) as fh:
        reader = csv.DictReader(fh)
        _check_columns(reader, path, SPLIT_COLUMNS)
        for row in reader:
            study_id = (row["study_id"] or "").strip()
            if not study_id:
                continue
            study = studies.get(study_id)
            if study is None:
                study = studies[study_id] = _Study(subject_id=(row["subject_id"] or "").strip())
            study.splits.add((row["split"] or "").strip())
            dicom_id = (row["dicom_id"] or "").strip()
            if dicom_id:
                study.dicom_ids.append(dicom_id)
    # The official split is by patient; say so if this file breaks that.
    by_subject: dict[str, set[str]] = defaultdict(set)
    for study in studies.values():
        by_subject[study.subject_id] |= study.splits
    leaky = sum(1 for s in by_subject.values() if len(s) > 1)
    if leaky:
        log.warning("%s: %d subject(s) have studies in more than one split", path, leaky)
    log.info("%s: %d studies of %d subjects", path, len(studies), len(by_subject))
    return studies


def load_metadata_csv(path: str | Path) -> dict[str, list[tuple[str, str | None]]]:
    """study_id -> [(dicom_id, ViewPosition or None)] from ``mimic-cxr-2.0.0-metadata.csv(.gz)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: MIMIC-CXR metadata file not found")
    images: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    with _open_csv(path) as fh:
        reader = csv.DictReader(fh)
        _check_columns(reader, path, METADATA_COLUMNS)
        for row in reader:
            study_id = (row["study_id"] or "").strip()
            dicom_id = (row["dicom_id"] or "").strip()
            if study_id and dicom_id:
                images[study_id].append((dicom_id, (row["ViewPosition"] or "").strip() or None))
    log.info("%s: %d images of %d studies", path, sum(map(len, images.values())), len(images))
    return dict(images)


def iter_report_files(root: Path) -> list[str]:
    """Every ``*.txt`` under ``root/files`` as a sorted list of root-relative POSIX paths.

    Study image folders (``sNNNNNNNN/`` beside the report, present when the
    reports and MIMIC-CXR-JPG share a root) are not descended into.
    """
    files_dir = root / "files"
    if not files_dir.is_dir():
        raise FileNotFoundError(
            f"{files_dir}: MIMIC-CXR report folder not found (expected root/files/pXX/pNNNNNNNN/sNNNNNNNN.txt)"
        )
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(files_dir):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir.count("/") == 2:  # files/pXX/pNNNNNNNN: its sub-folders hold images
            dirnames[:] = [d for d in dirnames if not _STUDY_DIR.match(d)]
        found.extend(f"{rel_dir}/{name}" for name in filenames if name.endswith(".txt"))
    found.sort()
    return found


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8")
    return text[1:] if text.startswith("\ufeff") else text


def read_mimic_cxr(
    root: str | Path,
    *,
    split_csv: str | Path,
    metadata_csv: str | Path | None = None,
    image_root: str | Path | None = None,
) -> Iterator[Report | Reject]:
    """Yield a Report (or a Reject saying why not) for each report file, in path order.

    ``image_root`` is where ``ReportImage.path`` is relative to (MIMIC-CXR-JPG;
    defaults to ``root``); it is not read here.
    """
    root = Path(root)
    studies = load_split_csv(split_csv)
    images_by_study = load_metadata_csv(metadata_csv) if metadata_csv is not None else None
    log.info("reading MIMIC-CXR reports from %s (images relative to %s)", root, image_root or root)

    paths = iter_report_files(root)
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for rel in paths:
        record = _read_one(root, rel, studies, images_by_study)
        if isinstance(record, Report):
            seen.add(record.study_id)
            counts["report"] += 1
        else:
            counts["reject"] += 1
        yield record
    missing = sum(1 for s in studies if s not in seen)
    log.info(
        "MIMIC-CXR: %d report files, %d reports, %d rejected; %d studies of the split file have no usable report",
        len(paths),
        counts["report"],
        counts["reject"],
        missing,
    )


def _read_one(
    root: Path,
    rel: str,
    studies: dict[str, _Study],
    images_by_study: dict[str, list[tuple[str, str | None]]] | None,
) -> Report | Reject:
    location = str(root / rel)
    m = _REPORT_PATH.match(rel)
    if m is None or m.group(1) != m.group(2)[:2]:
        return Reject(
            SOURCE, location, None, f"file name does not match the layout files/pXX/pNNNNNNNN/sNNNNNNNN.txt: {rel}"
        )
    subject_id, study_id = m.group(2), m.group(3)
    report_id = f"s{study_id}"

    study = studies.get(study_id)
    if study is None:
        return Reject(SOURCE, location, report_id, f"study {study_id} is not in the split file")
    if study.subject_id and study.subject_id != subject_id:
        return Reject(
            SOURCE,
            location,
            report_id,
            f"study {study_id} belongs to subject {study.subject_id} in the split file, "
            f"but its report is filed under p{subject_id}",
        )
    if len(study.splits) != 1 or next(iter(study.splits)) not in SPLITS:
        return Reject(
            SOURCE,
            location,
            report_id,
            f"study {study_id} has split {sorted(study.splits)} in the split file; "
            f"expected exactly one of {', '.join(SPLITS)}",
        )
    split = next(iter(study.splits))

    try:
        raw = (root / rel).read_bytes()
    except OSError as err:
        return Reject(SOURCE, location, report_id, f"unreadable: {err.strerror or err}")
    try:
        text = _decode(raw)
    except UnicodeDecodeError as err:
        return Reject(
            SOURCE, location, report_id, f"not valid UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start}"
        )

    findings, impression = findings_and_impression(text)
    if not findings and not impression:
        return Reject(SOURCE, location, report_id, "empty report: no FINDINGS or IMPRESSION text")

    if images_by_study is not None and study_id in images_by_study:
        entries = images_by_study[study_id]
    else:
        entries = [(d, None) for d in study.dicom_ids]
    study_dir = f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}"
    images = tuple(
        ReportImage(image_id=dicom_id, path=f"{study_dir}/{dicom_id}.jpg", view=view)
        for dicom_id, view in sorted(dict(entries).items())
    )
    return Report(
        report_id=report_id,
        source=SOURCE,
        subject_id=f"p{subject_id}",
        study_id=study_id,
        findings=findings,
        impression=impression,
        split=split,
        images=images,
    )
