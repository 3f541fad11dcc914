"""How far phantom radiographs are from real ones, measured the same way on both.

Every statistic is computed on uint8 images of one side (the image stores: both preprocessed to
images.size by the same code) or on boolean lung masks:

- intensity: the grey-level histogram (mean over images), per-image mean and standard deviation, and
  the earth mover's distance between the two mean histograms (in grey levels);
- texture: the radially averaged power spectrum of each mean-subtracted, Hann-windowed image (mean
  of log10 power over images) and its log-log slope between 0.02 and 0.35 cycles/pixel (natural
  images and radiographs fall near -2 to -3; a smooth render falls faster);
- anatomy, from lung masks (the 20 real ones of ieee8023; the phantom's own lung mask for phantoms):
  lung-field share of the image, lung height and width (fractions of the image side), and a
  cardiothoracic-ratio proxy: the widest gap between the two lungs 50-80 % of the way down the lung
  fields (where the heart sits; rows where a dome has cut a lung below 40 % of its widest are left
  out) over the widest extent of both lungs. The phantom's geometric
  cardiothoracic ratio (its heart ellipse) is reported beside the proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HIST_BINS = 64
SLOPE_BAND = (0.02, 0.35)


# -- intensity --------------------------------------------------------------------------------
def intensity_histogram(images: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """(bins,) mean over images of each image's grey-level density over 0..255 (sums to 1)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"expected a (N, H, W) stack of images, got shape {images.shape}")
    edges = np.linspace(0, 256, bins + 1)
    hists = np.stack([np.histogram(im, bins=edges)[0] / im.size for im in images])
    return hists.mean(axis=0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two histograms over 0..255, in grey levels."""
    a = np.asarray(a, float) / np.sum(a)
    b = np.asarray(b, float) / np.sum(b)
    width = 256.0 / a.size
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum() * width)


# -- power spectrum ---------------------------------------------------------------------------
def radial_power_spectrum(images: np.ndarray, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles/pixel, mean log10 power) of square images, radially averaged."""
    images = np.asarray(images, np.float64)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square (N, S, S) images, got shape {images.shape}")
    side = images.shape[1]
    n_bins = n_bins or side // 2
    window = np.outer(np.hanning(side), np.hanning(side))
    f = np.fft.fftfreq(side)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    edges = np.linspace(0, 0.5, n_bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    inside = (which >= 0) & (which < n_bins)
    counts = np.bincount(which[inside], minlength=n_bins)
    logs = []
    for im in images:
        x = (im - im.mean()) * window
        power = np.abs(np.fft.fft2(x)) ** 2
        sums = np.bincount(which[inside], weights=power.ravel()[inside], minlength=n_bins)
        logs.append(np.log10(sums / np.maximum(counts, 1) + 1e-12))
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, np.mean(logs, axis=0)


def spectral_slope(freqs: np.ndarray, log_power: np.ndarray, band: tuple[float, float] = SLOPE_BAND) -> float:
    """Least-squares slope of log10 power against log10 frequency within ``band``."""
    keep = (freqs >= band[0]) & (freqs <= band[1])
    if keep.sum() < 2:
        raise ValueError(f"fewer than 2 frequencies in {band}")
    return float(np.polyfit(np.log10(freqs[keep]), log_power[keep], 1)[0])


# -- lung-mask geometry -----------------------------------------------------------------------
@dataclass(frozen=True)
class LungShape:
    area: float  # lung-field pixels / image pixels
    height: float  # lung-field height / image height
    width: float  # lung-field width (both lungs) / image width
    ctr_proxy: float  # widest inter-lung gap 50-80 % down the lung fields / lung-field width


def lung_shape(mask: np.ndarray) -> LungShape:
    """Geometry of a boolean (H, W) lung mask holding both lungs."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError("lung mask is empty or not 2-D")
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom = rows[0], rows[-1]
    left, right = cols[0], cols[-1]
    width = right - left + 1
    mid = (left + right) / 2
    band = range(int(top + 0.5 * (bottom - top)), int(top + 0.8 * (bottom - top)) + 1)
    left_w = np.array([(mask[y, : int(mid)]).sum() for y in range(h)])
    right_w = np.array([(mask[y, int(mid) :]).sum() for y in range(h)])
    gaps = []
    # the heart's band: 50-80 % of the way down the lung fields, rows where both lungs are still at least
    # 40 % of their widest (lower down a dome has cut one lung to its costophrenic tip)
    for y in band:
        if left_w[y] < 0.4 * left_w.max() or right_w[y] < 0.4 * right_w.max():
            continue
        xs = np.flatnonzero(mask[y])
        lefts, rights = xs[xs < mid], xs[xs >= mid]
        if lefts.size and rights.size:
            gaps.append(rights.min() - lefts.max() - 1)
    return LungShape(
        area=float(mask.mean()),
        height=float((bottom - top + 1) / h),
        width=float(width / w),
        ctr_proxy=float(max(gaps) / width) if gaps else float("nan"),
    )


def phantom_masks(n: int, size: int, settings=None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``n`` phantom patients (the renderer's own anatomy sampler) at ``size``: (hemithorax mask: the
    lung fields with the lung behind the heart, as the v7labs masks of ieee8023 draw them; lung mask:
    the lung fields less heart and mediastinum; the anatomy's geometric cardiothoracic ratio)."""
    from medfilip.phantom.anatomy import Scene, sample_anatomy

    out = []
    for i in range(n):
        anatomy = sample_anatomy(seed * 100_003 + i, settings)
        scene = Scene(anatomy, size)
        hemithorax = sum(scene.hemithorax.values()) > 0.5
        out.append((hemithorax, scene.lung_total > 0.5, float(anatomy.cardiothoracic_ratio)))
    return out


def read_mask(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


# -- the comparison ---------------------------------------------------------------------------
@dataclass
class ImageStats:
    name: str
    n_images: int
    histogram: np.ndarray
    mean: np.ndarray  # per image
    std: np.ndarray  # per image
    freqs: np.ndarray
    log_power: np.ndarray

    @property
    def slope(self) -> float:
        return spectral_slope(self.freqs, self.log_power)


def image_stats(name: str, images: np.ndarray) -> ImageStats:
    images = np.asarray(images)
    freqs, power = radial_power_spectrum(images)
    flat = images.reshape(len(images), -1).astype(np.float64)
    return ImageStats(name, len(images), intensity_histogram(images), flat.mean(1), flat.std(1), freqs, power)


def _summary(values: Sequence[float]) -> str:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v.size else "n/a"


def gap_rows(
    pairs: Sequence[tuple[ImageStats, ImageStats]],
    real_shapes: Sequence[LungShape],
    phantom_shapes: Sequence[LungShape],
    phantom_lung_shapes: Sequence[LungShape],
    phantom_ctr: Sequence[float],
) -> list[dict]:
    """The table: one row per statistic, phantom and real side by side (mean ± sd over images).
    ``phantom_shapes``: hemithorax masks (the real masks' convention); ``phantom_lung_shapes``: the
    phantom's lungs less the heart, whose proxy is checked against its geometric ratio."""
    rows = []
    for phantom, real in pairs:
        where = f"{phantom.name} vs {real.name}"
        rows += [
            {
                "statistic": "intensity histogram: earth mover's distance (grey levels)",
                "sets": where,
                "phantom": "",
                "real": "",
                "gap": round(histogram_distance(phantom.histogram, real.histogram), 2),
                "n_phantom": phantom.n_images,
                "n_real": real.n_images,
            },
            {
                "statistic": "image mean grey level",
                "sets": where,
                "phantom": _summary(phantom.mean),
                "real": _summary(real.mean),
                "gap": round(float(np.mean(phantom.mean) - np.mean(real.mean)), 2),
                "n_phantom": phantom.n_images,
                "n_real": real.n_images,
            },
            {
                "statistic": "image grey-level sd (contrast)",
                "sets": where,
                "phantom": _summary(phantom.std),
                "real": _summary(real.std),
                "gap": round(float(np.mean(phantom.std) - np.mean(real.std)), 2),
                "n_phantom": phantom.n_images,
                "n_real": real.n_images,
            },
            {
                "statistic": f"power-spectrum slope ({SLOPE_BAND[0]}-{SLOPE_BAND[1]} cycles/px)",
                "sets": where,
                "phantom": round(phantom.slope, 3),
                "real": round(real.slope, 3),
                "gap": round(phantom.slope - real.slope, 3),
                "n_phantom": phantom.n_images,
                "n_real": real.n_images,
            },
            {
                "statistic": "high-frequency power (0.25-0.5 cycles/px, mean log10, vs real)",
                "sets": where,
                "phantom": "",
                "real": "",
                "gap": round(float(np.mean((phantom.log_power - real.log_power)[phantom.freqs >= 0.25])), 3),
                "n_phantom": phantom.n_images,
                "n_real": real.n_images,
            },
        ]
    for field, label in (
        ("area", "lung-field share of the image"),
        ("height", "lung-field height / image height"),
        ("width", "lung-field width / image width"),
        ("ctr_proxy", "widest inter-lung gap 50-80 % down / lung width (hemithorax masks: mediastinum)"),
    ):
        p = [getattr(s, field) for s in phantom_shapes]
        r = [getattr(s, field) for s in real_shapes]
        rows.append(
            {
                "statistic": label,
                "sets": "phantom hemithorax vs ieee8023 lung masks",
                "phantom": _summary(p),
                "real": _summary(r),
                "gap": round(float(np.nanmean(p) - np.nanmean(r)), 3),
                "n_phantom": len(p),
                "n_real": len(r),
            }
        )
    rows += [
        {
            "statistic": "phantom lungs less the heart: CTR proxy (same measure)",
            "sets": "phantom anatomy",
            "phantom": _summary([s.ctr_proxy for s in phantom_lung_shapes]),
            "real": "",
            "gap": "",
            "n_phantom": len(phantom_lung_shapes),
            "n_real": 0,
        },
        {
            "statistic": "phantom geometric cardiothoracic ratio (heart ellipse)",
            "sets": "phantom anatomy",
            "phantom": _summary(phantom_ctr),
            "real": "",
            "gap": "",
            "n_phantom": len(phantom_ctr),
            "n_real": 0,
        },
    ]
    return rows


def gap_figure(
    pairs: Sequence[tuple[ImageStats, ImageStats]],
    real_shapes: Sequence[LungShape],
    phantom_shapes: Sequence[LungShape],
    examples: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    out: str | Path,
) -> Path:
    """Histograms, spectra, lung geometry and example images with their lung masks, phantom and
    real side by side; ``examples`` = (title, image, mask or None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_ex = len(examples)
    fig = plt.figure(figsize=(3.2 * max(n_ex, 3), 7.2))
    grid = fig.add_gridspec(2, max(n_ex, 3))
    ax = fig.add_subplot(grid[0, 0])
    centres = (np.arange(HIST_BINS) + 0.5) * 256 / HIST_BINS
    for phantom, real in pairs:
        ax.plot(centres, phantom.histogram, "--", label=f"phantom {phantom.name}")
        ax.plot(centres, real.histogram, "-", label=f"real {real.name}")
    ax.set(title="grey-level histogram", xlabel="grey level", ylabel="share of pixels")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[0, 1])
    for phantom, real in pairs:
        ax.plot(phantom.freqs[1:], phantom.log_power[1:], "--", label=f"phantom {phantom.name} ({phantom.slope:.2f})")
        ax.plot(real.freqs[1:], real.log_power[1:], "-", label=f"real {real.name} ({real.slope:.2f})")
    ax.set(title="radial power spectrum (slope)", xlabel="cycles / pixel", ylabel="log10 power")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[0, 2])
    fields = ("area", "height", "width", "ctr_proxy")
    pos = np.arange(len(fields))
    ax.boxplot([[getattr(s, f) for s in phantom_shapes] for f in fields], positions=pos - 0.18, widths=0.3)
    ax.boxplot([[getattr(s, f) for s in real_shapes] for f in fields], positions=pos + 0.18, widths=0.3)
    ax.set_xticks(pos, ["lung area", "lung height", "lung width", "inter-lung gap"], fontsize=8)
    ax.set_title(f"lung masks: phantom (n={len(phantom_shapes)}) | real (n={len(real_shapes)})", fontsize=9)
    for j, (title, image, mask) in enumerate(examples):
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        if mask is not None:
            ax.contour(mask.astype(float), levels=[0.5], colors="tab:orange", linewidths=0.8)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
