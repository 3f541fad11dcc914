"""Drawing primitives of findings (attenuation deltas) and anatomy modifiers.

A drawer gets a :class:`Stroke` (scene, soft region, severity 0..1, its own rng, parameters from
the appearance table) and returns an attenuation delta the renderer adds inside the region
(positive = denser = brighter). A modifier returns a changed :class:`Anatomy` (cardiomegaly,
scoliosis, flattened diaphragm...) and has a region function that bounds what it can change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from medfilip.phantom.anatomy import PATIENT_LEFT, PATIENT_RIGHT, Anatomy, Scene, smooth_field, soft
from medfilip.phantom.regions import lung_fraction, zone_mask


@dataclass
class Stroke:
    scene: Scene
    region: np.ndarray  # float 0..1
    severity: float  # 0..1
    rng: np.random.Generator
    sides: tuple[int, ...]
    params: dict = field(default_factory=dict)

    def p(self, key: str, default):
        return self.params.get(key, default)


# -- helpers ---------------------------------------------------------------------------
def _centroid(region: np.ndarray, scene: Scene) -> tuple[float, float, float]:
    """Weighted centroid (x, y) and equivalent radius of a region, in image fractions."""
    w = region.sum()
    if w <= 0:
        return 0.5, 0.5, 0.0
    cx = float((region * scene.x).sum() / w)
    cy = float((region * scene.y).sum() / w)
    return cx, cy, float(np.sqrt(w / region.size / np.pi))


def _sample_points(st: Stroke, n: int, min_value: float = 0.6) -> list[tuple[float, float]]:
    """``n`` points inside the region, drawn in continuous coordinates (the same at every size)."""
    size = st.scene.size
    pts = []
    for _ in range(400):
        if len(pts) == n:
            break
        x, y = st.rng.uniform(0, 1, 2)
        col = min(int(x * size), size - 1)
        row = min(int(y * size), size - 1)
        if st.region[row, col] >= min_value:
            pts.append((float(st.scene.x[row, col]), float(st.scene.y[row, col])))
    while len(pts) < n:
        cx, cy, _ = _centroid(st.region, st.scene)
        pts.append((cx, cy))
    return pts


def _blob(st: Stroke, coverage: float, res: int = 10, rough: float = 0.45) -> np.ndarray:
    """A patchy confluent blob grown from the region's centre: larger coverage -> larger (nested) blob."""
    sc = st.scene
    cx, cy, r = _centroid(st.region, sc)
    r = max(r, 0.02)
    noise = smooth_field(st.rng, res, sc.size)
    score = 1 - np.hypot(sc.x - cx, sc.y - cy) / (1.6 * r) + rough * noise * 0.5
    return soft(score - (1 - coverage), 0.12) * st.region


def _lung_air(sc: Scene) -> np.ndarray:
    return 0.25 + 0.75 * np.clip(sc.lung_total, 0, 1)


def _disc_profile(sc: Scene, x: float, y: float, r: float) -> np.ndarray:
    """Projected sphere: thickest in the middle."""
    win = sc.window(x - r - 0.01, x + r + 0.01, y - r - 0.01, y + r + 0.01)
    d = np.hypot(win.x - x, win.y - y) * (1 / max(r, 1e-4))
    return win.paste(np.sqrt(np.maximum(1 - d * d, 0)) * soft(1 - d, 0.15))


# -- drawers -------------------------------------------------------------------------------
def draw_opacity(st: Stroke) -> np.ndarray:
    """Consolidation / infiltrate / ground glass: patchy confluent density replacing lung air."""
    sc = st.scene
    glass = st.p("ground_glass", False)
    coverage = st.p("coverage", 0.35) + 0.75 * st.severity
    blob = _blob(st, coverage, res=st.p("grain", 12 if not glass else 8), rough=st.p("rough", 0.6))
    density = st.p("density", 0.6) * (0.55 + 0.45 * st.severity)
    out = density * blob * _lung_air(sc)
    if glass:
        out = out + 0.05 * sc.vessels * blob  # vessels stay visible through ground glass
    if st.p("bronchograms", False) and st.severity >= 0.5:
        for side in st.sides:
            hx, hy = sc.hilum_point(side)
            theta = np.arctan2(sc.y - hy, (sc.x - hx) * side)
            lines = np.clip(np.cos(theta * 26 + 3 * np.hypot(sc.x - hx, sc.y - hy)), 0, 1) ** 12
            broken = soft(smooth_field(st.rng, 20, sc.size) - 0.2, 0.5)  # short branching segments, not a fan
            out = out - 0.35 * density * lines * broken * blob**2 * sc.lungs[side]
    return out


def draw_nodule(st: Stroke) -> np.ndarray:
    sc = st.scene
    count = int(st.p("count", 1)) + int(round(st.p("extra_count", 0) * st.severity))
    r0 = st.p("radius", 0.02) * (0.6 + 0.8 * st.severity)
    density = st.p("density", 0.5)
    out = np.zeros_like(sc.x)
    for x, y in _sample_points(st, count):
        r = r0 * st.rng.uniform(0.8, 1.2)
        shape = _disc_profile(sc, x, y, r)
        if st.p("lobulated", False):
            shape = (
                shape * (1 + 0.25 * smooth_field(st.rng, 24, sc.size)) * soft(1 - np.hypot(sc.x - x, sc.y - y) / r, 0.3)
            )
        out += density * shape
    return out


def draw_effusion(st: Stroke) -> np.ndarray:
    """Dependent homogeneous fluid with a meniscus rising laterally, blunting the angle."""
    sc = st.scene
    a = sc.anatomy
    out = np.zeros_like(sc.x)
    for side in st.sides:
        bottom = a.dome_top(side) + a.dome_depth
        height = (bottom - a.apex_y) * (st.p("base_height", 0.08) + st.p("height", 0.45) * st.severity)
        dx = np.clip(sc.lateral(side) / a.thorax_half_width, 0, 1.2)
        surface = bottom - height + 0.02 - (0.04 + 0.08 * st.severity) * dx**2  # meniscus climbs the lateral wall
        win = sc.window(
            *sorted((a.cx, a.cx + side * (a.thorax_half_width + 0.03))), bottom - height - 0.16, bottom + 0.02
        )
        surface = surface[win.slices]
        fluid = (
            soft(win.y - surface, 0.03) * np.minimum(0.55 + (win.y - surface) * 6, 1) * sc.hemithorax[side][win.slices]
        )
        out[win.slices] += fluid * (0.95 * sc.lungs[side][win.slices] + 0.15 - 0.1 * sc.vessels[win.slices])
    return out


def _inner_edge(region: np.ndarray, k: int) -> np.ndarray:
    inside = region > 0.5
    eroded = inside.copy()
    for axis in (0, 1):
        for shift in (-k, k):
            eroded &= np.roll(inside, shift, axis=axis)
    return (inside & ~eroded).astype(np.float32)


def draw_pneumothorax(st: Stroke) -> np.ndarray:
    """Apicolateral air rim without lung markings, bounded by a thin visceral pleural line."""
    sc = st.scene
    a = sc.anatomy
    if st.p("override", False):  # the region is the pneumothorax itself (e.g. a SIIM mask)
        line = _inner_edge(st.region, max(1, sc.size // 170)) * sc.lung_total
        return -st.region * (0.12 * sc.vessels * a.markings + 0.12) + 0.18 * line
    out = np.zeros_like(sc.x)
    for side in st.sides:
        d = sc.lung_outline(side)
        t = np.clip(lung_fraction(sc, side), 0, 1)
        gap = (0.012 + 0.07 * st.severity) * (1.25 - 0.75 * t)
        lateral = soft(sc.lateral(side) - 0.06, 0.03)
        rim = soft(gap - d, 0.01) * sc.hemithorax[side] * lateral
        line = soft(0.004 - np.abs(d - gap), 0.003) * sc.hemithorax[side] * lateral * soft(0.9 - t, 0.1)
        out += (
            -rim * (0.12 * sc.vessels * a.markings + 0.12)
            + 0.18 * line
            + 0.04 * (1 - rim) * sc.lungs[side] * st.severity
        )
    return out


def draw_edema(st: Stroke) -> np.ndarray:
    """Perihilar bat-wing haze, vascular prominence and Kerley B lines at the lateral bases."""
    sc = st.scene
    a = sc.anatomy
    out = np.zeros_like(sc.x)
    haze_w = 0.09 + 0.09 * st.severity
    for side in st.sides:
        hx, hy = sc.hilum_point(side)
        dist = np.hypot((sc.x - hx) * 0.9, (sc.y - hy - 0.02) * 0.8)
        haze = np.exp(-((dist / haze_w) ** 2)) * sc.lungs[side]
        t = lung_fraction(sc, side)
        lines_y = np.abs(((sc.y * 90) % 1.0) - 0.5)
        kerley = (
            soft(0.12 - lines_y, 0.08)
            * soft(sc.lateral(side) - a.thorax_half_width * 0.72, 0.02)
            * soft(t - 0.65, 0.05)
            * sc.lungs[side]
        )
        out += (
            st.p("density", 0.45) * (0.4 + 0.6 * st.severity) * haze
            + 0.12 * st.severity * kerley
            + 0.08 * st.severity * sc.vessels
        )
    return out


def draw_reticular(st: Stroke) -> np.ndarray:
    """Interstitial network: the zero crossings of a fine random field, coarser and denser with severity."""
    sc = st.scene
    res = st.p("grain", 40)
    f = smooth_field(st.rng, res, sc.size)
    net = soft(0.22 + 0.1 * st.severity - np.abs(f), 0.12)
    blob = _blob(st, st.p("coverage", 0.5) + 0.6 * st.severity, res=8, rough=0.5)
    return st.p("density", 0.22) * (0.5 + 0.5 * st.severity) * net * blob * _lung_air(sc) + 0.04 * blob * st.severity


def draw_linear(st: Stroke) -> np.ndarray:
    """Plate-like (discoid) atelectasis: near-horizontal dense bands plus a faint patch."""
    sc = st.scene
    cx, cy, r = _centroid(st.region, sc)
    out = np.zeros_like(sc.x)
    n = 1 + int(round(2 * st.severity))
    for k in range(n):
        y0 = cy + (k - (n - 1) / 2) * 0.035 + st.rng.uniform(-0.01, 0.01)
        tilt = st.rng.uniform(-0.15, 0.15)
        thick = 0.004 + 0.007 * st.severity
        yl = y0 + tilt * (sc.x - cx)
        length = (0.5 + 0.5 * st.severity) * max(r, 0.04) * 1.4
        band = soft(thick - np.abs(sc.y - yl), 0.004) * soft(length - np.abs(sc.x - cx), 0.02)
        out += 0.55 * band
    blob = _blob(st, 0.2 + 0.4 * st.severity, res=10)
    return (out + 0.15 * st.severity * blob) * _lung_air(sc)


def draw_lucency(st: Stroke) -> np.ndarray:
    """Hyperlucent lung: less attenuation and fewer markings (unilateral, e.g. hyperlucency)."""
    sc = st.scene
    return -(0.05 + 0.08 * st.severity) * sc.lung_total * st.region - 0.06 * sc.vessels * st.region


def draw_cavity(st: Stroke) -> np.ndarray:
    """A ring: thick (cavity) or hairline (cyst, bulla) wall around a lucent centre."""
    sc = st.scene
    wall = st.p("wall", 0.008)
    out = np.zeros_like(sc.x)
    count = int(st.p("count", 1)) + int(round(st.p("extra_count", 0) * st.severity))
    for x, y in _sample_points(st, count):
        r = st.p("radius", 0.03) * (0.6 + 0.8 * st.severity)
        d = np.hypot(sc.x - x, sc.y - y)
        ring = soft(wall - np.abs(d - r), 0.004)
        inside = soft(r - wall - d, 0.004)
        out += st.p("density", 0.45) * ring - inside * (0.12 + 0.12 * sc.vessels)
        if st.p("fluid_level", False):
            out += 0.25 * inside * soft(sc.y - y - 0.3 * r, 0.003)
    return out


def draw_fracture(st: Stroke) -> np.ndarray:
    """A rib cortex break: a dark cleft across a rib, the lateral fragment stepped down."""
    sc = st.scene
    out = np.zeros_like(sc.x)
    ribs = sc.ribs
    count = 1 + int(round(st.p("extra_count", 1) * st.severity))
    bright = st.region * (ribs > 0.8)
    sub = Stroke(sc, bright.astype(np.float32), st.severity, st.rng, st.sides, st.params)
    for x, y in _sample_points(sub, count, min_value=0.5):
        gap = 0.0035 + 0.004 * st.severity
        near = soft(0.03 - np.abs(sc.y - y), 0.01)
        cleft = soft(gap - np.abs(sc.x - x - 0.3 * (sc.y - y)), 0.003) * near
        step = (0.004 + 0.01 * st.severity) * (sc.x > x)
        shifted = soft(0.004 - np.abs(sc.y - y - step), 0.003) * soft(0.025 - np.abs(sc.x - x), 0.01)
        out += -0.35 * ribs * cleft + 0.25 * shifted * soft(st.severity - 0.3, 0.2)
    return out


def draw_hernia(st: Stroke) -> np.ndarray:
    """Retrocardiac gas-filled sac with an air-fluid level."""
    sc = st.scene
    a = sc.anatomy
    x, y = a.cx + 0.025, a.dome_top_left - 0.05
    r = 0.025 + 0.035 * st.severity
    d = np.hypot(sc.x - x, (sc.y - y) * 1.1)
    inside = soft(r - d, 0.006)
    rim = soft(0.004 - np.abs(d - r), 0.003)
    fluid = inside * soft(sc.y - y - 0.25 * r, 0.003)
    return -0.3 * (inside - fluid) + 0.08 * fluid + 0.12 * rim


def _polyline(sc: Scene, pts: list[tuple[float, float]], width: float) -> np.ndarray:
    """Soft line along a polyline (distance to segments)."""
    out = np.zeros_like(sc.x)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        vx, vy = x1 - x0, y1 - y0
        L2 = vx * vx + vy * vy + 1e-9
        t = np.clip(((sc.x - x0) * vx + (sc.y - y0) * vy) / L2, 0, 1)
        d = np.hypot(sc.x - (x0 + t * vx), sc.y - (y0 + t * vy))
        out = np.maximum(out, soft(width - d, 0.002))
    return out


def _device_paths(a: Anatomy) -> dict[str, list[tuple[float, float]]]:
    c = a.cx
    return {
        "ett": [(c, 0.0), (c, 0.29)],
        "ng": [
            (c - 0.005, 0.0),
            (c - 0.008, 0.3),
            (c + 0.01, 0.55),
            (c + 0.08, a.dome_top_left + 0.02),
            (c + 0.16, a.dome_top_left + 0.07),
        ],
        "line": [(c - 0.3, 0.13), (c - 0.16, 0.17), (c - 0.06, 0.22), (c - 0.04, 0.36)],
        "lead": [
            (c + 0.26, 0.2),
            (c + 0.14, 0.18),
            (c - 0.03, 0.24),
            (c - 0.04, 0.42),
            (c + 0.03, 0.58),
            (c + 0.1, 0.63),
        ],
    }


def device_region(sc: Scene, sides, severity: float, params: dict) -> np.ndarray:
    paths = _device_paths(sc.anatomy)
    out = np.zeros_like(sc.x)
    for pts in paths.values():
        out = np.maximum(out, _polyline(sc, pts, 0.035))
    a = sc.anatomy
    box = soft(0.06 - np.abs(sc.x - (a.cx + 0.26)), 0.01) * soft(0.05 - np.abs(sc.y - 0.2), 0.01)
    return np.maximum(out, box)


def draw_devices(st: Stroke) -> np.ndarray:
    """Endotracheal tube, nasogastric tube, central line, and (severe) a pacemaker with its lead."""
    sc = st.scene
    a = sc.anatomy
    paths = _device_paths(a)
    order = ["line", "ett", "ng", "lead"]
    n = 1 + int(round(3 * st.severity))
    out = np.zeros_like(sc.x)
    for name in order[:n]:
        width = {"ett": 0.009, "ng": 0.004, "line": 0.003, "lead": 0.0035}[name]
        tube = _polyline(sc, paths[name], width)
        if name == "ett":  # a lucent lumen with a radio-opaque stripe
            out += (
                0.15 * tube
                - 0.06 * _polyline(sc, paths[name], width * 0.5)
                + 0.3 * _polyline(sc, [(a.cx + 0.006, 0.0), (a.cx + 0.006, 0.29)], 0.0015)
            )
        else:
            out += 0.4 * tube
    if n >= 4:  # pacemaker generator box in the left infraclavicular region
        bx, by = a.cx + 0.26, 0.2
        box = soft(0.035 - np.abs(sc.x - bx), 0.003) * soft(0.025 - np.abs(sc.y - by), 0.003)
        out += 1.2 * box
    return out


def draw_aorta(st: Stroke) -> np.ndarray:
    """A wider, more lateral aortic knob and a bulging descending aorta."""
    sc = st.scene
    a = sc.anatomy
    grow = st.p("grow", 0.6) * (0.4 + 0.6 * st.severity)
    kx, ky = a.cx + a.mediastinal_shift + 0.065 + 0.03 * grow, 0.3
    kr = 0.032 * a.aortic_knob * (1 + grow)
    knob = soft(kr - np.hypot(sc.x - kx, (sc.y - ky) * 1.15), 0.006)
    desc_x = a.cx + 0.055 + 0.04 * grow * np.sin(np.clip((sc.y - 0.3) / 0.3, 0, 1) * np.pi)
    desc = (
        soft(desc_x - sc.x + 0.01, 0.006) * soft(sc.x - a.cx, 0.01) * soft(sc.y - 0.3, 0.02) * soft(0.62 - sc.y, 0.02)
    )
    out = 0.9 * np.maximum(knob, desc) * sc.lung_total
    if st.p("calcified", False):
        d = np.hypot(sc.x - kx, (sc.y - ky) * 1.15)
        crescent = soft(0.003 - np.abs(d - kr * 0.9), 0.002) * (sc.y < ky)
        out = out * 0 + 0.7 * crescent * (0.5 + 0.5 * st.severity)
    return out


def draw_free_air(st: Stroke) -> np.ndarray:
    """Pneumoperitoneum: a lucent crescent under the hemidiaphragm(s)."""
    sc = st.scene
    out = np.zeros_like(sc.x)
    for side in st.sides:
        dome = sc.dome_y(side)
        th = 0.008 + 0.025 * st.severity
        crescent = soft(sc.y - dome - 0.006, 0.003) * soft(dome + 0.006 + th - sc.y, 0.006)
        dx = sc.lateral(side)
        out += -0.45 * crescent * soft(dx - 0.06, 0.02) * soft(sc.anatomy.thorax_half_width * 0.95 - dx, 0.02)
    return out


def draw_subcutaneous_air(st: Stroke) -> np.ndarray:
    """Streaky branching lucencies dissecting the soft tissues."""
    sc = st.scene
    f = smooth_field(st.rng, 30, sc.size)
    streaks = soft(0.18 - np.abs(np.sin(sc.y * 70 + 2.5 * f + sc.x * 20)), 0.1) * soft(f + 0.6 - 0.8 * st.severity, 0.3)
    return -(0.2 + 0.2 * st.severity) * streaks * sc.body_thickness


def draw_pleural_thickening(st: Stroke) -> np.ndarray:
    sc = st.scene
    out = np.zeros_like(sc.x)
    for side in st.sides:
        d = sc.lung_outline(side)
        th = 0.005 + 0.016 * st.severity * (0.6 + 0.4 * smooth_field(st.rng, 10, sc.size))
        out += 0.75 * soft(th - d, 0.004) * sc.lungs[side] * soft(sc.lateral(side) - 0.1, 0.02)
    return out


def draw_hilar(st: Stroke) -> np.ndarray:
    """Lobulated hilar enlargement (or enlarged central pulmonary arteries with pruned periphery)."""
    sc = st.scene
    out = np.zeros_like(sc.x)
    lob = smooth_field(st.rng, 30, sc.size)
    for side in st.sides:
        hx, hy = sc.hilum_point(side)
        r = 0.025 + 0.03 * st.severity
        d = np.hypot((sc.x - hx) * 1.3, sc.y - hy) / r
        out += 0.5 * soft(1 - d + 0.15 * lob, 0.3)
        if st.p("pruning", False):
            t = np.hypot(sc.x - hx, sc.y - hy)
            out -= 0.08 * st.severity * sc.vessels * soft(t - 0.12, 0.05) * sc.lungs[side]
    return out


def draw_pneumomediastinum(st: Stroke) -> np.ndarray:
    sc = st.scene
    a = sc.anatomy
    out = np.zeros_like(sc.x)
    hx, hy = a.heart_center
    for side in (PATIENT_RIGHT, PATIENT_LEFT):
        edge = a.cx + a.mediastinal_shift + side * (a.mediastinum_half_width + 0.008)
        out += (
            -(0.15 + 0.2 * st.severity)
            * soft(0.003 + 0.003 * st.severity - np.abs(sc.x - edge), 0.002)
            * soft(sc.y - 0.1, 0.02)
            * soft(hy - sc.y, 0.03)
        )
    return out


def draw_fill(st: Stroke) -> np.ndarray:
    """Opaque region (pneumonectomy: an opaque hemithorax; a box drawn as homogeneous density)."""
    sc = st.scene
    return (
        st.p("density", 0.9) * (0.6 + 0.4 * st.severity) * st.region * (0.95 * sc.lung_total + 0.1)
        - 0.1 * sc.vessels * st.region
    )


def draw_ellipse_fill(st: Stroke) -> np.ndarray:
    """Homogeneous density in the ellipse inscribed in the region's bounding box (a heart in a box)."""
    sc = st.scene
    rows, cols = np.nonzero(st.region > 0.5)
    if rows.size == 0:
        return np.zeros_like(sc.x)
    y0, y1 = sc.image_y[rows.min(), 0], sc.image_y[rows.max(), 0]
    x0, x1 = sc.image_x[0, cols.min()], sc.image_x[0, cols.max()]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1e-3), max((y1 - y0) / 2, 1e-3)
    e = soft(1 - np.hypot((sc.image_x - cx) / rx, (sc.image_y - cy) / ry), 0.05)
    return st.p("density", 0.9) * e * (0.95 * sc.lung_total + 0.05)


def draw_rings(st: Stroke) -> np.ndarray:
    """Bronchiectasis / peribronchial cuffing: many small thick-walled rings and tram tracks."""
    sc = st.scene
    out = np.zeros_like(sc.x)
    n = int(st.p("count", 6)) + int(round(10 * st.severity))
    for x, y in _sample_points(st, n):
        r = st.p("radius", 0.009) * st.rng.uniform(0.7, 1.3)
        d = np.hypot(sc.x - x, sc.y - y)
        out += st.p("density", 0.3) * soft(st.p("wall", 0.003) - np.abs(d - r), 0.002)
    return out * _lung_air(sc)


def draw_sternotomy(st: Stroke) -> np.ndarray:
    sc = st.scene
    a = sc.anatomy
    out = np.zeros_like(sc.x)
    n = 3 + int(round(3 * st.severity))
    for k in range(n):
        y = 0.24 + k * 0.055
        d = np.hypot((sc.x - a.cx) * 0.8, sc.y - y)
        out += 1.0 * soft(0.003 - np.abs(d - 0.009), 0.002)
    return out


def draw_rods(st: Stroke) -> np.ndarray:
    """Spinal fusion: paired rods along the spine with pedicle screws."""
    sc = st.scene
    xs = sc.spine_x()
    top, bottom = 0.35 - 0.15 * st.severity, 0.75
    out = np.zeros_like(sc.x)
    for side in (-1, 1):
        rod = (
            soft(0.004 - np.abs(sc.x - xs - side * 0.022), 0.002) * soft(sc.y - top, 0.005) * soft(bottom - sc.y, 0.005)
        )
        out += 1.1 * rod
    screws = soft(0.006 - np.abs(((sc.y - top) / 0.05) % 1.0 - 0.5) * 0.05, 0.003) * soft(
        0.03 - np.abs(sc.x - xs), 0.003
    )
    out += 0.6 * screws * soft(sc.y - top, 0.005) * soft(bottom - sc.y, 0.005)
    return out


def draw_implants(st: Stroke) -> np.ndarray:
    sc = st.scene
    a = sc.anatomy
    out = np.zeros_like(sc.x)
    for side in st.sides:
        x, y = a.cx + side * 0.21, a.dome_top(side) - 0.06
        r = 0.07 + 0.03 * st.severity
        d = np.hypot(sc.x - x, (sc.y - y) * 1.2) / r
        out += 0.22 * soft(1 - d, 0.08) + 0.15 * soft(0.04 - np.abs(d - 1), 0.03)
    return out


def draw_soft_tissue_loss(st: Stroke) -> np.ndarray:
    """Mastectomy: the breast shadow missing on one side (lower lateral chest more lucent)."""
    sc = st.scene
    return -(0.1 + 0.08 * st.severity) * st.region * sc.body_thickness


def draw_foreign_body(st: Stroke) -> np.ndarray:
    sc = st.scene
    out = np.zeros_like(sc.x)
    for x, y in _sample_points(st, 1):
        r = 0.006 + 0.01 * st.severity
        shape = soft(r - np.maximum(np.abs(sc.x - x), np.abs(sc.y - y) * 0.6), 0.002)
        out += 1.4 * shape
    return out


def draw_hump(st: Stroke) -> np.ndarray:
    """Eventration: a focal smooth hump of one hemidiaphragm."""
    sc = st.scene
    a = sc.anatomy
    out = np.zeros_like(sc.x)
    for side in st.sides:
        dome = sc.dome_y(side)
        x0 = a.cx + side * a.thorax_half_width * 0.35
        h = (0.02 + 0.04 * st.severity) * np.exp(-(((sc.x - x0) / 0.06) ** 2))
        out += 0.95 * soft(sc.y - (dome - h), 0.004) * sc.lungs[side]
    return out


def draw_epicardial_fat(st: Stroke) -> np.ndarray:
    sc = st.scene
    a = sc.anatomy
    hx, hy = a.heart_center
    x, y = a.cx + a.heart_left_extent * 0.9, a.dome_top_left - 0.01
    d = np.hypot(sc.x - x, (sc.y - y) * 1.5)
    pad = soft(0.025 + 0.025 * st.severity - d, 0.01)
    return 0.4 * pad * sc.lung_total - 0.05 * pad * sc.heart


DRAWERS = {
    "opacity": draw_opacity,
    "nodule": draw_nodule,
    "effusion": draw_effusion,
    "pneumothorax": draw_pneumothorax,
    "edema": draw_edema,
    "reticular": draw_reticular,
    "linear": draw_linear,
    "lucency": draw_lucency,
    "cavity": draw_cavity,
    "fracture": draw_fracture,
    "hernia": draw_hernia,
    "devices": draw_devices,
    "aorta": draw_aorta,
    "free_air": draw_free_air,
    "subcutaneous_air": draw_subcutaneous_air,
    "pleural_thickening": draw_pleural_thickening,
    "hilar": draw_hilar,
    "pneumomediastinum": draw_pneumomediastinum,
    "fill": draw_fill,
    "ellipse_fill": draw_ellipse_fill,
    "rings": draw_rings,
    "sternotomy": draw_sternotomy,
    "rods": draw_rods,
    "implants": draw_implants,
    "soft_tissue_loss": draw_soft_tissue_loss,
    "foreign_body": draw_foreign_body,
    "hump": draw_hump,
    "epicardial_fat": draw_epicardial_fat,
}

# region functions of drawers whose footprint is fixed anatomy, not the location string
DRAWER_REGIONS = {"devices": device_region}


# -- modifiers -------------------------------------------------------------------------------
def _box(sc: Scene, x0, x1, y0, y1) -> np.ndarray:
    return (soft(sc.x - x0, 0.01) * soft(x1 - sc.x, 0.01) * soft(sc.y - y0, 0.01) * soft(y1 - sc.y, 0.01)).astype(
        np.float32
    )


def modify_heart(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    """Cardiomegaly: CTR from 0.52 (minimal) to 0.66 (severe); pericardial effusion is globular."""
    target = params.get("ctr", 0.52) + params.get("ctr_gain", 0.16) * sev
    out = a.with_ctr(max(target, a.cardiothoracic_ratio))
    if params.get("globular", False):
        out = replace(
            out, heart_tilt=out.heart_tilt * (1 - 0.7 * sev), heart_half_height=out.heart_half_height * (1 + 0.15 * sev)
        )
    return out


def region_heart(sc: Scene, sides, params: dict) -> np.ndarray:
    a = sc.base
    big = a.with_ctr(0.72)
    rx, ry = big.heart_radii
    hx, hy = big.heart_center
    top = min(hy - ry * 1.25, a.heart_center[1] - a.heart_radii[1] * 1.3) - 0.03
    return _box(
        sc,
        a.cx - big.heart_right_extent - 0.04,
        a.cx + big.heart_left_extent + 0.05,
        top,
        max(a.dome_top_left, a.dome_top_right) + a.dome_depth + 0.06,
    )


def modify_hyperinflation(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    """Emphysema / COPD / hyperinflation: lucent lungs, fewer markings, low flat domes."""
    return replace(
        a,
        lung_lucency=a.lung_lucency + params.get("lucency", 0.12) * (0.4 + 0.6 * sev),
        markings=a.markings * (1 - params.get("pruning", 0.45) * sev),
        dome_top_right=a.dome_top_right + 0.05 * sev,
        dome_top_left=a.dome_top_left + 0.05 * sev,
        dome_depth=a.dome_depth * (1 - 0.5 * sev),
        heart_cy=a.heart_cy + 0.045 * sev,  # the heart hangs lower (and narrower) with the domes
        heart_left_extent=a.heart_left_extent * (1 - 0.1 * sev),
    )


def region_thorax(sc: Scene, sides, params: dict) -> np.ndarray:
    a = sc.base
    w = a.thorax_half_width
    low = max(a.dome_top_right, a.dome_top_left) + a.dome_depth + 0.16
    return _box(sc, a.cx - w - 0.04, a.cx + w + 0.04, -1.0, low)


def modify_domes(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    """Elevated (raise > 0) or lowered/flattened hemidiaphragm(s)."""
    raise_by = params.get("raise", 0.06) * (0.4 + 0.6 * sev)
    out = a
    for side in sides:
        out = out.with_dome(side, out.dome_top(side) - raise_by)
    if params.get("flatten", 0):
        out = replace(out, dome_depth=out.dome_depth * (1 - params["flatten"] * sev))
    return out


def region_domes(sc: Scene, sides, params: dict) -> np.ndarray:
    a = sc.base
    w = a.thorax_half_width
    out = np.zeros_like(sc.x)
    for side in sides:
        top = a.dome_top(side) - 0.11
        x0, x1 = sorted((a.cx - side * 0.02, a.cx + side * (w + 0.04)))
        out = np.maximum(out, _box(sc, x0, x1, top, a.dome_top(side) + a.dome_depth + 0.16))
    return out


def modify_spine(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    curve = params.get("curve", 0.0) * (0.3 + 0.7 * sev)
    direction = sides[0] if len(sides) == 1 else (1 if a.seed % 2 else -1)
    return replace(
        a,
        spine_curve=a.spine_curve + direction * curve,
        spine_degeneration=min(1.0, a.spine_degeneration + params.get("degeneration", 0.0) * (0.4 + 0.6 * sev)),
    )


def region_spine(sc: Scene, sides, params: dict) -> np.ndarray:
    a = sc.base
    return _box(sc, a.cx - 0.11, a.cx + 0.11, -1, 2)


def modify_mediastinum(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    shift = params.get("shift", 0.0) * (0.3 + 0.7 * sev)
    direction = sides[0] if len(sides) == 1 else 1
    return replace(
        a,
        mediastinal_shift=a.mediastinal_shift + direction * shift,
        mediastinum_half_width=a.mediastinum_half_width + params.get("widen", 0.0) * (0.3 + 0.7 * sev),
    )


def region_mediastinum(sc: Scene, sides, params: dict) -> np.ndarray:
    a = sc.base
    if params.get("shift", 0):  # the heart, mediastinum, trachea and hila (so the vessels) all move
        return region_thorax(sc, sides, params)
    reach = 1.5 * (a.mediastinum_half_width + params.get("widen", 0)) + 0.04
    return _box(sc, a.cx - reach, a.cx + reach + 0.02, 0.0, a.heart_center[1] + 0.1)


def modify_bones(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    return replace(a, bone_density=a.bone_density * (1 - params.get("loss", 0.45) * (0.4 + 0.6 * sev)))


def region_everything(sc: Scene, sides, params: dict) -> np.ndarray:
    return np.ones_like(sc.x)


def modify_volume_loss(a: Anatomy, sides, sev: float, params: dict) -> Anatomy:
    out = modify_domes(a, sides, sev, {"raise": params.get("raise", 0.04)})
    if len(sides) == 1:
        out = replace(
            out, mediastinal_shift=out.mediastinal_shift + sides[0] * params.get("shift", 0.015) * (0.3 + 0.7 * sev)
        )
    return out


def region_volume_loss(sc: Scene, sides, params: dict) -> np.ndarray:
    return region_thorax(sc, sides, params) if len(sides) == 1 else region_domes(sc, sides, params)


MODIFIERS = {
    "heart": (modify_heart, region_heart),
    "hyperinflation": (modify_hyperinflation, region_thorax),
    "domes": (modify_domes, region_domes),
    "spine": (modify_spine, region_spine),
    "mediastinum": (modify_mediastinum, region_mediastinum),
    "bones": (modify_bones, region_everything),
    "volume_loss": (modify_volume_loss, region_volume_loss),
}


def both_sides() -> tuple[int, ...]:
    return (PATIENT_RIGHT, PATIENT_LEFT)


__all__ = ["DRAWERS", "DRAWER_REGIONS", "MODIFIERS", "Stroke", "zone_mask", "both_sides"]
