"""Contact sheet of the phantom renderer: every category at mild and severe, next to a normal reference."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from medfilip.io import atomic_path
from medfilip.phantom.appearance import APPEARANCE
from medfilip.phantom.render import Finding, render_phantom
from medfilip.phantom.settings import PhantomConfig

log = logging.getLogger(__name__)

LABEL_HEIGHT = 14
PAIRS_PER_ROW = 8


def gallery_categories() -> list[str]:
    """``normal`` first (the reference), then every category of the appearance table."""
    return ["normal"] + sorted(c for c in APPEARANCE if c != "normal")


def render_gallery(
    out: str | Path,
    *,
    size: int = 160,
    seed: int = 7,
    categories: Sequence[str] | None = None,
    settings: PhantomConfig | None = None,
) -> Path:
    """Write a labelled PNG: for each category a (mild | severe) pair rendered on the same patient."""
    from PIL import Image, ImageDraw

    cats = list(categories or gallery_categories())
    cols = min(PAIRS_PER_ROW, len(cats))
    rows = -(-len(cats) // cols)
    gap = max(size // 16, 4)
    tile_w, tile_h = 2 * size + gap, size + LABEL_HEIGHT + gap
    sheet = Image.new("L", (cols * tile_w, rows * tile_h), 32)
    draw = ImageDraw.Draw(sheet)
    for i, category in enumerate(cats):
        r, c = divmod(i, cols)
        x, y = c * tile_w, r * tile_h
        for k, severity in enumerate(("mild", "severe")):
            image = render_phantom([Finding(category, severity=severity)], size=size, seed=seed, settings=settings)
            sheet.paste(Image.fromarray(image), (x + k * size, y + LABEL_HEIGHT))
        label = category if category == "normal" else f"{category}: mild | severe"
        draw.text((x + 2, y + 1), label, fill=235)
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    log.info("phantom gallery: %d categories -> %s", len(cats), out)
    return out
