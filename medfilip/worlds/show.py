"""``medfilip world --show``: the prototypes and a gallery of one world in one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfilip.phantom.primitives import PRIMITIVES, Placement, render_primitive
from medfilip.worlds.world import CATEGORIES, FAMILIES, SEVERITIES, World, role, upper


def show_world(world: World, out: str | Path, *, patient: int = 7, size: int | None = None) -> Path:
    """Left: each category's prototype (primitive values) and the visual-vs-text distances with the
    Mantel r; right: every category at mild | moderate | severe on the same patient (right lower zone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = size or max(world.cfg.size, 64)
    fig = plt.figure(figsize=(15, 8.5), layout="constrained")  # room for the long category names
    grid = fig.add_gridspec(4, 5, width_ratios=[1.6, 1, 1, 1, 1])
    ax = fig.add_subplot(grid[0:2, 0])
    protos = np.stack([world.prototype(c) for c in CATEGORIES])
    ax.imshow(protos, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=30, fontsize=7)
    ax.set_yticks(range(len(CATEGORIES)), [f"{c} ({role(c)})" for c in CATEGORIES], fontsize=7)
    ax.set_title(f"prototypes, ρ target {world.rho:g}, gain {world.gain:g}", fontsize=9)
    ax2 = fig.add_subplot(grid[2:4, 0])
    ax2.scatter(upper(world.text.category_distance), upper(world.category_visual()), s=6)
    ax2.set_xlabel("text distance (1 - calibrated E_sim cosine)", fontsize=7)
    ax2.set_ylabel("visual distance (RMS pixel, rendered)", fontsize=7)
    ax2.set_title(f"Mantel r: search {world.rho_search:.3f}, measured {world.rho_measured:.3f}", fontsize=8)
    ax2.tick_params(labelsize=6)
    for col, (family, members) in enumerate(FAMILIES.items()):
        for row, category in enumerate(members):
            strip = np.hstack(
                [
                    render_primitive(
                        world.prototype(category),
                        Placement("lower", "right", s),
                        size=size,
                        seed=patient,
                        gain=world.gain,
                    )
                    for s in SEVERITIES
                ]
            )
            a = fig.add_subplot(grid[row, 1 + col])
            a.imshow(strip, cmap="gray", vmin=0, vmax=255)
            a.set_axis_off()
            a.set_title(f"{family}: {category}", fontsize=7)
    fig.suptitle("controlled world: mild | moderate | severe, right lower zone, one patient", fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
