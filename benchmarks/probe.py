"""Linear probe: cached frozen features versus re-encoding the images for every fraction x seed.

Builds a seeded random image store (train / validate / test, single-label) and a dual encoder of
the embedded default's image tower (resnet18, 1 channel; weights do not change the cost), then in
the same process:

- **cached** (the pipeline): ``medfilip.evaluation.features.extract_features`` encodes every image
  of the three splits once, and every (fraction, seed) probe of ``probe_fits`` reads the cache;
- **re-encode** (the reference): for each (fraction, seed) fit, the subset's train images and the
  validate and test images are encoded again before the same logistic-regression fit.

Both produce the same scores (asserted); it prints images encoded, seconds and the ratio.

    python benchmarks/probe.py [--train 1000] [--validate 256] [--test 1024] [--size 128]
                               [--fractions 0.01 0.1 1.0] [--seeds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_store(root: Path, sizes: dict[str, int], size: int, seed: int):
    from medfilip.images.store import write_store

    rng = np.random.default_rng(seed)

    def images():
        for split, n in sizes.items():
            for i in range(n):
                y = float(rng.random() < 0.25)
                yield (
                    f"{split}-{i}",
                    rng.integers(0, 255, (size, size), dtype=np.uint8),
                    {"split": split, "labels": [y, 1.0 - y]},
                )

    return write_store(root, images(), size=size, dataset="bench", label_names=["pneumonia", "normal"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--validate", type=int, default=256)
    p.add_argument("--test", type=int, default=1024)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--c-grid", type=float, nargs="+", default=[0.01, 1.0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from medfilip.evaluation.features import encode_rows, extract_features
    from medfilip.evaluation.probe.fit import probe_data_from_store, probe_fits, subset, subset_seeds
    from medfilip.training.model import build_model, save_trained
    from medfilip.training.settings import ModelSettings

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(
            tmp / "store", {"train": args.train, "validate": args.validate, "test": args.test}, args.size, 0
        )
        model = build_model(ModelSettings(embed_dim=64, max_length=16), image_size=args.size, seed=0)
        save_trained(model, tmp / "run")
        data = probe_data_from_store(store)
        common = {"name": "bench", "fractions": args.fractions, "seeds": args.seeds, "c_grid": args.c_grid}
        n_fits = sum(len(subset_seeds(f, args.seeds)) for f in args.fractions)

        start = time.perf_counter()
        cached = extract_features(tmp / "run", tmp / "store", tmp / "features", batch_size=args.batch_size)
        encoded_cached = sum(f.n for f in cached.values())
        t_encode = time.perf_counter() - start
        fits_cached = probe_fits({s: f.vectors for s, f in cached.items()}, data, **common)
        t_cached = time.perf_counter() - start

        # the reference: each fit encodes what it reads (same model, same channels_last setting)
        from medfilip.training.model import load_trained

        ref_model = load_trained(tmp / "run", "cpu")
        ref_model.image.to(memory_format=torch.channels_last)
        ref_model.channels_last = True
        start = time.perf_counter()
        encoded_ref, results = 0, []
        for fraction in args.fractions:
            train = np.zeros((data.rows["train"].size, ref_model.image.feature_dim), np.float32)
            for seed in subset_seeds(fraction, args.seeds):  # each fit encodes its subset, validate and test
                pick = subset(data.labels["train"], data.task, fraction, seed, data.dataset)
                feats = {
                    s: encode_rows(ref_model, store, data.rows[s], batch_size=args.batch_size, device="cpu")
                    for s in ("validate", "test")
                }
                train[pick] = encode_rows(
                    ref_model, store, data.rows["train"][pick], batch_size=args.batch_size, device="cpu"
                )
                encoded_ref += pick.size + data.rows["validate"].size + data.rows["test"].size
            one = probe_fits({"train": train, **feats}, data, **{**common, "fractions": [fraction]})
            results += [one.test_scores[f"{fraction:g}_{seed}"] for seed in subset_seeds(fraction, args.seeds)]
        t_ref = time.perf_counter() - start

    for key, ref in zip(fits_cached.test_scores, results):
        np.testing.assert_allclose(fits_cached.test_scores[key], ref, rtol=1e-3, atol=1e-4)
    print(
        f"store: {args.train} train / {args.validate} validate / {args.test} test images of {args.size} px; "
        f"{n_fits} fits ({args.fractions} x {args.seeds} seeds below 100 %); {args.threads} threads"
    )
    print(
        f"cached     : {encoded_cached:6d} images encoded, {t_cached:7.1f} s "
        f"(encoding {t_encode:.1f} s = {encoded_cached / t_encode:.0f} img/s, fits {t_cached - t_encode:.1f} s)"
    )
    print(f"re-encode  : {encoded_ref:6d} images encoded, {t_ref:7.1f} s")
    print(
        f"ratio      : {t_ref / t_cached:.1f}x faster with the cache, {encoded_ref / encoded_cached:.1f}x fewer images "
        f"encoded; same scores"
    )


if __name__ == "__main__":
    main()
