"""Preprocessing real generated files (PNG 8/16-bit, JPEG, DICOM) into the store, and the reject paths."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from medfilip.images.preprocess import (
    box_to_square,
    letterbox,
    letterbox_geometry,
    preprocess_images,
)

SIZE = 32


def gradient(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """A smooth 0..255 image (horizontal ramp plus a bright disc), so JPEG and resizing stay faithful."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (min(h, w) / 5) ** 2
    x[disc] = 230
    return np.rint(x).astype(np.uint8)


def write_dicom(
    path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", pixel_data: bool = True, **extra
) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    if pixel_data:
        ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    g = gradient()
    out: dict[str, Path] = {}
    out["png8"] = tmp_path / "png8.png"
    Image.fromarray(g).save(out["png8"])
    out["png16"] = tmp_path / "png16.png"
    Image.fromarray(g.astype(np.uint16) * 257).save(out["png16"])
    out["rgb"] = tmp_path / "rgb.png"
    Image.fromarray(np.stack([g] * 3, -1)).save(out["rgb"])
    out["wide"] = tmp_path / "wide.png"
    Image.fromarray(np.full((SIZE, 2 * SIZE), 200, np.uint8)).save(out["wide"])
    out["jpeg"] = tmp_path / "img.jpg"
    Image.fromarray(gradient(4 * SIZE, 4 * SIZE)).save(out["jpeg"], quality=95)
    stored = g.astype(np.uint16) * 16  # 12-bit
    out["mono2"] = write_dicom(tmp_path / "mono2.dcm", stored)
    out["mono1"] = write_dicom(tmp_path / "mono1.dcm", stored, photometric="MONOCHROME1")
    # HU = 2 * stored - 1000 spans [-1000, 7160]; the window maps exactly that range onto 0..255,
    # which only holds when the rescale is applied before the window
    out["rescaled"] = write_dicom(
        tmp_path / "rescaled.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3080, WindowWidth=8160
    )
    # broken ones
    buf = io.BytesIO()
    Image.fromarray(gradient(4 * SIZE, 4 * SIZE)).save(buf, format="JPEG", quality=95)
    out["truncated"] = tmp_path / "truncated.jpg"
    out["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["empty"] = tmp_path / "empty.png"
    out["empty"].write_bytes(b"")
    out["nopixels"] = write_dicom(tmp_path / "nopixels.dcm", stored, pixel_data=False)
    out["missing"] = tmp_path / "missing.png"
    out["text"] = tmp_path / "notes.txt"
    out["text"].write_text("not an image")
    out["garbage"] = tmp_path / "garbage.png"
    out["garbage"].write_bytes(b"\x89PNG but not really" * 10)
    return out


def _table(files: dict[str, Path]) -> pa.Table:
    names = list(files)
    return pa.table(
        {
            "image_id": names,
            "path": [str(files[n]) for n in names],
            "split": ["test" if i % 2 else "validate" for i in range(len(names))],
            "labels": [[float(i % 2), None] for i in range(len(names))],
        }
    )


def test_decoding_and_rejects(files, tmp_path):
    store = preprocess_images(
        _table(files), tmp_path / "store", size=SIZE, workers=1, dataset="demo", label_names=["x", "y"], progress=False
    )
    ids = store.image_ids
    assert ids == ["png8", "png16", "rgb", "wide", "jpeg", "mono2", "mono1", "rescaled"]
    img = {i: store[k] for k, i in enumerate(ids)}
    g = gradient()
    np.testing.assert_array_equal(img["png8"], g)
    np.testing.assert_array_equal(img["png16"], g)  # 16-bit stretched from min to max = the 8-bit values
    np.testing.assert_array_equal(img["rgb"], g)
    assert (
        np.abs(img["jpeg"].astype(int) - letterbox(gradient(4 * SIZE, 4 * SIZE), SIZE)).mean() < 2
    )  # DCT-scaled decode
    # no window: percentile stretch, close to the 8-bit source; MONOCHROME1 is its inverse
    assert np.abs(img["mono2"].astype(int) - g).max() <= 3
    np.testing.assert_array_equal(img["mono1"], 255 - img["mono2"])
    assert np.abs(img["rescaled"].astype(int) - g).max() <= 1
    # non-square: letterboxed, black bands above and below, original size in the index
    wide = img["wide"]
    assert (wide[:8] == 0).all() and (wide[24:] == 0).all() and (wide[8:24] == 200).all()
    row = store.index.slice(ids.index("wide"), 1).to_pylist()[0]
    assert (row["width"], row["height"]) == (2 * SIZE, SIZE) and row["split"] == "test"

    rejects = {r["image_id"]: r for r in store.rejects().to_pylist()}
    assert set(rejects) == {"truncated", "empty", "nopixels", "missing", "text", "garbage"}
    assert "truncated" in rejects["truncated"]["reason"]
    assert rejects["empty"]["reason"] == "empty file (0 bytes)"
    assert "without pixel data" in rejects["nopixels"]["reason"]
    assert rejects["missing"]["reason"] == "file not found"
    assert "unsupported file type '.txt'" in rejects["text"]["reason"]
    assert rejects["garbage"]["path"] == str(files["garbage"])
    assert store.meta["n_rejects"] == 6 and store.meta["n_images"] == 8 and store.meta["resize"] == "letterbox"
    # labels and splits travel through
    labels = store.labels()
    assert labels.shape == (8, 2) and np.isnan(labels[:, 1]).all()
    assert store.indices("validate").tolist() == [0, 2, 4, 6]


def test_two_workers_match_one(files, tmp_path):
    table = _table(files)
    one = preprocess_images(table, tmp_path / "one", size=24, workers=1, dataset="d", progress=False, shard_size=3)
    two = preprocess_images(table, tmp_path / "two", size=24, workers=2, dataset="d", progress=False, shard_size=3)
    np.testing.assert_array_equal(one.get_batch(range(len(one))), two.get_batch(range(len(two))))
    assert one.index.equals(two.index)
    assert one.rejects().equals(two.rejects())


def test_relative_paths_under_root(files, tmp_path):
    table = pa.table({"image_id": ["a"], "path": ["png8.png"], "report_id": ["r1"]})
    store = preprocess_images(table, tmp_path / "s", size=16, dataset="d", root=tmp_path, progress=False)
    assert store.index.column("path").to_pylist() == ["png8.png"]
    assert store.index.column("report_id").to_pylist() == ["r1"]
    with pytest.raises(ValueError, match="no 'path' column"):
        preprocess_images(pa.table({"image_id": ["a"]}), tmp_path / "t", size=16, dataset="d")


def test_letterbox_geometry_maps_boxes_and_masks():
    geo = letterbox_geometry(200, 100, 50)
    assert (geo.scale, geo.width, geo.height, geo.pad_x, geo.pad_y) == (0.25, 50, 25, 0, 12)
    mask = np.zeros((100, 200), bool)
    mask[40:60, 100:140] = True
    fitted = letterbox(mask, 50, nearest=True)
    assert fitted.dtype == bool
    ys, xs = np.nonzero(fitted)
    # the box (100..140, 40..60) mapped with x' = x * scale + pad
    assert (xs.min(), xs.max() + 1) == (25, 35)
    assert (ys.min(), ys.max() + 1) == (10 + 12, 15 + 12)
    assert box_to_square((0.5, 0.4, 0.7, 0.6), 200, 100, 50) == (0.5, (12 + 10) / 50, 0.7, (12 + 15) / 50)


def test_source_column_types_are_kept(files, tmp_path):
    box = pa.struct(
        [
            ("category", pa.string()),
            ("x0", pa.float64()),
            ("y0", pa.float64()),
            ("x1", pa.float64()),
            ("y1", pa.float64()),
        ]
    )
    table = pa.table(
        {
            "image_id": pa.array(["a", "b"]),
            "path": pa.array([str(files["png8"]), str(files["mono2"])]),
            "report_id": pa.array([None, None], pa.null()),
            "boxes": pa.array(
                [[{"category": "pneumonia", "x0": 0.1, "y0": 0.2, "x1": 0.3, "y1": 0.4}], []], pa.list_(box)
            ),
            "patient": pa.array([7, 8], pa.int16()),
        }
    )
    store = preprocess_images(table, tmp_path / "s", size=16, dataset="rsna", progress=False)
    schema = store.index.schema
    assert schema.field("boxes").type == pa.list_(box)
    assert schema.field("patient").type == pa.int16()
    assert schema.field("report_id").type == pa.string()
    assert store.index.column("boxes").to_pylist()[0][0]["x1"] == 0.3
