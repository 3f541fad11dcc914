from __future__ import annotations

import numpy as np
import pytest
import torch

from medfilip.training.augment import augment_batch, draw_parameters, identity_parameters
from medfilip.training.data import augment_image


def test_batched_device_warp_gives_the_pixels_of_the_cpu_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 64, 64), dtype=np.uint8)
    images[:, 20:40, 10:30] = 255  # structure, so a wrong warp shows
    seeds = [np.random.default_rng((7, i)) for i in range(6)]
    want = np.stack([augment_image(im, np.random.default_rng((7, i))) for i, im in enumerate(images)])
    params = torch.stack([draw_parameters(r) for r in seeds])
    got = augment_batch(torch.from_numpy(images), params).numpy()
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float rounding only
    # and it is a real warp, not the identity
    assert np.abs(got.astype(int) - images.astype(int)).mean() > 5


def test_identity_parameters_leave_images_alone_and_shapes_are_checked():
    images = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(augment_batch(images, identity_parameters(3)), images)
    out = augment_batch(images, identity_parameters(3), as_uint8=False)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="expected"):
        augment_batch(images, identity_parameters(2))
