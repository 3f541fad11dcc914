"""A tiny SIIM-ACR store built by the tests: train / validate / test splits, RLE masks as the reader keeps them.

Each source image is ``SOURCE_W x SOURCE_H`` (not square, so the letterbox matters), a noisy grey
background with, on images with pneumothorax, a darker ellipse where the mask is (as on a
radiograph, air is dark). It is letterboxed into the store exactly as preprocessing does
(medfilip.images.preprocess.letterbox) and the mask goes into the index as a relative SIIM RLE at
the source size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfilip.datasets.rle import rle_encode
from medfilip.images.preprocess import letterbox
from medfilip.images.store import ImageStoreWriter

SOURCE_W, SOURCE_H = 96, 80


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def source_case(rng: np.random.Generator, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    image = np.clip(rng.normal(150, 12, size=(SOURCE_H, SOURCE_W)), 0, 255)
    mask = np.zeros((SOURCE_H, SOURCE_W), bool)
    if positive:
        mask = ellipse(
            SOURCE_H, SOURCE_W, rng.uniform(20, 60), rng.uniform(20, 76), rng.uniform(8, 16), rng.uniform(6, 14)
        )
        image[mask] -= 110
    return np.clip(image, 0, 255).astype(np.uint8), mask


def build_siim_store(
    root: Path,
    *,
    n_train: int = 24,
    n_validate: int = 12,
    n_test: int = 16,
    size: int = 64,
    seed: int = 0,
    with_masks: bool = True,
    positive_every: int = 2,
) -> Path:
    """Write the store at ``root`` and return it (half the images with pneumothorax by default)."""
    rng = np.random.default_rng(seed)
    splits = ["train"] * n_train + ["validate"] * n_validate + ["test"] * n_test
    with ImageStoreWriter(root, size, "siim", label_names=["pneumothorax", "normal"]) as writer:
        for i, split in enumerate(splits):
            positive = i % positive_every == 0
            image, mask = source_case(rng, positive)
            columns = {
                "path": f"{i}.dcm",
                "view": "PA",
                "split": split,
                "labels": [float(positive), float(not positive)],
                "width": SOURCE_W,
                "height": SOURCE_H,
            }
            if with_masks:
                columns.update(
                    mask_rle=[rle_encode(mask)] if positive else [], mask_height=SOURCE_H, mask_width=SOURCE_W
                )
            writer.add(f"img{i:03d}", letterbox(image, size), **columns)
    return root
