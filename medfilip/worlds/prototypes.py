"""The 16 world prototypes, and how they were fitted so that the knob ρ reaches high correlations.

A permutation only chooses *which* categories look alike; how far ρ can go is fixed by the set
of prototype distances. The first design (four visual clusters of four, ``START``) let the
permutation reach a Mantel r of 0.60 at most against MiniLM's calibrated text distances, whose
close pairs do not fall into four families (pneumonia sits next to pulmonary edema, infiltrate
next to interstitial lung disease). ``fit_prototypes`` moves the prototypes, one at a time, by a
seeded (1+1) random search that keeps a move when the rendered distances correlate better with
the text distances; the result, ``PROTOTYPES``, is a fixed table shared by every world, so all
worlds keep the same set of visual distances (the same detection difficulty) and only the
permutation differs between them.

``python -m medfilip.worlds.prototypes --text-cache results/worlds/texts.npz`` refits and prints
the table (700 moves, about 5 min on one core; r 0.576 -> 0.866 on its 6 fitting patients); it was
run once with the shipped all-MiniLM-L6-v2 and config/worlds.yaml, and its output is the table below. With another E_sim model the table still works, but the highest reachable ρ may be
lower: ``medfilip world --show`` prints the correlation a world reaches.
"""

from __future__ import annotations

import numpy as np

from medfilip.phantom.primitives import PRIMITIVES

# the first design: four visual clusters (density, extent, texture, border, form, volume) and a
# member offset each; the fit starts from it, each category given the prototype of the best
# permutation (the most a permutation of these reaches: r 0.58 on the search patients)
_CLUSTERS = np.array(
    [
        [0.85, 0.75, 0.10, 0.25, 0.05, 0.10],  # confluent dense soft-edged
        [0.60, 0.85, 0.00, 0.85, 0.00, 0.70],  # homogeneous sharp-edged, volume effect
        [0.75, 0.25, 0.05, 0.90, 0.95, 0.00],  # round sharp foci
        [0.40, 0.65, 0.95, 0.50, 0.30, 0.25],  # reticular
    ]
)
_OFFSETS = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [-0.20, 0.10, 0.10, -0.15, 0.10, 0.05],
        [0.10, -0.25, -0.05, 0.10, -0.10, -0.10],
        [-0.10, -0.10, 0.15, 0.05, 0.20, 0.15],
    ]
)
START: np.ndarray = np.clip(_CLUSTERS[:, None, :] + _OFFSETS[None, :, :], 0, 1).reshape(-1, len(PRIMITIVES))

# the permutation search's version (world.search_permutation): part of the runs' config key
SEARCH = "anneal-restarts-4"

# fitted by fit_prototypes (see the module docstring); row i is category i's prototype in
# medfilip.worlds.world.CATEGORIES order at the fit's optimum (the worlds permute it)
PROTOTYPES: np.ndarray = np.array(
    [
        [1.000, 0.002, 0.009, 0.609, 0.000, 0.456],
        [0.591, 0.410, 0.294, 0.855, 0.889, 0.000],
        [0.147, 0.313, 0.884, 0.650, 0.450, 0.116],
        [0.964, 0.147, 0.000, 1.000, 1.000, 0.000],
        [0.799, 0.738, 0.448, 0.394, 0.479, 0.023],
        [0.305, 0.391, 0.000, 0.860, 0.754, 0.076],
        [0.445, 0.295, 0.099, 0.770, 0.874, 0.053],
        [0.597, 0.563, 0.098, 0.032, 0.000, 0.177],
        [0.111, 1.000, 0.350, 0.537, 0.000, 0.383],
        [0.116, 0.821, 0.181, 0.600, 0.125, 0.738],
        [0.597, 0.869, 0.710, 0.161, 0.826, 0.975],
        [0.565, 0.280, 0.000, 0.907, 0.438, 1.000],
        [0.220, 0.643, 1.000, 0.479, 0.245, 0.461],
        [0.095, 0.645, 0.816, 0.448, 0.682, 0.113],
        [0.604, 0.279, 0.020, 0.000, 0.132, 0.816],
        [1.000, 0.078, 0.000, 0.000, 0.000, 0.000],
    ]
)


def fit_prototypes(
    text_distance: np.ndarray,
    distances,
    *,
    start: np.ndarray,
    iterations: int,
    seed: int = 0,
    step: float = 0.15,
    progress=None,
) -> tuple[np.ndarray, float]:
    """(prototypes, Mantel r) after ``iterations`` seeded (1+1) moves of one prototype each.

    ``distances(prototypes)`` gives their (P, P) rendered distance matrix; a move (Gaussian, ``step``
    wide, clipped to [0, 1]) is kept when it raises the Mantel r with ``text_distance``."""
    from medfilip.worlds.world import mantel

    rng = np.random.default_rng(seed)
    best = np.asarray(start, dtype=np.float64).copy()
    best_r = mantel(distances(best), text_distance)
    for it in range(iterations):
        trial = best.copy()
        i = int(rng.integers(len(trial)))
        trial[i] = np.clip(trial[i] + rng.normal(0.0, step, trial.shape[1]), 0.0, 1.0)
        r = mantel(distances(trial), text_distance)
        if r > best_r:
            best, best_r = trial, r
        if progress is not None:
            progress(it, best_r)
    return best, best_r


def main(argv: list[str] | None = None) -> int:
    import argparse

    from medfilip.worlds.settings import load_worlds_config
    from medfilip.worlds.sweep import text_side
    from medfilip.worlds.world import render_bank, rendered_distances, search_permutation, upper

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds-config", default="config/worlds.yaml")
    p.add_argument("--text-cache", default=None, help="E_sim vectors (.npz), as medfilip world --text-cache")
    p.add_argument("--iterations", type=int, default=700)
    p.add_argument("--patients", type=int, default=6, help="patients each prototype is rendered on in the fit")
    args = p.parse_args(argv)
    cfg = load_worlds_config(args.worlds_config)
    text = text_side(cfg, args.text_cache).category_distance
    patients = list(range(7_000_000, 7_000_000 + args.patients))  # not the worlds' search/measure patients

    def distances(protos):
        return rendered_distances(render_bank(protos, patients, cfg))

    v = distances(START)
    sigma = search_permutation(v, text, 1.0, steps=cfg.anneal_steps, seed=0)

    def progress(it, r):
        if it % 100 == 0:
            print(f"iteration {it}: r {r:.3f}", flush=True)

    fitted, r = fit_prototypes(text, distances, start=START[sigma], iterations=args.iterations, progress=progress)
    d = upper(distances(fitted))
    print(f"fitted: r {r:.3f} on {len(patients)} patients; distances {d.min():.3f}-{d.max():.3f}, mean {d.mean():.3f}")
    print("PROTOTYPES = np.array([")
    for row in fitted:
        print("    [" + ", ".join(f"{x:.3f}" for x in row) + "],")
    print("])")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
