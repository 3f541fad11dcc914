"""Preprocessing throughput: decode + letterbox + write the uint8 store, per file format and worker count.

Generates, in a temporary folder, files the size of the real datasets' images
(a smooth chest-like ramp plus noise, so compressed sizes are realistic):

  * PNG 8-bit   1024 x 1024   (ChestX-ray14 / IU-Xray PNGs)
  * JPEG        2544 x 3056   (MIMIC-CXR-JPG; decoded at reduced DCT scale)
  * DICOM 12-bit 2048 x 2048  (RSNA, VinBigData, SIIM; uncompressed, with a window)

and prints, for each format and 1 and 2 workers, images/s, MB read and MB written
(array shards + index) at the target size (448 px, the paper's).

    python benchmarks/preprocess.py [--n 48] [--size 448] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from medfilip.images.preprocess import preprocess_images

FORMATS = {"png": (1024, 1024), "jpeg": (3056, 2544), "dicom": (2048, 2048)}


def chest_like(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """0..1 float image: bright mediastinum, dark lungs, noise (compresses like a radiograph)."""
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    lungs = np.exp(-(((np.abs(x) - 0.45) / 0.25) ** 2) - ((y + 0.05) / 0.6) ** 2)
    body = 0.75 - 0.55 * lungs + 0.1 * y
    return np.clip(body + rng.normal(0, 0.02, (h, w)).astype(np.float32), 0, 1)


def write_dicom(path: Path, pixels: np.ndarray) -> None:
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
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = np.rint(pixels * 4095).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def generate(fmt: str, n: int, folder: Path, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    h, w = FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    base = [chest_like(h, w, rng) for _ in range(4)]  # a few distinct images, reused: generation is not the benchmark
    for i in range(n):
        img = base[i % len(base)]
        if fmt == "dicom":
            path = folder / f"{i:05d}.dcm"
            write_dicom(path, img)
        else:
            path = folder / f"{i:05d}.{'png' if fmt == 'png' else 'jpg'}"
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(
                path, **({"quality": 90} if fmt == "jpeg" else {})
            )
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="files per format")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    print(f"{'format':<7} {'source px':>11} {'workers':>7} {'images/s':>9} {'MB read':>8} {'MB written':>10} {'s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for fmt in args.formats:
            paths = generate(fmt, args.n, tmp / fmt)
            mb_read = sum(p.stat().st_size for p in paths) / 1e6
            table = pa.table({"image_id": [p.stem for p in paths], "path": [str(p) for p in paths]})
            for workers in args.workers:
                out = tmp / f"store-{fmt}-{workers}"
                t0 = time.perf_counter()
                store = preprocess_images(table, out, size=args.size, workers=workers, dataset=fmt, progress=False)
                seconds = time.perf_counter() - t0
                assert len(store) == args.n, store.rejects().to_pylist()[:3]
                mb_written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
                h, w = FORMATS[fmt]
                print(
                    f"{fmt:<7} {f'{w}x{h}':>11} {workers:>7} {args.n / seconds:>9.1f} {mb_read:>8.1f} {mb_written:>10.1f} {seconds:>6.2f}"
                )


if __name__ == "__main__":
    main()
