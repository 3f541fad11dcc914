"""Location strings -> anatomical region masks.

A location reads ``"[left|right|bilateral ]<region>"`` (the extraction vocabulary's regions, e.g.
``"left base"``, ``"bilateral lung"``, ``"right upper lobe"``, ``"pleura"``) plus a few zone words
(``perihilar``, ``peripheral``, ``upper``, ``mid``, ``lower``). Sides are the PATIENT's: on the PA
image the patient's right is the image LEFT (``anatomy.PATIENT_RIGHT == -1``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from medfilip.phantom.anatomy import PATIENT_LEFT, PATIENT_RIGHT, Scene

log = logging.getLogger(__name__)

SIDE_WORDS: dict[str, tuple[int, ...]] = {
    "left": (PATIENT_LEFT,),
    "right": (PATIENT_RIGHT,),
    "bilateral": (PATIENT_RIGHT, PATIENT_LEFT),
    "both": (PATIENT_RIGHT, PATIENT_LEFT),
}

# aliases -> canonical zone names below
REGION_ALIASES: dict[str, str] = {
    "upper lobe": "upper",
    "upper zone": "upper",
    "upper lung": "upper",
    "middle lobe": "middle lobe",
    "mid zone": "mid",
    "mid lung": "mid",
    "midlung": "mid",
    "lower lobe": "lower",
    "lower zone": "lower",
    "lower lung": "lower",
    "lung base": "base",
    "bases": "base",
    "lung bases": "base",
    "apices": "apex",
    "apical": "apex",
    "hila": "hilum",
    "hilar": "hilum",
    "costophrenic": "costophrenic angle",
    "costophrenic angles": "costophrenic angle",
    "lungs": "lung",
    "pleural": "pleura",
    "cardiac": "heart",
    "rib": "ribs",
    "clavicles": "clavicle",
    "shoulders": "shoulder",
    "hemidiaphragm": "diaphragm",
    "aortic arch": "aorta",
    "thoracic spine": "spine",
    "vertebra": "spine",
    "soft tissue": "chest wall",
    "soft tissues": "chest wall",
    "breasts": "breast",
    "upper abdomen": "abdomen",
}

SIDED = {
    "lung", "apex", "upper", "mid", "middle lobe", "lingula", "lower", "base", "hilum", "perihilar",
    "peripheral", "costophrenic angle", "pleura", "ribs", "clavicle", "shoulder", "diaphragm",
    "chest wall", "breast", "peripheral lower", "hemithorax",
}  # fmt: skip
UNSIDED = {"retrocardiac", "heart", "mediastinum", "aorta", "spine", "sternum", "abdomen", "neck", "trachea", "svc"}
REGIONS = SIDED | UNSIDED

_warned: set[str] = set()


def parse_location(location: str | None) -> tuple[tuple[int, ...] | None, str | None]:
    """``"left lower lobe"`` -> ((PATIENT_LEFT,), "lower"); unknown regions -> (sides, None) with one warning."""
    if not location:
        return None, None
    words = location.strip().lower().replace("_", " ").split()
    sides = None
    if words and words[0] in SIDE_WORDS:
        sides = SIDE_WORDS[words[0]]
        words = words[1:]
    name = " ".join(words)
    if not name:
        return sides, "lung"
    name = REGION_ALIASES.get(name, name)
    if name not in REGIONS:
        if name not in _warned:
            _warned.add(name)
            log.warning(
                "phantom: unknown location region %r (in %r): using the category's typical zone", name, location
            )
        return sides, None
    return sides, name


# -- zone masks (float 0..1, soft) ------------------------------------------------------
def lung_fraction(scene: Scene, side: int) -> np.ndarray:
    """0 at the apex, 1 at the costophrenic angle of ``side``."""
    a = scene.anatomy
    bottom = a.dome_top(side) + a.dome_depth
    return (scene.y - a.apex_y) / (bottom - a.apex_y)


def _band(t: np.ndarray, lo: float, hi: float, w: float = 0.04) -> np.ndarray:
    return np.clip(0.5 + (t - lo) / w, 0, 1) * np.clip(0.5 + (hi - t) / w, 0, 1)


def _disc(scene: Scene, cx: float, cy: float, r: float, w: float = 0.02) -> np.ndarray:
    return np.clip(0.5 + (r - np.hypot(scene.x - cx, scene.y - cy)) / w, 0, 1)


def _cp_point(scene: Scene, side: int) -> tuple[float, float]:
    a = scene.anatomy
    return a.cx + side * a.thorax_half_width * 0.97, a.dome_top(side) + a.dome_depth - 0.01


def _sided_zone(name: str) -> Callable[[Scene, int], np.ndarray]:
    def zone(scene: Scene, side: int) -> np.ndarray:
        lung = scene.lungs[side]
        t = lung_fraction(scene, side)
        a = scene.anatomy
        dx = scene.lateral(side)
        if name == "lung":
            return lung
        if name == "apex":
            return lung * _band(t, -1, 0.2)
        if name == "upper":
            return lung * _band(t, -1, 0.45)
        if name == "mid":
            return lung * _band(t, 0.33, 0.7)
        if name in ("middle lobe", "lingula"):
            return lung * _band(t, 0.45, 0.85) * np.clip(0.5 + (a.thorax_half_width * 0.75 - dx) / 0.05, 0, 1)
        if name == "peripheral lower":
            return lung * _band(t, 0.45, 2) * np.clip(0.5 + (dx - a.thorax_half_width * 0.5) / 0.06, 0, 1)
        if name == "hemithorax":
            return scene.hemithorax[side]
        if name == "lower":
            return lung * _band(t, 0.5, 2)
        if name == "base":
            return lung * _band(t, 0.7, 2)
        if name == "hilum":
            hx, hy = scene.hilum_point(side)
            return _disc(scene, hx, hy, 0.06)
        if name == "perihilar":
            hx, hy = scene.hilum_point(side)
            return np.maximum(lung, _disc(scene, hx, hy, 0.05)) * _disc(scene, hx, hy + 0.02, 0.15, 0.06)
        if name == "peripheral":
            return lung * np.clip(0.5 + (dx - a.thorax_half_width * 0.55) / 0.05, 0, 1)
        if name == "costophrenic angle":
            px, py = _cp_point(scene, side)
            return np.maximum(lung, scene.hemithorax[side]) * _disc(scene, px, py, 0.09, 0.04)
        if name == "pleura":
            d = scene.lung_outline(side)
            return np.clip(1 - np.abs(d) / 0.03, 0, 1) * (dx > 0.05)
        if name == "ribs":
            d = scene.lung_outline(side)
            return np.clip(0.5 + (d + 0.03) / 0.02, 0, 1) * np.clip(0.5 + (dx - 0.05) / 0.02, 0, 1)
        if name == "clavicle":
            return _band(scene.y, a.apex_y - 0.04, a.apex_y + 0.1, 0.02) * _band(dx, 0.02, 0.33, 0.02)
        if name == "shoulder":
            return _band(scene.y, -1, a.apex_y + 0.15, 0.03) * _band(dx, 0.26, 2, 0.03)
        if name == "diaphragm":
            return np.clip(1 - np.abs(scene.y - scene.dome_y(side)) / 0.045, 0, 1) * _band(
                dx, 0.0, a.thorax_half_width + 0.01, 0.02
            )
        if name == "chest wall":
            d = scene.lung_outline(side)
            return (
                np.clip(0.5 - (d - 0.005) / 0.01, 0, 1)
                * _band(dx, 0.2, a.body_half_width, 0.03)
                * _band(scene.y, a.apex_y, a.dome_top(side) + a.dome_depth + 0.05, 0.03)
            )
        if name == "breast":
            return np.clip(1 - np.hypot((dx - 0.22) / 0.14, (scene.y - a.dome_top(side) + 0.03) / 0.1), 0, 1) ** 0.3
        raise KeyError(name)

    return zone


def _unsided_zone(scene: Scene, name: str) -> np.ndarray:
    a = scene.anatomy
    if name == "retrocardiac":
        hx, hy = a.heart_center
        return (
            scene.heart
            * np.clip(0.5 + (scene.x - a.cx + 0.01) / 0.02, 0, 1)
            * np.clip(0.5 + (scene.y - 0.45) / 0.03, 0, 1)
        )
    if name == "heart":
        return np.maximum(scene.heart, 0)
    if name == "mediastinum":
        return scene.mediastinum * np.clip(0.5 + (a.heart_center[1] - scene.y) / 0.04, 0, 1)
    if name == "aorta":
        return np.maximum(
            np.clip(scene.knob * 2, 0, 1),
            _band(scene.x, a.cx + 0.01, a.cx + 0.1, 0.02) * _band(scene.y, 0.22, 0.62, 0.03),
        )
    if name == "spine":
        return np.clip(1 - np.abs(scene.x - scene.spine_x()) / 0.05, 0, 1) ** 0.5
    if name == "sternum":
        return _band(scene.x, a.cx - 0.035, a.cx + 0.035, 0.01) * _band(scene.y, a.apex_y + 0.03, 0.52, 0.02)
    if name == "abdomen":
        return scene.abdomen * (scene.body_thickness > 0.3)
    if name == "neck":
        return _band(scene.y, -1, a.apex_y + 0.02, 0.03) * _band(scene.x, a.cx - 0.13, a.cx + 0.13, 0.03)
    if name == "trachea":
        return _band(scene.x, a.cx - 0.035, a.cx + 0.035, 0.01) * _band(scene.y, -1, 0.42, 0.02)
    if name == "svc":
        return _band(scene.x, a.cx - 0.09, a.cx - 0.02, 0.01) * _band(scene.y, 0.12, 0.42, 0.02)
    raise KeyError(name)


SIDED_ZONES = {name: _sided_zone(name) for name in SIDED}


def zone_mask(scene: Scene, region: str, sides: tuple[int, ...]) -> np.ndarray:
    """Soft (0..1) mask of ``region`` on ``sides`` (sides ignored for midline regions)."""
    if region in UNSIDED:
        return _unsided_zone(scene, region).astype(np.float32)
    out = np.zeros_like(scene.x)
    for side in sides:
        out = np.maximum(out, SIDED_ZONES[region](scene, side))
    return out.astype(np.float32)


def box_mask(scene: Scene, box: tuple[float, float, float, float]) -> np.ndarray:
    """A box (x0, y0, x1, y1) in [0, 1] IMAGE coordinates (not rotated with the patient)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    x, y = scene.image_x, scene.image_y
    return ((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).astype(np.float32)


def resized_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask of any shape to (size, size)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"Finding.mask must be a non-empty 2-D array, got shape {m.shape}")
    rows = np.minimum(((np.arange(size) + 0.5) * m.shape[0] / size).astype(int), m.shape[0] - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * m.shape[1] / size).astype(int), m.shape[1] - 1)
    return (m[np.ix_(rows, cols)] > 0).astype(np.float32)
