"""Phantom anatomy: a small dataclass of per-patient parameters and the masks computed from it.

Coordinates are normalised to [0, 1] (x to the image right, y down), so every image size shows
the same picture. The view is PA: the patient's RIGHT is on the image LEFT. Inside this package
``side = -1`` means patient right (image left) and ``side = +1`` patient left (image right).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

import numpy as np

from medfilip.phantom.settings import PhantomConfig

PATIENT_RIGHT = -1  # image left on a PA radiograph
PATIENT_LEFT = +1  # image right


@dataclass(frozen=True)
class Anatomy:
    """Per-patient geometry and exposure (all lengths in image fractions)."""

    seed: int = 0
    cx: float = 0.5  # body midline
    rotation: float = 0.0  # degrees, in-plane, about the image centre
    body_half_width: float = 0.44
    thorax_half_width: float = 0.33  # inner rib cage at its widest (lateral lung edges at the bases)
    apex_y: float = 0.13
    dome_top_right: float = 0.66  # patient right hemidiaphragm (image left) sits higher
    dome_top_left: float = 0.685
    dome_depth: float = 0.085  # costophrenic angle lies this far below the dome top
    rib_span: float = 0.64  # apex to costophrenic angle of the skeleton (ribs do not move with the domes)
    heart_right_extent: float = 0.1  # right heart border, from the midline (towards the image left)
    heart_left_extent: float = 0.19  # left heart border, from the midline (towards the image right)
    heart_half_height: float = 0.105
    heart_cy: float = 0.627  # heart centre height (resting on the left dome of the unmodified patient)
    heart_tilt: float = 0.35  # radians: apex points down and to the patient's left
    mediastinum_half_width: float = 0.06
    mediastinal_shift: float = 0.0  # + moves heart/mediastinum/trachea to the image right
    aortic_knob: float = 1.0  # radius scale of the aortic knob
    spine_curve: float = 0.0  # scoliosis amplitude (image fraction)
    spine_degeneration: float = 0.0  # osteophytes / endplate sclerosis 0..1
    lung_lucency: float = 1.0  # > 1: emphysema / hyperinflation
    markings: float = 1.0  # bronchovascular marking strength
    bone_density: float = 1.0  # < 1: osteopenia
    exposure: float = 1.0  # overall brightness gain
    contrast: float = 1.0  # attenuation gain
    noise: float = 0.012

    def dome_top(self, side: int) -> float:
        return self.dome_top_right if side == PATIENT_RIGHT else self.dome_top_left

    def with_dome(self, side: int, value: float) -> Anatomy:
        return replace(self, **{"dome_top_right" if side == PATIENT_RIGHT else "dome_top_left": value})

    @property
    def heart_center(self) -> tuple[float, float]:
        hx = self.cx + self.mediastinal_shift + (self.heart_left_extent - self.heart_right_extent) / 2
        return hx, self.heart_cy

    @property
    def heart_radii(self) -> tuple[float, float]:
        """Ellipse radii such that the tilted ellipse spans the stated horizontal extents."""
        half_width = (self.heart_left_extent + self.heart_right_extent) / 2
        t = self.heart_tilt
        # horizontal half-extent of a tilted ellipse: sqrt(rx^2 cos^2 + ry^2 sin^2)
        rx2 = max(half_width**2 - (self.heart_half_height * np.sin(t)) ** 2, 1e-4) / np.cos(t) ** 2
        return float(np.sqrt(rx2)), self.heart_half_height

    @property
    def cardiothoracic_ratio(self) -> float:
        """Widest heart diameter over the widest inner thoracic diameter (the geometric definition)."""
        return (self.heart_left_extent + self.heart_right_extent) / (2 * self.thorax_half_width)

    def with_ctr(self, ctr: float) -> Anatomy:
        """The same patient with the heart widened (both borders, the left more) to ``ctr``."""
        width = ctr * 2 * self.thorax_half_width
        grow = width - (self.heart_left_extent + self.heart_right_extent)
        return replace(
            self,
            heart_left_extent=self.heart_left_extent + 0.65 * grow,
            heart_right_extent=self.heart_right_extent + 0.35 * grow,
            heart_half_height=self.heart_half_height * (1 + 0.6 * grow / max(width, 1e-3)),
        )


def sample_anatomy(seed: int, settings: PhantomConfig | None = None) -> Anatomy:
    """A patient drawn from ``seed``: body size, heart size, rotation, exposure, contrast, lung height."""
    s = settings or PhantomConfig()
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xA7A7])
    z = rng.standard_normal(8)
    body = 1 + s.body_size_variation * np.clip(z[0], -2, 2)
    heart = 1 + s.heart_size_variation * np.clip(z[1], -2, 2)
    lung = s.lung_height_variation * np.clip(z[2], -2, 2)
    base = Anatomy()
    thorax = base.thorax_half_width * min(body, 1.12)
    return Anatomy(
        seed=int(seed),
        cx=0.5 + 0.008 * float(np.clip(z[3], -2, 2)),
        rotation=float(rng.uniform(-1, 1) * s.rotation_degrees),
        body_half_width=base.body_half_width * body,
        thorax_half_width=thorax,
        apex_y=base.apex_y - 0.3 * lung,
        dome_top_right=base.dome_top_right + lung,
        dome_top_left=base.dome_top_left + lung + 0.006 * float(np.clip(z[4], -2, 2)),
        rib_span=base.rib_span + 1.3 * lung,
        heart_right_extent=base.heart_right_extent * heart * thorax / base.thorax_half_width,
        heart_left_extent=base.heart_left_extent * heart * thorax / base.thorax_half_width,
        heart_half_height=base.heart_half_height * heart,
        heart_cy=base.dome_top_left + lung - 0.55 * base.heart_half_height * heart,
        exposure=1 + s.exposure_variation * float(np.clip(z[5], -2, 2)),
        contrast=1 + s.contrast_variation * float(np.clip(z[6], -2, 2)),
        noise=s.noise,
        aortic_knob=1 + 0.1 * float(np.clip(z[7], -2, 2)),
    )


# -- grids and helpers --------------------------------------------------------------------
@lru_cache(maxsize=8)
def image_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (X, Y) in [0, 1], float32, read-only."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    x, y = np.meshgrid(c, c)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@lru_cache(maxsize=32)
def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) linear interpolation weights from a src-point grid to dst pixel centres."""
    pos = (np.arange(dst) + 0.5) / dst * src - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] += 1 - w
    m[np.arange(dst), hi] += w
    m.flags.writeable = False
    return m


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small square grid to (size, size): the same picture at every size."""
    m = _interp_matrix(grid.shape[0], size)
    return (m @ grid.astype(np.float32) @ m.T).astype(np.float32)


def smooth_field(rng: np.random.Generator, res: int, size: int, passes: int = 1) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field: white noise on a res x res grid, box-smoothed, upsampled."""
    g = rng.standard_normal((res, res)).astype(np.float32)
    for _ in range(passes):
        g = (g + np.roll(g, 1, 0) + np.roll(g, -1, 0) + np.roll(g, 1, 1) + np.roll(g, -1, 1)) / 5
    g /= g.std() + 1e-6
    return upsample(g, size)


def soft(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside indicator from a signed distance (positive inside), edge ``width`` wide."""
    if np.ndim(d) == 0:
        return min(max(0.5 + float(d) / width, 0.0), 1.0)
    v = d * np.float32(1.0 / width)
    v += np.float32(0.5)
    np.maximum(v, 0, out=v)
    np.minimum(v, 1, out=v)
    return v


def stable_seed(*parts: object) -> list[int]:
    """A SeedSequence entropy list from ints and strings (crc32 of strings: stable across runs)."""
    out = []
    for p in parts:
        out.append(zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF)
    return out


EDGE = 0.006  # soft edge width of anatomical outlines (image fraction)


class Window:
    """A rectangular part of the scene (in patient coordinates, padded for the rotation)."""

    def __init__(self, scene: Scene, x0: float, x1: float, y0: float, y1: float):
        n = scene.size
        m = scene.margin
        r0, r1 = max(int((y0 - m) * n), 0), min(int(np.ceil((y1 + m) * n)), n)
        c0, c1 = max(int((x0 - m) * n), 0), min(int(np.ceil((x1 + m) * n)), n)
        r1, c1 = max(r1, r0), max(c1, c0)
        self.slices = (slice(r0, r1), slice(c0, c1))
        self.x = scene.x[self.slices]
        self.y = scene.y[self.slices]
        self.shape = (n, n)

    def paste(self, part: np.ndarray) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        out[self.slices] = part
        return out


class Scene:
    """An anatomy rendered at one size: coordinate grids and the anatomical masks (float, 0..1)."""

    def __init__(self, anatomy: Anatomy, size: int, base: Anatomy | None = None):
        self.anatomy = anatomy
        self.base = base or anatomy  # before any finding modified it (modifier regions use it)
        self.size = int(size)
        self.image_x, self.image_y = image_grid(self.size)
        t = np.deg2rad(anatomy.rotation)
        self.margin = 0.75 * abs(float(np.sin(t))) + 2.0 / self.size
        if abs(anatomy.rotation) > 1e-6:
            c, s = np.float32(np.cos(t)), np.float32(np.sin(t))
            dx, dy = self.image_x - 0.5, self.image_y - 0.5
            self.x = c * dx - s * dy + 0.5
            self.y = s * dx + c * dy + 0.5
        else:
            self.x, self.y = self.image_x, self.image_y
        self._cache: dict = {}

    def window(self, x0: float, x1: float, y0: float, y1: float) -> Window:
        return Window(self, x0, x1, y0, y1)

    def rng(self, *key: object) -> np.random.Generator:
        return np.random.default_rng(stable_seed(self.anatomy.seed, *key))

    def texture(self, key: str, res: int, passes: int = 1) -> np.ndarray:
        k = ("texture", key, res, passes)
        if k not in self._cache:
            self._cache[k] = smooth_field(self.rng("texture", key), res, self.size, passes)
        return self._cache[k]

    # -- outlines ---------------------------------------------------------------------------
    def lateral(self, side: int, anatomy: Anatomy | None = None, x: np.ndarray | None = None) -> np.ndarray:
        """Distance from the body midline towards ``side`` (negative on the other side)."""
        a = anatomy or self.anatomy
        return ((self.x if x is None else x) - a.cx) * side

    def dome_y(self, side: int, anatomy: Anatomy | None = None, x: np.ndarray | None = None) -> np.ndarray:
        """Height of the hemidiaphragm of ``side`` at every x: a dome whose lateral end is the costophrenic angle."""
        key = ("dome", side)
        if anatomy is None and x is None and key in self._cache:
            return self._cache[key]
        a = anatomy or self.anatomy
        dx = self.lateral(side, a, x)
        w = a.thorax_half_width
        peak = 0.45 * w
        lat = np.maximum((dx - peak) * (1 / (w - peak)), 0)
        med = np.minimum(np.maximum((peak - dx) * (1 / peak), 0), 1)
        out = a.dome_top(side) + a.dome_depth * lat**2.2 + 0.35 * a.dome_depth * med**2
        if anatomy is None and x is None:
            self._cache[key] = out
        return out

    def lung_outline(self, side: int, anatomy: Anatomy | None = None) -> np.ndarray:
        """Signed distance-like value inside the rib cage outline of one hemithorax (down to the dome)."""
        key = ("outline", side)
        if anatomy is None and key in self._cache:
            return self._cache[key]
        a = anatomy or self.anatomy
        w = a.thorax_half_width
        x0, x1 = sorted((a.cx + side * 0.01, a.cx + side * (w + 0.05)))
        win = self.window(x0, x1, a.apex_y - 0.05, a.dome_top(side) + a.dome_depth + 0.05)
        dx = self.lateral(side, a, x=win.x)
        y = win.y
        apex = a.apex_y + 0.09 * ((dx - 0.5 * w) / (0.38 * w)) ** 2
        lat = w * (0.62 + 0.38 * np.sqrt(np.minimum(np.maximum((y - a.apex_y) * (1 / 0.42), 0), 1)))
        part = np.minimum(np.minimum(y - apex, lat - dx), np.minimum(self.dome_y(side, a, x=win.x) - y, dx - 0.015))
        d = np.full(self.x.shape, -1.0, np.float32)
        d[win.slices] = part
        if anatomy is None:
            self._cache[key] = d
        return d

    @cached_property
    def hemithorax(self) -> dict[int, np.ndarray]:
        return {s: soft(self.lung_outline(s), EDGE) for s in (PATIENT_RIGHT, PATIENT_LEFT)}

    @cached_property
    def heart(self) -> np.ndarray:
        a = self.anatomy
        hx, hy = a.heart_center
        rx, ry = a.heart_radii
        ext = max(rx, ry) + 0.02
        win = self.window(hx - ext, hx + ext, hy - ext, hy + ext)
        t = a.heart_tilt
        dx, dy = win.x - hx, win.y - hy
        u = (np.cos(t) * dx - np.sin(t) * dy) / rx
        v = (np.sin(t) * dx + np.cos(t) * dy) / ry
        r = np.sqrt(u * u + v * v)
        return win.paste(soft((1 - r) * min(rx, ry), EDGE))

    def _knob_geometry(self) -> tuple[float, float, float]:
        a = self.anatomy
        return a.cx + a.mediastinal_shift + 0.052 + 0.018 * a.aortic_knob, 0.3, 0.034 * a.aortic_knob

    @cached_property
    def knob(self) -> np.ndarray:
        kx, ky, kr = self._knob_geometry()
        win = self.window(kx - kr - 0.02, kx + kr + 0.02, ky - kr - 0.02, ky + kr + 0.02)
        return win.paste(soft(kr - np.hypot(win.x - kx, (win.y - ky) * 1.15), EDGE))

    @cached_property
    def mediastinum(self) -> np.ndarray:
        a = self.anatomy
        mid = a.cx + a.mediastinal_shift
        hx, hy = a.heart_center
        reach = a.mediastinum_half_width * 1.5 + 0.03
        win = self.window(mid - reach, mid + reach, 0.0, hy + 0.08)
        widen = 1 + 0.45 * np.clip((win.y - 0.28) / (hy - 0.28), 0, 1)  # superior mediastinum -> hila
        band = soft(a.mediastinum_half_width * widen - np.abs(win.x - mid - 0.008), EDGE)
        vertical = soft(win.y - 0.06, 0.02) * soft(hy + 0.05 - win.y, EDGE)
        return np.maximum(np.maximum(win.paste(band * vertical), self.knob), self.heart)

    @cached_property
    def lungs(self) -> dict[int, np.ndarray]:
        not_mediastinum = 1 - self.mediastinum
        return {s: self.hemithorax[s] * not_mediastinum for s in self.hemithorax}

    @cached_property
    def lung_total(self) -> np.ndarray:
        return self.lungs[PATIENT_RIGHT] + self.lungs[PATIENT_LEFT]

    @cached_property
    def body_thickness(self) -> np.ndarray:
        """Projected soft-tissue thickness 0..1: neck, sloping shoulders, a cylinder-like torso."""
        a = self.anatomy
        y = self.y
        ramp = np.minimum(np.maximum((y - 0.03) * (1 / 0.22), 0), 1)
        half = 0.085 + (a.body_half_width - 0.085) * np.sqrt(ramp * (2 - ramp)) ** 0.7
        r = np.abs(self.x - a.cx) / half
        t = np.sqrt(np.maximum(1 - r * r, 0))
        return (0.35 + 0.65 * t) * soft(1 - r, 0.03)

    def spine_x(self, anatomy: Anatomy | None = None, y: np.ndarray | None = None) -> np.ndarray:
        a = anatomy or self.anatomy
        y = self.y if y is None else y
        return a.cx + a.spine_curve * np.sin(np.pi * np.clip((y - 0.08) / 0.85, 0, 1) * 1.3)

    @cached_property
    def spine(self) -> np.ndarray:
        a = self.anatomy
        reach = abs(a.spine_curve) + 0.05
        win = self.window(a.cx - reach, a.cx + reach, 0.0, 1.0)
        y = win.y
        xs = self.spine_x(y=y)
        dx = np.abs(win.x - xs)
        level = (y - 0.06) / 0.05  # one vertebra per 0.05
        f = level - np.floor(level)
        body = soft(0.026 - dx, EDGE) * soft(y - 0.02, 0.02)
        disc = 1 - 0.45 * soft(0.1 - np.abs(f - 0.05), 0.08)
        plates = 1 + (0.4 + 0.8 * a.spine_degeneration) * soft(
            0.05 - np.minimum(np.abs(f - 0.12), np.abs(f - 0.96)), 0.05
        )
        pedicles = soft(0.008 - np.hypot((dx - 0.02) * 1.2, (f - 0.45) * 0.05), 0.005)
        out = body * disc * plates + 0.8 * pedicles
        if a.spine_degeneration > 0:
            out += 1.5 * a.spine_degeneration * soft(0.007 - np.hypot(dx - 0.03, (f - 0.08) * 0.05), 0.006)
        return win.paste(out)

    @cached_property
    def ribs(self) -> np.ndarray:
        """Posterior rib arcs (crossing the lungs) and fainter anterior ribs, with brighter cortices."""
        a = self.anatomy
        out = np.zeros_like(self.x)
        w = a.thorax_half_width
        for side in (PATIENT_RIGHT, PATIENT_LEFT):
            x0, x1 = sorted((a.cx + side * 0.015, a.cx + side * (w * 1.08 + 0.02)))
            bottom = a.apex_y + a.rib_span
            win = self.window(x0, x1, a.apex_y - 0.06, bottom + 0.2)
            y = win.y
            dx = self.lateral(side, x=win.x)
            span = soft(dx - 0.02, 0.01) * soft(w * 1.06 - dx, 0.02)
            height = bottom - a.apex_y + 0.05
            v = y + 0.22 * dx - 1.35 * dx * dx - (a.apex_y - 0.035)
            u = np.clip(v / height, -0.1, 1.3)
            phase = 10.5 * np.sign(u) * np.abs(u) ** 0.9
            f = phase - np.floor(phase)
            band_w = 0.42 + 0.06 * np.clip(phase / 10, 0, 1)
            rib = soft(f, 0.08) * soft(band_w - f, 0.08)
            cortex = soft(0.07 - np.minimum(np.abs(f - 0.03), np.abs(f - band_w + 0.03)), 0.06)
            count = soft(phase + 0.3, 0.3) * soft(11.2 - phase, 0.3)
            post = (0.75 * rib + 0.6 * cortex) * count * span
            # anterior ribs: descend towards the midline from the lateral wall, fade before the sternum
            pa = (y - 0.55 * (w - dx) - (a.apex_y + 0.02)) / ((height / 10.5) * 1.15)
            fa = pa - np.floor(pa)
            ant = soft(fa, 0.1) * soft(0.35 - fa, 0.1) * soft(pa + 0.3, 0.3) * soft(6.5 - pa, 0.3)
            ant *= soft(dx - 0.12, 0.06) * soft(w - dx, 0.02)
            below = soft(self.dome_y(side, x=win.x) + 0.03 - y, 0.04)
            out[win.slices] += (post + 0.35 * ant) * (0.45 + 0.55 * below)
        return out * a.bone_density

    @cached_property
    def clavicles(self) -> np.ndarray:
        a = self.anatomy
        out = np.zeros_like(self.x)
        for side in (PATIENT_RIGHT, PATIENT_LEFT):
            x0, x1 = sorted((a.cx + side * 0.02, a.cx + side * 0.32))
            win = self.window(x0, x1, a.apex_y - 0.06, a.apex_y + 0.08)
            dx = self.lateral(side, x=win.x) - 0.03
            yc = a.apex_y + 0.045 - 0.22 * dx + 0.35 * dx * dx - 0.012 * np.sin(dx / 0.3 * 2 * np.pi)
            thick = 0.011 + 0.006 * soft(0.05 - dx, 0.05)
            dist = np.abs(win.y - yc)
            extent = soft(dx, 0.01) * soft(0.27 - dx, 0.02)
            out[win.slices] += (soft(thick - dist, EDGE) + 0.5 * soft(0.004 - np.abs(dist - thick), 0.003)) * extent
        return out * a.bone_density

    @cached_property
    def trachea(self) -> np.ndarray:
        a = self.anatomy
        mid = a.cx + a.mediastinal_shift * 0.6
        carina = 0.36
        win = self.window(mid - 0.09, mid + 0.09, 0.0, carina + 0.09)
        y = win.y
        main = soft(0.016 - np.abs(win.x - mid), EDGE) * soft(carina - y, EDGE) * soft(y, 0.02)
        bronchi = np.zeros_like(y)
        for side, slope in ((PATIENT_RIGHT, 0.9), (PATIENT_LEFT, 0.6)):
            dx = (win.x - mid) * side
            along = soft(y - carina + 0.01, EDGE) * soft(carina + 0.07 - y, 0.01) * soft(dx, EDGE)
            bronchi += soft(0.011 - np.abs(dx - (y - carina) * slope), EDGE) * along
        return win.paste(np.minimum(main + bronchi, 1))

    def hilum_point(self, side: int) -> tuple[float, float]:
        a = self.anatomy
        return a.cx + a.mediastinal_shift * 0.5 + side * (0.095 + 0.015 * (side > 0)), 0.42

    @cached_property
    def vessels(self) -> np.ndarray:
        """Bronchovascular markings radiating from the hila, fading to the periphery."""
        a = self.anatomy
        out = np.zeros_like(self.x)
        wobble = self.texture("vessel_wobble", 12)
        w = a.thorax_half_width
        for side in (PATIENT_RIGHT, PATIENT_LEFT):
            hx, hy = self.hilum_point(side)
            x0, x1 = sorted((a.cx, a.cx + side * (w + 0.02)))
            win = self.window(x0, x1, a.apex_y, a.dome_top(side) + a.dome_depth + 0.01)
            dx, dy = win.x - hx, win.y - hy
            r = np.sqrt(dx * dx + dy * dy) + 1e-4
            theta = np.arctan2(dy, dx * side)
            wob = wobble[win.slices]
            stripes = np.cos(theta * 15 + 1.6 * wob + 9 * r)
            branches = np.cos(theta * 27 - 1.3 * wob + 4 * r) * soft(r - 0.09, 0.04)
            lines = np.maximum(np.maximum(stripes, branches), 0) ** 8
            decay = np.exp(-r / 0.16) * soft(r - 0.015, 0.02)
            out[win.slices] += (0.35 + lines) * decay * self.lungs[side][win.slices]
        return out

    @cached_property
    def hila(self) -> np.ndarray:
        out = np.zeros_like(self.x)
        for side in (PATIENT_RIGHT, PATIENT_LEFT):
            hx, hy = self.hilum_point(side)
            win = self.window(hx - 0.06, hx + 0.06, hy - 0.06, hy + 0.06)
            out[win.slices] += soft(0.03 - np.hypot((win.x - hx) * 1.6, win.y - hy), 0.02)
        return out

    @cached_property
    def abdomen(self) -> np.ndarray:
        """Below both domes (soft tissue of the upper abdomen)."""
        inside = np.zeros_like(self.x)
        for side in (PATIENT_RIGHT, PATIENT_LEFT):
            inside = np.maximum(
                inside, soft(self.y - self.dome_y(side), EDGE) * soft(self.lateral(side) + 0.005, 0.003)
            )
        return inside

    @cached_property
    def gastric_bubble(self) -> np.ndarray:
        a = self.anatomy
        bx = a.cx + 0.17
        by = a.dome_top_left + 0.05
        win = self.window(bx - 0.06, bx + 0.06, by - 0.05, by + 0.05)
        bubble = soft(0.04 - np.hypot((win.x - bx) * 0.9, (win.y - by) * 1.4), 0.012)
        below = soft(win.y - self.dome_y(PATIENT_LEFT, x=win.x) - 0.008, 0.006)
        return win.paste(bubble * below)
