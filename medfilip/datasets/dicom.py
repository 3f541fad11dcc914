"""Writing a radiograph as a DICOM file the way the real datasets ship them.

RSNA and SIIM-ACR ship 8-bit MONOCHROME2 Secondary Capture objects (modality CR, 1024x1024);
VinBigData ships 12-16-bit DX images, many MONOCHROME1 (bright = air). ``write_dicom`` covers both.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DX_IMAGE_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def stable_uid(*parts: str) -> str:
    """A valid DICOM UID (2.25.<128-bit int>, as for UUID-derived UIDs) from names: the same names give
    the same UID. (pydicom's generate_uid ignores entropy_srcs when prefix is None.)"""
    import hashlib

    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


@dataclass(frozen=True)
class DicomStyle:
    sop_class_uid: str = SECONDARY_CAPTURE
    modality: str = "CR"
    bits_stored: int = 8  # 8 -> BitsAllocated 8; more -> BitsAllocated 16
    photometric: str = "MONOCHROME2"
    window: bool = False  # write WindowCenter/Width covering the stored range
    extra: dict = field(default_factory=dict)


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    patient_id: str,
    sop_instance_uid: str,
    study_uid: str,
    series_uid: str,
    view: str = "PA",
    pixel_spacing: float = 0.143,
    style: DicomStyle = DicomStyle(),
    attributes: dict | None = None,
) -> Path:
    """``pixels`` (uint8 (H, W), bright = dense) as a DICOM file at ``path`` (written atomically).

    With bits_stored > 8 the values are scaled to the full stored range; MONOCHROME1 stores the
    inverse (max - value), so a viewer (or our preprocessing) must invert it back."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from medfilip.io import atomic_path

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"{path}: expected a uint8 (H, W) image, got {pixels.dtype} {pixels.shape}")
    if style.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric interpretation {style.photometric!r} is not monochrome")
    top = (1 << style.bits_stored) - 1
    if style.bits_stored == 8:
        stored = pixels.copy()
        allocated = 8
    else:
        stored = np.round(pixels.astype(np.float64) * (top / 255.0)).astype(np.uint16)
        allocated = 16
    if style.photometric == "MONOCHROME1":
        stored = (top - stored).astype(stored.dtype)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = style.sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = style.sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = style.modality
    ds.ConversionType = "WSD" if style.sop_class_uid == SECONDARY_CAPTURE else None
    if ds.ConversionType is None:
        del ds.ConversionType
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyDate = _dt.date(2000, 1, 1).strftime("%Y%m%d")
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PixelSpacing = [f"{pixel_spacing:.6g}", f"{pixel_spacing:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = style.photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = allocated
    ds.BitsStored = style.bits_stored
    ds.HighBit = style.bits_stored - 1
    ds.PixelRepresentation = 0
    if style.window:
        ds.WindowCenter = f"{(top + 1) / 2:g}"
        ds.WindowWidth = f"{top + 1:g}"
    for key, value in {**style.extra, **(attributes or {})}.items():
        setattr(ds, key, value)
    ds.PixelData = stored.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)
