"""Decode every image once, fit it to a square uint8 array and write an image store.

Decoding by extension:

- ``.dcm``: pydicom; modality LUT (RescaleSlope / RescaleIntercept), then the VOI LUT or the
  first window (WindowCenter / WindowWidth) when the file has one, else a percentile window
  (0.5–99.5 %) over the pixel values; MONOCHROME1 is inverted so bone is always bright.
- ``.png`` / ``.jpg`` / ``.jpeg``: PIL; 8-bit grayscale as is, 16-bit grayscale (and 32-bit
  integer) stretched from its minimum to its maximum, colour converted to luminance. JPEGs are
  decoded at reduced scale (libjpeg DCT scaling) when they are much larger than the target.

Square fitting is a letterbox: the whole image is scaled so its longer side is ``size`` and
centred on a black square. We keep the whole image rather than centre-crop because chest
findings sit at the edges (apices, costophrenic angles, lateral pleura) and a crop of a
portrait/landscape film would cut them; aspect-preserving scaling also keeps proportions such
as the cardiothoracic ratio that cardiomegaly is read from. Most radiographs are near square,
so the padding is small. ``letterbox_geometry`` gives the mapping for boxes and masks.

Every refusal of the decoder (missing, empty, a folder, unknown type, not an image, truncated,
corrupt, too large, DICOM without pixel data or with unusable values, pydicom absent) raises
:class:`ImageDecodeError`, whose message is one line: "<path>: <reason>". The stage lists such
files in the store's rejects with the reason and goes on; the library (``medfilip.zero_shot``,
``Preprocess.batch``, ``medfilip predict``) answers the other files and reports each refusal.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the decoders are the library's too (medfilip.pretrained): no pyarrow at import
    import pyarrow as pa

    from medfilip.images.store import ImageStore

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
PERCENTILES = (0.5, 99.5)


class ImageDecodeError(ValueError):
    """A file the decoder refuses. ``reason`` is why, on one line (the store's reject reason);
    ``path`` names the file (:func:`decode_image` sets it); ``str(err)`` is "<path>: <reason>"."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = " ".join(str(reason).split()) or "cannot decode"
        self.path = None if path is None else str(path)
        super().__init__(self.reason, self.path)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path is not None else self.reason


@dataclass(frozen=True)
class LetterboxGeometry:
    """How an original (width, height) image sits in the size×size square: x' = x * scale + pad_x."""

    scale: float
    width: int  # scaled width inside the square
    height: int
    pad_x: int
    pad_y: int


def letterbox_geometry(width: int, height: int, size: int) -> LetterboxGeometry:
    scale = size / max(width, height)
    w = max(1, min(size, round(width * scale)))
    h = max(1, min(size, round(height * scale)))
    return LetterboxGeometry(scale, w, h, (size - w) // 2, (size - h) // 2)


def box_to_square(
    box: tuple[float, float, float, float], width: int, height: int, size: int
) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1) in [0, 1] of the source image → [0, 1] of the letterboxed square.

    Stores keep boxes as their readers give them (fractions of the source image); the index's
    ``width`` and ``height`` columns are the source size to pass here.
    """
    geo = letterbox_geometry(width, height, size)
    x0, y0, x1, y1 = box
    return (
        (geo.pad_x + x0 * geo.width) / size,
        (geo.pad_y + y0 * geo.height) / size,
        (geo.pad_x + x1 * geo.width) / size,
        (geo.pad_y + y1 * geo.height) / size,
    )


def letterbox(image: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """A 2-D uint8 (or bool) array fitted into a size×size black square (nearest for masks)."""
    from PIL import Image

    is_bool = image.dtype == bool
    src = image.astype(np.uint8) * 255 if is_bool else image
    if src.dtype != np.uint8 or src.ndim != 2:
        raise ValueError(f"letterbox needs a 2-D uint8 or bool array, got {image.dtype} {image.shape}")
    geo = letterbox_geometry(src.shape[1], src.shape[0], size)
    pil = Image.fromarray(src, mode="L")
    if (geo.width, geo.height) != pil.size:
        resample = Image.Resampling.NEAREST if nearest or is_bool else Image.Resampling.LANCZOS
        pil = pil.resize((geo.width, geo.height), resample=resample, reducing_gap=None if nearest else 3.0)
    out = np.zeros((size, size), dtype=np.uint8)
    out[geo.pad_y : geo.pad_y + geo.height, geo.pad_x : geo.pad_x + geo.width] = np.asarray(pil)
    return out > 127 if is_bool else out


def to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of [lo, hi] onto 0..255 with clipping (a constant image becomes black)."""
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(hi - lo) or hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# -- decoders ---------------------------------------------------------------------------
def decode_dicom(path: Path) -> np.ndarray:
    """A DICOM file as uint8 (H, W), display-ready (bright = dense)."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ImageDecodeError("reading DICOM needs pydicom (pip install pydicom)") from None

    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as err:
        raise ImageDecodeError(f"unreadable DICOM: {err}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if ds.preamble is None:  # no 128-byte preamble + "DICM": what force=True read is not DICOM
            raise ImageDecodeError("not a DICOM file (no DICM header, no pixel data)")
        raise ImageDecodeError("DICOM without pixel data (no PixelData element)")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for bad or unsupported pixel data
        raise ImageDecodeError(f"corrupt or undecodable DICOM pixel data: {type(err).__name__}: {err}") from None
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples > 1:  # colour DICOM (rare for CXR): luminance
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if pixels.ndim != 2:
        raise ImageDecodeError(f"DICOM pixel array has shape {pixels.shape}, expected one 2-D frame")
    try:
        return _dicom_display(pixels, ds, samples)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:  # malformed LUT/window/rescale
        raise ImageDecodeError(f"unusable DICOM display values: {type(err).__name__}: {err}") from None


def _dicom_display(pixels: np.ndarray, ds: Any, samples: int) -> np.ndarray:
    """Modality LUT, then VOI LUT / window / percentiles, MONOCHROME1 inverted: uint8 (H, W)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds) if samples == 1 else pixels
    if "VOILUTSequence" in ds:
        values = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float32)
        image = to_uint8(values, float(values.min()), float(values.max()))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        image = to_uint8(values, center - width / 2.0, center + width / 2.0)
    else:
        lo, hi = np.percentile(values, PERCENTILES)
        image = to_uint8(values, float(lo), float(hi))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = 255 - image
    return image


def _first(value: Any) -> float:
    if isinstance(value, (str, bytes)):
        return float(value)
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def decode_pil(path: Path, size: int | None = None) -> np.ndarray:
    """A PNG/JPEG file as uint8 (H, W) grayscale; ``size`` lets JPEG decode at a reduced scale."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                geo = letterbox_geometry(img.width, img.height, size)
                img.draft("L", (geo.width, geo.height))
            img.load()
            return _pil_to_gray(img)
    except UnidentifiedImageError:
        raise ImageDecodeError("not a readable image (unidentified format)") from None
    except Image.DecompressionBombError as err:  # over 2 × PIL.Image.MAX_IMAGE_PIXELS
        raise ImageDecodeError(f"image too large to decode: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated files raise OSError on load()
        raise ImageDecodeError(f"truncated or corrupt image: {err}") from None


def _pil_to_gray(img: Any) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img)
        if values.dtype.byteorder not in ("=", "|"):
            values = values.astype(values.dtype.newbyteorder("="))
        return to_uint8(values, float(values.min()), float(values.max()))
    if mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA" if mode != "LA" else "LA")
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Any supported file as uint8 (H, W). Every refusal raises :class:`ImageDecodeError` naming
    ``path`` and the reason; no other exception escapes but KeyboardInterrupt and the like."""
    try:
        return _decode(Path(path), size)
    except ImageDecodeError as err:
        raise ImageDecodeError(err.reason, path) from None
    except MemoryError:
        raise ImageDecodeError("too large to decode (out of memory)", path) from None
    except OSError as err:  # permission denied, I/O error, a name too long ...
        raise ImageDecodeError(f"cannot read the file: {err.strerror or err}", path) from None
    except Exception as err:  # noqa: BLE001 - a decoder bug on one file is that file's error
        raise ImageDecodeError(f"cannot decode: {type(err).__name__}: {err}", path) from err


def _decode(path: Path, size: int | None) -> np.ndarray:
    if not path.exists():
        raise ImageDecodeError("file not found")
    if path.is_dir():
        raise ImageDecodeError("a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return decode_dicom(path)
    if suffix in PIL_SUFFIXES:
        return decode_pil(path, size)
    raise ImageDecodeError(f"unsupported file type {suffix or '(no suffix)'!r} (expected .dcm, .png, .jpg, .jpeg)")


def load_square(path: str | Path, size: int) -> tuple[np.ndarray, int, int]:
    """Decode and letterbox one file: (uint8 (size, size), original width, original height)."""
    image = decode_image(path, size)
    height, width = image.shape
    return letterbox(image, size), width, height


def _load_task(task: tuple[int, str, int]) -> tuple[int, np.ndarray | None, int, int, str | None]:
    i, path, size = task
    if not path:
        return i, None, 0, 0, "no path given"
    try:
        square, width, height = load_square(path, size)
        return i, square, width, height, None
    except ImageDecodeError as err:
        return i, None, 0, 0, err.reason
    except Exception as err:  # noqa: BLE001 - a decoder bug on one file must not stop the stage
        return i, None, 0, 0, f"{type(err).__name__}: {err}"


# -- the stage --------------------------------------------------------------------------
def preprocess_images(
    table: pa.Table,
    out_dir: str | Path,
    *,
    size: int,
    workers: int = 1,
    dataset: str,
    label_names: Sequence[str] | None = None,
    root: str | Path | None = None,
    shard_size: int = 2048,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> ImageStore:
    """Decode every file of ``table`` (image_id, path + any index columns) into a store at ``out_dir``.

    Relative paths are taken under ``root`` when given; the index keeps the path as given. Every
    other column of ``table`` (report_id, view, split, labels, findings, boxes ...) is copied to
    the index; ``width`` and ``height`` (original pixels) are added for mapping boxes and masks
    with ``letterbox_geometry``. Output order is the table's order, whatever ``workers`` is.
    """
    import pyarrow as pa

    from medfilip.images.store import ImageStore, ImageStoreWriter
    from medfilip.io import progress_bar

    for column in ("image_id", "path"):
        if column not in table.column_names:
            raise ValueError(f"preprocess_images: the image table has no {column!r} column (has {table.column_names})")
    rows = table.to_pylist()
    root_dir = Path(root) if root is not None else None

    def resolve(p: str) -> str:
        path = Path(p)
        return str(root_dir / path if root_dir is not None and not path.is_absolute() else path)

    tasks = [(i, resolve(row["path"]) if row["path"] else "", size) for i, row in enumerate(rows)]
    workers = max(1, min(int(workers), len(tasks) or 1))
    started = time.perf_counter()
    reasons: Counter[str] = Counter()
    # the index keeps the source table's column types (labels and findings get the store's own)
    column_types = {
        f.name: f.type for f in table.schema if f.name not in ("labels", "findings") and f.type != pa.null()
    }
    with ImageStoreWriter(
        out_dir, size, dataset, shard_size=shard_size, label_names=label_names, column_types=column_types
    ) as writer:
        results = _run(tasks, workers)
        for i, square, width, height, reason in progress_bar(
            results, total=len(tasks), desc=f"images {dataset}", unit="img", disable=not progress, mininterval=2.0
        ):
            row = rows[i]
            if square is None:
                writer.add_reject(row["path"], row["image_id"], reason or "unknown error")
                reasons[(reason or "").split(":")[0]] += 1
                if reasons[(reason or "").split(":")[0]] <= 3:
                    log.warning("reject %s (%s): %s", row["path"], row["image_id"], reason)
                continue
            columns = {k: v for k, v in row.items() if k != "image_id"}
            columns.update(width=width, height=height)
            writer.add(row["image_id"], square, **columns)
        seconds = time.perf_counter() - started
        meta = {
            "resize": "letterbox",
            "dicom_percentiles": list(PERCENTILES),
            "workers": workers,
            "seconds": round(seconds, 3),
            **(extra_meta or {}),
        }
        writer.close(meta)
    if reasons:
        log.warning("%s: %d file(s) rejected: %s", out_dir, sum(reasons.values()), dict(reasons.most_common()))
    n = len(tasks) - sum(reasons.values())
    log.info(
        "%s: %d images in %.1fs (%.1f images/s, %d worker(s))", out_dir, n, seconds, n / max(seconds, 1e-9), workers
    )
    return ImageStore.open(out_dir)


def _run(tasks: list[tuple[int, str, int]], workers: int):
    """Decoded tasks in order: in this process for one worker, else through a process pool."""
    if workers == 1:
        yield from map(_load_task, tasks)
        return
    chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    with mp.get_context().Pool(workers) as pool:
        yield from pool.imap(_load_task, tasks, chunksize=chunksize)
