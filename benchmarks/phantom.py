"""Phantom renderer throughput on one core: images/s at 256 and 448 px, normal images and images
with three findings (a consolidation, an effusion and a nodule; patients vary with the seed).

    python benchmarks/phantom.py [--n 200] [--sizes 256 448]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402

from medfilip.phantom import Finding, render_phantom  # noqa: E402

THREE_FINDINGS = [
    Finding("consolidation", "right lower lobe", "moderate"),
    Finding("pleural effusion", "left", "small"),
    Finding("nodule", "left upper lobe", None),
]


def images_per_second(findings: list[Finding], size: int, n: int) -> float:
    render_phantom(findings, size=size, seed=0)  # warm the grid caches
    start = time.perf_counter()
    for seed in range(n):
        render_phantom(findings, size=size, seed=seed)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="images per measurement")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 448])
    args = p.parse_args()
    print(f"phantom renderer, one core, {args.n} images per cell")
    print(f"{'size':>6} {'normal img/s':>14} {'3 findings img/s':>18}")
    for size in args.sizes:
        normal = images_per_second([], size, args.n)
        three = images_per_second(THREE_FINDINGS, size, args.n)
        print(f"{size:>6} {normal:>14.1f} {three:>18.1f}")


if __name__ == "__main__":
    main()
