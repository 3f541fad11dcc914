"""`medfilip phantom-gallery` writes a labelled PNG contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medfilip.pipeline.cli import main


def test_gallery_cli_writes_a_png(tmp_path: Path):
    out = tmp_path / "figures" / "phantom_gallery.png"
    rc = main(
        ["phantom-gallery", "--out", str(out), "--size", "48", "--categories", "normal", "pneumothorax", "cardiomegaly"]
    )
    assert rc == 0
    image = np.asarray(Image.open(out))
    assert image.ndim == 2 and image.dtype == np.uint8
    assert image.shape[1] >= 3 * 2 * 48 and image.shape[0] >= 48  # three (mild | severe) pairs in a row
    assert image.std() > 20  # images, not a blank sheet
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary file
