"""A controlled world: categories in text families, their prototypes, the ρ permutation, the data.

- 16 categories in 4 families (airspace, fluid, nodular, interstitial), each family's 1st, 2nd,
  3rd category trained at falling frequency, the 4th held out (zero-shot only).
- 16 prototypes over the primitives of ``medfilip.phantom.primitives`` (``medfilip.worlds.prototypes``:
  fitted once so that the permutation can reach high correlations).
- Text distance between categories: 1 - calibrated E_sim cosine of their template texts
  ("moderate X, where X is <knowledge>"). Visual distance: the RMS pixel difference of two
  prototypes rendered on the same patients (moderate severity, so it does not depend on the gain).
- A permutation σ gives category c the prototype σ(c); a seeded annealing over swaps picks the σ
  whose Mantel (Pearson, upper triangle) correlation of the two distances is closest to ρ. It
  keeps the set of visual distances: only which categories look alike changes.
- Labels: the real template (``labels.templates.render_label``), severity and location always stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from medfilip.phantom.anatomy import stable_seed
from medfilip.phantom.primitives import SEVERITY_LEVELS, Placement, render_primitive, severity_shift
from medfilip.worlds.prototypes import PROTOTYPES
from medfilip.worlds.settings import WorldsConfig

FAMILIES: dict[str, tuple[str, ...]] = {
    "airspace": ("consolidation", "pneumonia", "infiltrate", "airspace disease"),
    "fluid": ("pleural effusion", "pulmonary edema", "pulmonary congestion", "blunted costophrenic angle"),
    "nodular": ("nodule", "mass", "granuloma", "calcification"),
    "interstitial": ("fibrosis", "interstitial lung disease", "scarring", "peribronchial thickening"),
}
CATEGORIES: tuple[str, ...] = tuple(c for members in FAMILIES.values() for c in members)
FAMILY_OF: dict[str, str] = {c: f for f, members in FAMILIES.items() for c in members}
ROLES = ("frequent", "middle", "rare", "held_out")  # position within its family
SEVERITIES = tuple(SEVERITY_LEVELS)


def role(category: str) -> str:
    return ROLES[FAMILIES[FAMILY_OF[category]].index(category)]


def trained_categories() -> list[str]:
    return [c for c in CATEGORIES if role(c) != "held_out"]


def held_out_combos() -> set[tuple[str, str]]:
    """One (category, severity) per trained category never shown in training (rotating severity)."""
    return {(c, SEVERITIES[i % len(SEVERITIES)]) for i, c in enumerate(trained_categories())}


def category_text(category: str, explanation: str) -> str:
    from medfilip.labels.templates import render_label

    return render_label(category, severity="moderate", explanation=explanation)


def label_text(category: str, severity: str, location: str, explanation: str) -> str:
    from medfilip.labels.templates import render_label

    return render_label(category, severity=severity, location=location, explanation=explanation)


# -- distances and the Mantel correlation -------------------------------------------------
def upper(d: np.ndarray) -> np.ndarray:
    return d[np.triu_indices(d.shape[0], k=1)]


def mantel(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the upper triangles of two distance matrices."""
    return float(np.corrcoef(upper(a), upper(b))[0, 1])


def render_bank(
    prototypes: np.ndarray, patients: list[int], cfg: WorldsConfig, *, severity: str = "moderate", gain: float = 1.0
) -> np.ndarray:
    """(P prototypes, patients, size, size) float renders, each patient at its own zone and side."""
    out = np.zeros((len(prototypes), len(patients), cfg.size, cfg.size), np.float32)
    for j, patient in enumerate(patients):
        rng = np.random.default_rng(stable_seed("world-placement", patient))
        placement = Placement(
            cfg.zones[int(rng.integers(len(cfg.zones)))], cfg.sides[int(rng.integers(len(cfg.sides)))], severity
        )
        for i, proto in enumerate(prototypes):
            out[i, j] = render_primitive(proto, placement, size=cfg.size, seed=patient, gain=gain) / 255.0
    return out


def rendered_distances(bank: np.ndarray) -> np.ndarray:
    """(P, P) mean over patients of the RMS pixel difference between two renders of the same patient."""
    flat = bank.reshape(bank.shape[0], bank.shape[1], -1).astype(np.float64)
    d = np.zeros((bank.shape[0], bank.shape[0]))
    for i in range(bank.shape[0]):
        d[i] = np.sqrt(((flat[i][None] - flat) ** 2).mean(-1)).mean(-1)
    return d


def search_permutation(
    visual: np.ndarray, text: np.ndarray, rho: float, *, steps: int, seed: int, restarts: int = 4
) -> np.ndarray:
    """σ (σ[c] = prototype of category c) whose Mantel r(visual[σ][:, σ], text) is closest to ``rho``.

    Simulated annealing over swaps of two categories' prototypes, seeded, from ``restarts`` starts
    (the identity, then random permutations); the best σ seen is kept.
    """
    n = visual.shape[0]
    rng = np.random.default_rng(stable_seed("world-permutation", seed, round(rho, 6)))
    iu = np.triu_indices(n, k=1)
    t = upper(text)
    t = (t - t.mean()) / (t.std() * math.sqrt(t.size))

    def corr(s: np.ndarray) -> float:
        v = visual[np.ix_(s, s)][iu]
        return float(((v - v.mean()) / (v.std() * math.sqrt(v.size)) * t).sum())

    best, best_cost = np.arange(n), abs(corr(np.arange(n)) - rho)
    temp0 = 0.2
    for restart in range(max(restarts, 1)):
        sigma = np.arange(n) if restart == 0 else rng.permutation(n)
        cost = abs(corr(sigma) - rho)
        for step in range(steps):
            temp = temp0 * (1 - step / steps) + 1e-4
            i, j = rng.choice(n, 2, replace=False)
            trial = sigma.copy()
            trial[i], trial[j] = trial[j], trial[i]
            c = abs(corr(trial) - rho)
            if c < cost or rng.random() < math.exp(-(c - cost) / temp):
                sigma, cost = trial, c
                if cost < best_cost:
                    best, best_cost = sigma.copy(), cost
    return best


# -- the text side -----------------------------------------------------------------------
@dataclass
class TextSide:
    """The world's label texts and E_sim vectors, and the category-level text distance."""

    labels: list[tuple[str, str, str]]  # (category, severity, location) of each label id
    texts: list[str]
    vectors: np.ndarray  # (L, D) L2-normalised
    category_vectors: np.ndarray  # (16, D)
    temperature: float  # the calibration (temperature) fitted on the label cosines

    @cached_property
    def index(self) -> dict[tuple[str, str, str], int]:
        return {lab: i for i, lab in enumerate(self.labels)}

    def calibrated(self, cos: np.ndarray) -> np.ndarray:
        return np.exp((np.clip(cos, -1, 1) - 1) / self.temperature)

    @cached_property
    def category_distance(self) -> np.ndarray:
        return 1 - self.calibrated(self.category_vectors @ self.category_vectors.T)


def locations(cfg: WorldsConfig) -> list[str]:
    return [Placement(z, s, "mild").location for s in cfg.sides for z in cfg.zones]


def fit_temperature_share(cos: np.ndarray, category: np.ndarray, counts: np.ndarray, share: float) -> float:
    """The temperature whose own-category share of the calibrated rows is ``share`` (embeddings.calibration)."""
    from medfilip.embeddings.calibration import fit_temperature

    same = category[:, None] == category[None, :]
    t, _ = fit_temperature(np.clip(cos, -1, 1), same, counts, share)
    return t


def label_texts(cfg: WorldsConfig, knowledge) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(label (category, severity, location) of each id, its template text), then the 16 category texts."""
    labels = [(c, s, loc) for c in CATEGORIES for s in SEVERITIES for loc in locations(cfg)]
    explanation = {c: knowledge.explanation(c) for c in CATEGORIES}
    texts = [label_text(c, s, loc, explanation[c]) for c, s, loc in labels]
    return labels, texts + [category_text(c, explanation[c]) for c in CATEGORIES]


def build_text_side(cfg: WorldsConfig, encode, knowledge) -> TextSide:
    """Texts from the template and the knowledge dictionary, vectors from ``encode(texts)``."""
    labels, all_texts = label_texts(cfg, knowledge)
    texts, cat_texts = all_texts[: len(labels)], all_texts[len(labels) :]
    vectors = np.asarray(encode(texts + cat_texts), dtype=np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    lab_v, cat_v = vectors[: len(texts)], vectors[len(texts) :]
    cat_id = np.array([CATEGORIES.index(c) for c, _, _ in labels])
    t = fit_temperature_share(lab_v.astype(np.float64) @ lab_v.T, cat_id, np.ones(len(labels)), cfg.calibration_share)
    return TextSide(labels, texts, lab_v, cat_v, t)


def minilm_encoder():
    """E_sim: the shipped MiniLM (offline), as the embeddings stage loads it."""
    from medfilip.embeddings.model import TextEncoder, resolve_model

    encoder = TextEncoder(resolve_model(None), progress=False)
    return encoder.encode


def default_knowledge(path=None):
    """The knowledge dictionary (``path``, else the repository's resources/knowledge/dictionary.yaml)."""
    from pathlib import Path

    from medfilip.knowledge.dictionary import load_knowledge

    path = path or Path(__file__).resolve().parents[2] / "resources/knowledge/dictionary.yaml"
    return load_knowledge(path, CATEGORIES)


# -- samples and label noise ---------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    patient: int
    category: str
    placement: Placement


def draw_samples(cfg: WorldsConfig, split: str, n: int) -> list[Sample]:
    """The world's images before any prototype is chosen: patient, category, severity, location.

    ``train``: trained categories at their family frequency, held-out combinations left out;
    ``test``: every category and combination uniformly, other patients."""
    rng = np.random.default_rng(stable_seed("world-samples", cfg.world_seed, split))
    if split == "train":
        cats = trained_categories()
        w = np.array([cfg.frequencies[ROLES.index(role(c))] for c in cats])
        held = held_out_combos()
    else:
        cats, w, held = list(CATEGORIES), np.ones(len(CATEGORIES)), set()
    w = w / w.sum()
    offset = 1_000_000 if split == "test" else 0
    out: list[Sample] = []
    while len(out) < n:
        c = cats[int(rng.choice(len(cats), p=w))]
        s = SEVERITIES[int(rng.integers(len(SEVERITIES)))]
        z = cfg.zones[int(rng.integers(len(cfg.zones)))]
        side = cfg.sides[int(rng.integers(len(cfg.sides)))]
        if (c, s) in held:
            continue
        out.append(Sample(offset + cfg.world_seed * 100_000 + len(out), c, Placement(z, side, s)))
    return out


def noisy_categories(categories: list[str], eta: float, seed: int) -> list[str]:
    """Each category swapped, with probability ``eta``, for another trained category of its family."""
    rng = np.random.default_rng(stable_seed("world-noise", seed, round(eta, 6)))
    flip = rng.random(len(categories)) < eta
    pick = rng.random(len(categories))
    out = []
    for c, f, u in zip(categories, flip, pick, strict=True):
        if f:
            others = [o for o in FAMILIES[FAMILY_OF[c]] if o != c and role(o) != "held_out"]
            c = others[int(u * len(others))]
        out.append(c)
    return out


# -- one world -------------------------------------------------------------------------------
@dataclass
class World:
    """ρ and g fixed: σ, its measured correlation, the rendered images and the oracle."""

    cfg: WorldsConfig
    text: TextSide
    rho: float
    gain: float
    sigma: np.ndarray
    visual: np.ndarray  # (16, 16) rendered prototype distances (search patients)
    rho_search: float  # Mantel r on the search patients
    rho_measured: float  # Mantel r on other patients

    def prototype(self, category: str) -> np.ndarray:
        return PROTOTYPES[self.sigma[CATEGORIES.index(category)]]

    def category_visual(self) -> np.ndarray:
        return self.visual[np.ix_(self.sigma, self.sigma)]

    def render(self, samples: list[Sample]) -> np.ndarray:
        return np.stack(
            [
                render_primitive(
                    self.prototype(s.category), s.placement, size=self.cfg.size, seed=s.patient, gain=self.gain
                )
                for s in samples
            ]
        )

    def label_primitives(self) -> np.ndarray:
        """(L, 8) the true primitive vector of each label: the prototype with severity's shift on
        density and extent, then zone (0, 0.5, 1) and side (0, 1) at weight 0.5."""
        rows = []
        zones = {z: i / max(len(self.cfg.zones) - 1, 1) for i, z in enumerate(self.cfg.zones)}
        for c, s, loc in self.text.labels:
            p = self.prototype(c).copy()
            m = severity_shift(s, self.gain)
            p[0] += m
            p[1] += m
            side, zone = loc.split()[0], loc.split()[1]
            rows.append(np.concatenate([p, [0.5 * zones[zone], 0.5 * (side == "left")]]))
        return np.array(rows)

    def oracle_similarity(self) -> np.ndarray:
        """1 - D / max D, D the Euclidean distance of the labels' true primitive vectors."""
        v = self.label_primitives()
        d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
        return 1 - d / d.max()


def build_world(
    cfg: WorldsConfig, text: TextSide, rho: float, gain: float, visual: np.ndarray, measure: np.ndarray
) -> World:
    sigma = search_permutation(visual, text.category_distance, rho, steps=cfg.anneal_steps, seed=cfg.world_seed)
    return World(
        cfg,
        text,
        rho,
        gain,
        sigma,
        visual,
        mantel(visual[np.ix_(sigma, sigma)], text.category_distance),
        mantel(measure[np.ix_(sigma, sigma)], text.category_distance),
    )


def prototype_distances(cfg: WorldsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rendered prototype distances on the search patients and on the measuring patients."""
    base = 5_000_000 + cfg.world_seed * 1000
    search = list(range(base, base + cfg.distance_patients))
    measure = list(range(base + 500, base + 500 + cfg.measure_patients))
    return rendered_distances(render_bank(PROTOTYPES, search, cfg)), rendered_distances(
        render_bank(PROTOTYPES, measure, cfg)
    )
