"""A finding drawn from shared visual primitives (the controlled worlds, ``medfilip.worlds``).

A *prototype* is a point in [0, 1]^6 over primitives the phantom already draws (``draw.py``):

- ``density``: attenuation added (as ``draw_opacity``'s density)
- ``extent``: how much of the zone it covers (``_blob`` coverage) and how many foci it has
- ``texture``: homogeneous (0) to reticular (1) (``draw_reticular``'s zero-crossing network)
- ``border``: soft (0) to sharp (1) edges
- ``form``: confluent (0, ``_blob``) to round foci (1, ``_disc_profile``)
- ``volume``: volume effect (``modify_volume_loss``: the dome rises, the mediastinum shifts)

Severity moves density, extent and the number and size of foci continuously through
``m = gain * (level - 0.5)`` (level 0 mild, 0.5 moderate, 1 severe): at ``gain = 0`` severity
changes no pixel. Every random draw is made whatever the severity, the prototype or the category
(the rng is the patient's), so two prototypes on the same patient differ only by their primitives.
The location picks the zone and the side only. The existing phantom (``render.py``) is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfilip.phantom.anatomy import PATIENT_LEFT, PATIENT_RIGHT, Scene, sample_anatomy, smooth_field, soft, stable_seed
from medfilip.phantom.draw import Stroke, _centroid, _disc_profile, _lung_air, _sample_points, modify_volume_loss
from medfilip.phantom.regions import zone_mask
from medfilip.phantom.render import _expose, anatomy_attenuation
from medfilip.phantom.settings import PhantomConfig

PRIMITIVES = ("density", "extent", "texture", "border", "form", "volume")
SEVERITY_LEVELS = {"mild": 0.0, "moderate": 0.5, "severe": 1.0}
ZONES = ("upper", "mid", "lower")
SIDES = {"right": PATIENT_RIGHT, "left": PATIENT_LEFT}
MAX_FOCI = 10


@dataclass(frozen=True)
class Placement:
    """Where and how strongly one finding is drawn: zone and side (the location), severity word."""

    zone: str
    side: str
    severity: str

    def __post_init__(self):
        if self.zone not in ZONES:
            raise ValueError(f"world finding: zone {self.zone!r} is not one of {ZONES}")
        if self.side not in SIDES:
            raise ValueError(f"world finding: side {self.side!r} is not one of {tuple(SIDES)}")
        if self.severity not in SEVERITY_LEVELS:
            raise ValueError(f"world finding: severity {self.severity!r} is not one of {tuple(SEVERITY_LEVELS)}")

    @property
    def location(self) -> str:
        """The location text of the label: "right lower zone"."""
        return f"{self.side} {self.zone} zone"


def severity_shift(severity: str, gain: float) -> float:
    """``m = gain * (level - 0.5)``: what severity adds to density, extent and foci (0 at gain 0)."""
    return float(gain) * (SEVERITY_LEVELS[severity] - 0.5)


def check_prototype(prototype) -> np.ndarray:
    p = np.asarray(prototype, dtype=np.float64).reshape(-1)
    if p.shape != (len(PRIMITIVES),) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"world prototype must be {len(PRIMITIVES)} values in [0, 1] ({PRIMITIVES}), got {prototype!r}"
        )
    return p


def primitive_delta(scene: Scene, prototype, placement: Placement, gain: float, rng: np.random.Generator) -> np.ndarray:
    """The attenuation delta of one finding (added inside its zone) on ``scene``."""
    density, extent, texture, border, form, _ = check_prototype(prototype)
    m = severity_shift(placement.severity, gain)
    sides = (SIDES[placement.side],)
    region = zone_mask(scene, placement.zone, sides)
    st = Stroke(scene, region, 0.0, rng, sides, {})
    # every draw below happens whatever the primitives and the severity (fixed order, fixed count)
    blob_noise = smooth_field(rng, 10, scene.size)
    net_field = smooth_field(rng, 40, scene.size)
    points = _sample_points(st, MAX_FOCI)
    radius_jitter = rng.uniform(0.8, 1.2, MAX_FOCI)

    width = 0.2 - 0.17 * border  # soft -> sharp edges
    cx, cy, r = _centroid(region, scene)
    r = max(r, 0.02)
    coverage = float(np.clip(0.3 + 0.6 * extent + 0.5 * m, 0.05, 1.3))
    score = 1 - np.hypot(scene.x - cx, scene.y - cy) / (1.6 * r) + 0.15 * blob_noise
    confluent = soft(score - (1 - coverage), width)

    n_foci = float(np.clip(2 + 6 * extent + 6 * m, 1, MAX_FOCI))
    r0 = (0.018 + 0.022 * extent) * (1 + 0.8 * m)
    foci = np.zeros_like(scene.x)
    for k, (x, y) in enumerate(points):
        weight = float(np.clip(n_foci - k, 0, 1))
        if weight > 0:
            foci = np.maximum(foci, weight * _disc_profile(scene, x, y, r0 * radius_jitter[k]) ** (1.5 - border))
    shape = (1 - form) * confluent + form * foci

    net = soft(0.22 - np.abs(net_field), 0.12)
    tex = (1 - texture) + texture * 1.6 * net
    amplitude = (0.3 + 0.9 * density) * (1 + 0.8 * m)
    return (amplitude * shape * tex * _lung_air(scene) * region).astype(np.float32)


def render_primitive(
    prototype,
    placement: Placement,
    *,
    size: int,
    seed: int,
    gain: float = 1.0,
    settings: PhantomConfig | None = None,
) -> np.ndarray:
    """A uint8 (size, size) phantom of patient ``seed`` with one primitive finding.

    Bytes depend on the patient, the prototype, the placement and ``gain * (level - 0.5)`` only.
    """
    if size < 16:
        raise ValueError(f"render_primitive: size {size} is too small (>= 16)")
    p = check_prototype(prototype)
    base = sample_anatomy(seed, settings)
    anatomy = base
    volume = float(p[PRIMITIVES.index("volume")])
    sides = (SIDES[placement.side],)
    if volume > 0:
        anatomy = modify_volume_loss(base, sides, volume, {"raise": 0.05 * volume, "shift": 0.03 * volume})
    scene = Scene(anatomy, size, base=base)
    att = anatomy_attenuation(scene)
    rng = np.random.default_rng(stable_seed(seed, "world", placement.zone, placement.side))
    att = att + primitive_delta(scene, p, placement, gain, rng)
    brightness = _expose(att, scene.anatomy, np.random.default_rng(stable_seed(seed, "noise")))
    return np.clip(brightness * 255.0 + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "MAX_FOCI",
    "PRIMITIVES",
    "SEVERITY_LEVELS",
    "SIDES",
    "ZONES",
    "Placement",
    "check_prototype",
    "primitive_delta",
    "render_primitive",
    "severity_shift",
]
