"""F1-maximising threshold: our exact search versus the reference 2,000-step grid.

On 1,024 images x 16 classes of seeded random scores (probability-like, in (0, 1); prevalence
3-50 % per class, separations from none to strong) it prints, per class, the F1 of the exact
search (``medfilip.evaluation.metrics.f1_max_threshold``: sort once, cumulative TP/FP over the
distinct scores) and of the grid (``grid_f1_threshold``: F1 at 2,000 evenly spaced thresholds over
[min, max] of the scores, and over [0, 1]), asserts that the exact F1 is never lower, and times
both (all 16 classes, median of --repeat runs, same process).

    python benchmarks/zeroshot_threshold.py [--images 1024] [--classes 16] [--repeat 7] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from medfilip.evaluation.metrics import REFERENCE_GRID_STEPS, f1_max_threshold, grid_f1_threshold


def random_scores(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.03, 0.5, size=k)
    labels = (rng.random((n, k)) < prevalence).astype(np.float64)
    separation = rng.uniform(0.0, 2.5, size=k)
    logits = rng.normal(size=(n, k)) + labels * separation
    return 1.0 / (1.0 + np.exp(-logits)), labels


def timed(fn, repeat: int) -> tuple[float, list]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=REFERENCE_GRID_STEPS)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    scores, labels = random_scores(args.images, args.classes, args.seed)
    k = range(args.classes)
    t_exact, exact = timed(lambda: [f1_max_threshold(scores[:, j], labels[:, j]) for j in k], args.repeat)
    t_grid, grid = timed(
        lambda: [grid_f1_threshold(scores[:, j], labels[:, j], args.steps, "scores") for j in k], args.repeat
    )
    _, grid_unit = timed(lambda: [grid_f1_threshold(scores[:, j], labels[:, j], args.steps, "unit") for j in k], 1)

    print(f"{args.images} images x {args.classes} classes, seed {args.seed}; grid = {args.steps} steps")
    print(f"{'class':>5} {'n_pos':>5} {'exact F1':>9} {'grid[min,max]':>13} {'grid[0,1]':>10}  exact threshold")
    same = better = 0
    for j in k:
        e, g, u = exact[j].f1, grid[j].f1, grid_unit[j].f1
        assert e >= g and e >= u, f"class {j}: exact F1 {e} below the grid ({g}, {u})"
        same += e == g
        better += e > g
        print(f"{j:>5} {exact[j].n_pos:>5} {e:>9.6f} {g:>13.6f} {u:>10.6f}  {exact[j].threshold:.6f}")
    gain = [exact[j].f1 - grid[j].f1 for j in k]
    print(
        f"F1 (exact vs grid[min,max]): identical in {same}, better in {better}, worse in 0 of {args.classes} classes; "
        f"largest gain {max(gain):.6f}, mean gain {statistics.mean(gain):.6f}"
    )
    print(
        f"time for all {args.classes} classes (median of {args.repeat}): exact {t_exact * 1e3:.2f} ms, "
        f"grid {t_grid * 1e3:.1f} ms -> exact is {t_grid / t_exact:.0f}x faster"
    )


if __name__ == "__main__":
    main()
