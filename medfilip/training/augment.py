"""Augmentation on the device: the DataLoader workers only read uint8 images and draw parameters.

``medfilip.training.data.augment_image`` warps each image in float32 on the CPU (about 3.5 ms per
448-px image per core: one worker feeds ~280 images/s, a fraction of what one H100 trains).
Here the workers draw the same random parameters (same distribution: a square random resized
crop of area 0.8-1 and a rotation of +-5 degrees, border padding) and the training step warps the
whole uint8 batch at once on the GPU, after the (4x smaller than float) uint8 host-to-device copy:

    params = draw_parameters(rng)                    # in the worker, per image: 4 floats
    images = augment_batch(batch.images.to(device, non_blocking=True), batch.params.to(device))

``augment_batch`` gives the pixels of ``augment_image`` for the same draws (tested), so the two
paths train on the same augmentation. ``benchmarks/data_path.py`` prints the CPU cost per image
of both.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def draw_parameters(rng: np.random.Generator) -> torch.Tensor:
    """(scale*cos, scale*sin, shift_x, shift_y) drawn as ``augment_image`` draws them (same order)."""
    scale = math.sqrt(rng.uniform(0.8, 1.0))
    angle = math.radians(rng.uniform(-5.0, 5.0))
    shift = (1.0 - scale) * rng.uniform(-1.0, 1.0, size=2)
    return torch.tensor([math.cos(angle) * scale, math.sin(angle) * scale, shift[0], shift[1]], dtype=torch.float32)


def identity_parameters(n: int) -> torch.Tensor:
    """Parameters that leave images as they are (no augmentation)."""
    return torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)


def augment_batch(images: torch.Tensor, params: torch.Tensor, *, as_uint8: bool = True) -> torch.Tensor:
    """Warp a uint8 batch (N, S, S) with per-image parameters (N, 4), on the batch's device.

    Returns uint8 (N, S, S) rounded like ``augment_image`` (``as_uint8``), or the float32 warp
    (N, 1, S, S) in 0-255 to normalise next without a round trip through uint8.
    """
    if images.dim() != 3 or params.shape != (images.shape[0], 4):
        raise ValueError(
            f"augment_batch: images {tuple(images.shape)} and params {tuple(params.shape)}; "
            "expected (N, S, S) and (N, 4)"
        )
    n, size = images.shape[0], images.shape[-1]
    p = params.to(images.device, torch.float32)
    theta = torch.stack(
        [torch.stack([p[:, 0], -p[:, 1], p[:, 2]], dim=1), torch.stack([p[:, 1], p[:, 0], p[:, 3]], dim=1)], dim=1
    )
    grid = torch.nn.functional.affine_grid(theta, [n, 1, size, size], align_corners=False)
    out = torch.nn.functional.grid_sample(
        images[:, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    if not as_uint8:
        return out
    return out[:, 0].round_().clamp_(0, 255).to(torch.uint8)
