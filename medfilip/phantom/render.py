"""``render_phantom``: findings + seed -> a uint8 frontal chest radiograph phantom.

Pipeline: the patient's :class:`Anatomy` is drawn from the seed; anatomy modifiers of the present
findings (cardiomegaly, hyperinflation, scoliosis...) change it; the anatomy is composed into an
attenuation map (soft tissue, lungs, heart, mediastinum, bones); each finding's drawer adds its
attenuation delta inside the finding's region; exposure maps attenuation to brightness and quantum
noise is added. Nothing depends on image statistics, so a finding changes pixels only inside its
region (``finding_region``), and the same findings + seed + size give identical bytes.

Sides are the PATIENT's: on a PA (and AP) image the patient's right is the image LEFT.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medfilip.phantom.anatomy import Anatomy, Scene, sample_anatomy, stable_seed
from medfilip.phantom.appearance import APPEARANCE
from medfilip.phantom.draw import DRAWER_REGIONS, DRAWERS, MODIFIERS, Stroke
from medfilip.phantom.regions import SIDED, box_mask, parse_location, resized_mask, zone_mask
from medfilip.phantom.settings import PhantomConfig

log = logging.getLogger(__name__)

VIEWS = ("PA", "AP")

SEVERITY_SCALE: dict[str | None, float] = {
    "minimal": 0.25,
    "borderline": 0.35,
    "mild": 0.45,
    "small": 0.45,
    None: 0.65,
    "moderate": 0.7,
    "large": 0.9,
    "severe": 1.0,
}


@dataclass(frozen=True, eq=False)
class Finding:
    """One finding to draw. ``box`` (x0, y0, x1, y1 in [0, 1] image coordinates) or ``mask`` (bool
    array of any shape, resized to the image) replace the location's region."""

    category: str
    location: str | None = None
    severity: str | None = None
    polarity: str = "present"
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    @property
    def present(self) -> bool:
        return self.polarity == "present"

    @property
    def overridden(self) -> bool:
        return self.box is not None or self.mask is not None


def severity_scale(word: str | None) -> float:
    """Severity word -> 0..1 (minimal < mild/small < moderate (also unstated) < large/severe)."""
    if word is None:
        return SEVERITY_SCALE[None]
    return SEVERITY_SCALE.get(word.strip().lower(), SEVERITY_SCALE[None])


_warned: set[str] = set()


def appearance_of(category: str) -> dict | None:
    """The table entry of a category (case-insensitive); None (logged once) when unknown."""
    entry = APPEARANCE.get(category.strip().lower())
    if entry is None and category not in _warned:
        _warned.add(category)
        log.warning("phantom: no appearance for category %r: not drawn", category)
    return entry


def _resolve_zone(finding: Finding, entry: dict, anatomy: Anatomy) -> tuple[tuple[int, ...], str]:
    """(sides, zone name) for a finding: its location, else the category's typical zone; a sided
    zone without a side gets one drawn from the patient seed and the finding."""
    scope = entry.get("scope", "location")
    default_sides, default_zone = parse_location(entry.get("zone", "lung"))
    sides, zone = parse_location(finding.location)
    if scope == "fixed_zone":
        zone = default_zone
    elif scope == "hemithorax":
        zone = "hemithorax"
    elif zone is None:
        zone = default_zone or "lung"
    if sides is None:
        sides = default_sides
    if sides is None:
        rng = np.random.default_rng(stable_seed(anatomy.seed, "side", finding.category, finding.location or ""))
        sides = ((-1,), (1,))[int(rng.integers(2))]
    return sides, zone


def _override(finding: Finding, scene: Scene) -> np.ndarray | None:
    if finding.mask is not None:
        return resized_mask(finding.mask, scene.size)
    if finding.box is not None:
        return box_mask(scene, finding.box)
    return None


def _modifiers(finding: Finding, entry: dict) -> list[dict]:
    return [] if finding.overridden else list(entry.get("modify", []))


def _drawers(finding: Finding, entry: dict) -> list[dict]:
    draws = list(entry.get("draw", []))
    if finding.overridden and entry.get("modify"):
        draws = draws + list(entry.get("box", [{"kind": "opacity"}]))
    return draws


def _soft_region(finding: Finding, entry: dict, scene: Scene) -> tuple[np.ndarray, tuple[int, ...]]:
    """(soft 0..1 region the drawers paint into, sides)."""
    sides, zone = _resolve_zone(finding, entry, scene.anatomy)
    override = _override(finding, scene)
    if override is not None:  # the side is where the box/mask lies
        weight = override.sum()
        if weight > 0:
            x = float((override * scene.x).sum() / weight)
            sides = (-1,) if x < scene.anatomy.cx else (1,)
        return override, sides
    region = np.zeros_like(scene.x)
    for spec in _drawers(finding, entry):
        fn = DRAWER_REGIONS.get(spec["kind"])
        part = fn(scene, sides, severity_scale(finding.severity), spec) if fn else zone_mask(scene, zone, sides)
        region = np.maximum(region, part)
    return region, sides


def finding_region(finding: Finding, scene: Scene) -> np.ndarray:
    """Bool mask of the pixels ``finding`` may change in ``scene`` (see :func:`phantom_scene`):
    its drawers' region plus the bounds of its anatomy modifiers."""
    entry = appearance_of(finding.category)
    if entry is None or not finding.present:
        return np.zeros(scene.x.shape, bool)
    region, sides = _soft_region(finding, entry, scene)
    for spec in _modifiers(finding, entry):
        region = np.maximum(region, MODIFIERS[spec["kind"]][1](scene, sides, spec))
    return region > 0


def phantom_scene(findings: Sequence[Finding], *, size: int, seed: int, settings: PhantomConfig | None = None) -> Scene:
    """The patient of ``seed`` with the anatomy modifiers of the present ``findings`` applied."""
    base = sample_anatomy(seed, settings)
    anatomy = base
    for finding in findings:
        entry = appearance_of(finding.category) if finding.present else None
        if entry is None:
            continue
        sides, _ = _resolve_zone(finding, entry, base)
        for spec in _modifiers(finding, entry):
            anatomy = MODIFIERS[spec["kind"]][0](anatomy, sides, severity_scale(finding.severity), spec)
    return Scene(anatomy, size, base=base)


def anatomy_attenuation(scene: Scene) -> np.ndarray:
    """The normal chest as attenuation (soft tissue ~1, aerated lung ~0.3, bone adds)."""
    a = scene.anatomy
    lungs = scene.lung_total
    att = 1.15 * scene.body_thickness
    att = att - (0.85 * a.lung_lucency) * lungs * (0.55 + 0.45 * scene.body_thickness)
    att += 0.1 * a.markings * scene.vessels + 0.06 * scene.hila
    att += 0.05 * scene.mediastinum - 0.18 * scene.trachea
    att += 0.11 * scene.ribs * (0.55 + 0.45 * lungs) + 0.22 * scene.clavicles + 0.14 * scene.spine * (1 - 0.4 * lungs)
    att -= 0.3 * scene.gastric_bubble
    return att.astype(np.float32)


def _expose(att: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Attenuation -> brightness (dense = bright) with the patient's exposure, contrast and noise."""
    brightness = 0.02 + 0.95 * anatomy.exposure * (1.0 - np.exp(-1.1 * anatomy.contrast * np.clip(att, 0, None)))
    if anatomy.noise > 0:
        brightness += anatomy.noise * rng.standard_normal(att.shape, dtype=np.float32)
    return brightness


def render_phantom(
    findings: Sequence[Finding],
    *,
    size: int,
    seed: int,
    view: str = "PA",
    settings: PhantomConfig | None = None,
) -> np.ndarray:
    """Render a frontal chest-radiograph phantom: uint8 array (size, size).

    Only present findings are drawn; unknown categories are logged once and skipped.
    """
    if view.upper() not in VIEWS:
        raise ValueError(f"render_phantom: view {view!r} is not one of {VIEWS}")
    if size < 16:
        raise ValueError(f"render_phantom: size {size} is too small (>= 16)")
    findings = [f for f in findings if f.present]
    scene = phantom_scene(findings, size=size, seed=seed, settings=settings)
    cfg = settings or PhantomConfig()
    att = anatomy_attenuation(scene)
    for index, finding in enumerate(findings):
        entry = appearance_of(finding.category)
        if entry is None:
            continue
        drawers = _drawers(finding, entry)
        if not drawers:
            continue
        region, sides = _soft_region(finding, entry, scene)
        if not region.any():
            continue
        sev = severity_scale(finding.severity)
        for k, spec in enumerate(drawers):
            params = {
                **spec,
                "bronchograms": spec.get("bronchograms", False) and cfg.air_bronchograms,
                "override": finding.overridden,
            }
            rng = np.random.default_rng(
                stable_seed(seed, "finding", index, k, finding.category.lower(), finding.location or "")
            )
            delta = DRAWERS[spec["kind"]](Stroke(scene, region, sev, rng, sides, params))
            att += delta * region
    rng = np.random.default_rng(stable_seed(seed, "noise"))
    brightness = _expose(att, scene.anatomy, rng)
    if view.upper() == "AP":
        brightness = brightness * 0.96 + 0.02  # AP portables: flatter, a little less contrast
    return np.clip(brightness * 255.0 + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "Finding",
    "SIDED",
    "VIEWS",
    "anatomy_attenuation",
    "finding_region",
    "phantom_scene",
    "render_phantom",
    "severity_scale",
]
