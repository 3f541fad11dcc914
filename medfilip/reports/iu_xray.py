"""Reader for the IU-Xray / OpenI radiology reports (one XML file per report).

By default it reads the 3,955 reports shipped inside the ``torchxrayvision``
package (``data/NLMCXR_reports.tgz``), together with that package's DICOM
metadata for the view position of each image.
"""

from __future__ import annotations

import csv
import gzip
import logging
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from medfilip.names import ReportSource
from medfilip.reports.records import Reject, Report, ReportImage
from medfilip.reports.sections import clean_text
from medfilip.reports.splits import assign_split

log = logging.getLogger(__name__)

SOURCE = ReportSource.iu_xray.value


def shipped_reports_path() -> Path:
    """The IU-Xray report tarball that ``torchxrayvision`` installs."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("torchxrayvision is not installed; set reports.iu_xray.path to the OpenI XML reports")
    path = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found in the installed torchxrayvision")
    return path


def shipped_view_positions() -> dict[str, str]:
    """image id (``CXR1000_IM-0003-2001``) -> view position (PA, AP, LL...) from torchxrayvision's metadata."""
    path = shipped_reports_path().parent / "nlmcxr_dicom_metadata.csv.gz"
    if not path.exists():
        return {}
    views: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            view = (row.get("View Position") or "").strip()
            if view:
                views[row["imageid"]] = view
    return views


def iter_xml_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (location, raw bytes) for each ``*.xml`` in a folder or tarball, in name order."""
    if path.is_dir():
        for f in sorted(path.rglob("*.xml")):
            yield str(f), f.read_bytes()
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: IU-Xray reports not found")
    with tarfile.open(path, "r:*") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")), key=lambda m: m.name)
        for m in members:
            fh = tar.extractfile(m)
            if fh is not None:
                yield f"{path}:{m.name}", fh.read()


def parse_openi_xml(
    raw: bytes,
    location: str,
    *,
    split_seed: int,
    split_fractions: tuple[float, float, float],
    views: dict[str, str] | None = None,
) -> Report | Reject:
    """Parse one OpenI report; never raises for bad content, returns a Reject naming the problem."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Reject(SOURCE, location, None, f"not valid UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start}")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        return Reject(SOURCE, location, None, f"malformed XML: {err}")
    uid = root.find("uId")
    report_id = uid.get("id") if uid is not None else None
    if not report_id:
        return Reject(SOURCE, location, None, "no <uId id=...> element")
    sections = {(el.get("Label") or "").upper(): "".join(el.itertext()) for el in root.iter("AbstractText")}
    findings = clean_text(sections.get("FINDINGS"))
    impression = clean_text(sections.get("IMPRESSION"))
    if not findings and not impression:
        return Reject(SOURCE, location, report_id, "empty report: no FINDINGS or IMPRESSION text")
    views = views or {}
    images = tuple(
        ReportImage(image_id=img_id, path=f"{img_id}.png", view=views.get(img_id))
        for img_id in (el.get("id") for el in root.findall("parentImage"))
        if img_id
    )
    mesh = root.find("MeSH")
    annotations = tuple(
        " ".join(el.text.split())
        for el in (mesh.findall("major") if mesh is not None else [])
        if el.text and el.text.strip()
    )
    # IU-Xray has one report per patient and no patient ids: the report is the patient.
    subject_id = report_id
    return Report(
        report_id=report_id,
        source=SOURCE,
        subject_id=subject_id,
        study_id=report_id,
        findings=findings,
        impression=impression,
        split=assign_split(subject_id, split_seed, split_fractions),
        images=images,
        annotations=annotations,
    )


def read_iu_xray(
    path: Path | None = None,
    *,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Iterator[Report | Reject]:
    if path is None:  # the default corpus comes with its DICOM metadata, hence view positions
        path, views = shipped_reports_path(), shipped_view_positions()
    else:
        path, views = Path(path), {}
    log.info("reading IU-Xray reports from %s", path)
    for location, raw in iter_xml_documents(path):
        yield parse_openi_xml(raw, location, split_seed=split_seed, split_fractions=split_fractions, views=views)
