"""Dice and IoU of binary masks, per image, and the two Dice definitions in use for SIIM-ACR.

Per image (pred, truth boolean masks of the same shape):

    Dice = 2 |P & T| / (|P| + |T|),   IoU = |P & T| / |P | T|,   both = 1 when P and T are empty.

Aggregates over the test images:

- ``dice`` (the Kaggle SIIM-ACR metric, and what the official MedFILIP/MedKLIP-style code reports):
  the mean of per-image Dice over *every* image, so an empty prediction on an image without
  pneumothorax scores 1 and any prediction there scores 0.
- ``dice_pos``: the mean of per-image Dice over the images *with* pneumothorax only (what papers
  that report "Dice on positive cases" use); false positives on normal images do not count.

IoU is aggregated the same two ways (``iou``, ``iou_pos``).
"""

from __future__ import annotations

import numpy as np


def _flat(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != bool:
        raise TypeError(f"masks must be boolean, got {masks.dtype}")
    if masks.ndim < 2:
        raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {masks.shape}")
    return masks.reshape(1, -1) if masks.ndim == 2 else masks.reshape(masks.shape[0], -1)


def _counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, t = _flat(pred), _flat(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {np.shape(pred)} and truth {np.shape(truth)} differ in shape")
    inter = np.count_nonzero(p & t, axis=1)
    return inter, np.count_nonzero(p, axis=1), np.count_nonzero(t, axis=1)


def dice_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each image, float64 (N,); an empty prediction on an empty truth is 1."""
    inter, n_pred, n_truth = _counts(pred, truth)
    total = n_pred + n_truth
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def iou_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU (Jaccard) of each image, float64 (N,); an empty prediction on an empty truth is 1."""
    inter, n_pred, n_truth = _counts(pred, truth)
    union = n_pred + n_truth - inter
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def mean_over_images(values: np.ndarray) -> float:
    """The Kaggle aggregate: the mean over every image (NaN for no image)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


def mean_over_positives(values: np.ndarray, positive: np.ndarray) -> float:
    """The mean over the images whose truth is not empty (NaN when there is none)."""
    values = np.asarray(values, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    return float(values[positive].mean()) if positive.any() else float("nan")
