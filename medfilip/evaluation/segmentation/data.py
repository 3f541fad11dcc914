"""Images and pneumothorax masks of a SIIM-ACR image store, and the fraction subsets of its train split.

The SIIM reader (medfilip.datasets.readers.read_siim) keeps each image's relative RLE strings and the
pixel size they refer to in the store index (``mask_rle``, ``mask_height``, ``mask_width``); the
store holds the image letterboxed to ``images.size``. A mask is brought to the store's square the
same way (medfilip.images.preprocess.letterbox_geometry) and then, like the image, to the UNet's
``image_size``. Masks are resized *by area*: a pixel is in the mask when at least half of what it
covers is, and a non-empty mask never becomes empty (the pixels it touches most are kept), so an
image's pneumothorax / none status survives every resize.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfilip.names import SPLITS

log = logging.getLogger(__name__)

MASK_COLUMNS = ("mask_rle", "mask_height", "mask_width")


class SegmentationDataError(ValueError):
    """A store that cannot give segmentation data (no masks, no test images); the message names the file."""


class SegmentationSkip(Exception):
    """A documented reason to write skip rows instead of scores (e.g. the store has no train split)."""


# -- masks ------------------------------------------------------------------------------------------
def resize_mask_area(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A bool mask resized to (height, width) by area coverage (>= half), never emptied."""
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    if mask.shape == (height, width):
        return mask.copy()
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    # BOX averages when shrinking; when growing it repeats pixels, which is what we want too
    cover = np.asarray(img.resize((width, height), Image.Resampling.BOX))
    out = cover >= 128
    if mask.any() and not out.any():
        out = cover == cover.max()
    return out


def mask_to_square(mask: np.ndarray, size: int) -> np.ndarray:
    """A source-size bool mask placed in the store's letterboxed square (as its image was)."""
    from medfilip.images.preprocess import letterbox_geometry

    h, w = mask.shape
    geo = letterbox_geometry(w, h, size)
    out = np.zeros((size, size), dtype=bool)
    out[geo.pad_y : geo.pad_y + geo.height, geo.pad_x : geo.pad_x + geo.width] = resize_mask_area(
        mask, geo.width, geo.height
    )
    return out


def require_mask_columns(store) -> Path:
    """The store's index file, after checking that it has the mask columns (SegmentationDataError if not)."""
    index_file = Path(store.root) / "index.parquet"
    missing = [c for c in MASK_COLUMNS if c not in store.index.column_names]
    if missing:
        raise SegmentationDataError(
            f"{index_file}: no mask column(s) {', '.join(missing)} (a segmentation store is a SIIM-ACR store built "
            "by `medfilip preprocess-dataset` from the SIIM reader, which keeps the RLE masks)"
        )
    return index_file


def store_masks(store, rows: np.ndarray, size: int | None = None) -> np.ndarray:
    """bool (len(rows), size, size) pneumothorax masks of the store rows (size: the store's by default)."""
    from medfilip.datasets.readers import siim_mask

    index_file = require_mask_columns(store)
    rows = np.asarray(rows, dtype=np.int64)
    columns = {c: store.index.column(c).take(rows).to_pylist() for c in ("image_id", *MASK_COLUMNS)}
    out_size = int(size or store.size)
    out = np.zeros((rows.size, out_size, out_size), dtype=bool)
    for k in range(rows.size):
        record = {c: columns[c][k] for c in MASK_COLUMNS}
        if record["mask_height"] is None or record["mask_width"] is None:
            raise SegmentationDataError(f"{index_file}: image {columns['image_id'][k]!r} has no mask_height/mask_width")
        try:
            source = siim_mask(record)
        except ValueError as err:
            raise SegmentationDataError(
                f"{index_file}: image {columns['image_id'][k]!r}, field mask_rle: {err}"
            ) from None
        square = mask_to_square(source, store.size)
        out[k] = square if out_size == store.size else resize_mask_area(square, out_size, out_size)
    return out


# -- images -----------------------------------------------------------------------------------------
def prepare_images(images: np.ndarray, size: int, channels: int):
    """uint8 (N, S, S) -> normalised float32 tensor (N, channels, size, size), as the dual encoder's
    own input (grey level / 255, bilinear antialiased resize, ImageNet mean and std of one grey level)."""
    import torch
    import torch.nn.functional as F

    from medfilip.training.model import IMAGE_MEAN, IMAGE_STD

    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.sub_(IMAGE_MEAN).div_(IMAGE_STD)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return x


@dataclass
class SplitData:
    rows: np.ndarray  # store row numbers
    image_ids: list[str]
    images: np.ndarray  # uint8 (N, S, S) at the store's size (for figures)
    masks: np.ndarray  # bool (N, size, size) at the UNet's size

    @property
    def positive(self) -> np.ndarray:
        return self.masks.reshape(len(self.masks), -1).any(axis=1)

    def __len__(self) -> int:
        return int(self.rows.size)


@dataclass
class SegmentationData:
    store_root: Path
    size: int
    splits: dict[str, SplitData]

    def summary(self) -> str:
        return ", ".join(
            f"{name} {len(s)} ({int(s.positive.sum())} with pneumothorax)" for name, s in self.splits.items()
        )


def load_segmentation_data(store_root: str | Path, size: int) -> SegmentationData:
    """The train / validate / test images and masks of a SIIM store at the UNet's ``size``.

    Raises SegmentationDataError for a store without masks or test images, and SegmentationSkip
    (a documented skip) for a store without a train or validate split."""
    from medfilip.images.store import ImageStore

    store = ImageStore.open(store_root)
    index_file = require_mask_columns(store)
    rows = {split: store.indices(split) for split in SPLITS}
    if rows["test"].size == 0:
        raise SegmentationDataError(f"{index_file}: no image in the test split (column split)")
    if rows["train"].size == 0:
        raise SegmentationSkip(
            f"{index_file} has no train split to fine-tune on (set datasets.{store.dataset}.n_train > 0, or give the "
            "real dataset's train partition)"
        )
    if rows["validate"].size == 0:
        raise SegmentationSkip(
            f"{index_file} has no validate split: the checkpoint and threshold are chosen on validate, never on test "
            f"(set datasets.{store.dataset}.n_validate > 0)"
        )
    ids = store.image_ids
    splits = {
        split: SplitData(
            rows=r, image_ids=[ids[i] for i in r], images=store.get_batch(r), masks=store_masks(store, r, size)
        )
        for split, r in rows.items()
    }
    return SegmentationData(Path(store_root), size, splits)


# -- fraction subsets -------------------------------------------------------------------------------
def fraction_subsets(positive: np.ndarray, fractions: list[float], seed: int) -> dict[float, np.ndarray]:
    """Row numbers (ascending, into the train split) of each fraction's images.

    Stratified by pneumothorax / none: a fraction f keeps round(f x positives) positives (at least 1
    when the split has any) and fills the rest of its round(f x n) images (at least 2, so a batch
    can normalise) with negatives. Seeded; each fraction's images contain the smaller fractions'
    (prefixes of one shuffle per class)."""
    positive = np.asarray(positive, dtype=bool)
    n, n_pos = positive.size, int(positive.sum())
    rng = np.random.default_rng([int(seed), 7919])
    pos = rng.permutation(np.flatnonzero(positive))
    neg = rng.permutation(np.flatnonzero(~positive))
    out: dict[float, np.ndarray] = {}
    for f in sorted(fractions):
        size = min(n, max(2, int(round(f * n))))
        take_pos = min(n_pos, size, max(1 if n_pos else 0, int(round(f * n_pos))))
        take_neg = min(neg.size, size - take_pos)
        take_pos = min(n_pos, size - take_neg)  # only negatives short: fill with positives
        out[f] = np.sort(np.concatenate([pos[:take_pos], neg[:take_neg]])).astype(np.int64)
    return out


def example_rows(positive: np.ndarray, areas: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Test rows for the figure, the same for every run: up to k-1 images with pneumothorax (seeded
    among those with the larger masks) and one without."""
    positive = np.asarray(positive, dtype=bool)
    rng = np.random.default_rng([int(seed), 104729])
    pos = np.flatnonzero(positive)
    neg = np.flatnonzero(~positive)
    n_neg = 1 if neg.size and k > 1 else (k if not pos.size else 0)
    n_pos = min(pos.size, k - min(n_neg, neg.size))
    if pos.size:
        # the larger half of the masks: a visible region, chosen without looking at any prediction
        big = pos[np.argsort(-np.asarray(areas)[pos], kind="stable")[: max(n_pos, (pos.size + 1) // 2)]]
        chosen_pos = np.sort(rng.choice(big, size=n_pos, replace=False))
    else:
        chosen_pos = np.empty(0, np.int64)
    chosen_neg = (
        np.sort(rng.choice(neg, size=min(n_neg, neg.size), replace=False)) if neg.size else np.empty(0, np.int64)
    )
    return np.concatenate([chosen_pos, chosen_neg]).astype(np.int64)
