"""The training data path's CPU cost per 448-px image, one core: what a DataLoader worker pays.

  * reference (medfilip.training.data as it is): read the uint8 image from the memory-mapped store,
    warp it in float32 on the CPU (``augment_image``), back to uint8;
  * ours: read the uint8 image and draw its 4 augmentation parameters; the warp runs batched on the
    GPU in the training step (``medfilip.training.augment.augment_batch``).

Also printed: the batched warp's own cost on this machine's CPU (what the device takes over), and
with ``--device cuda`` its GPU time per image. Process CPU time, one thread, a synthetic store.

    nice -n 10 python benchmarks/data_path.py [--images 256] [--size 448] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medfilip.images.store import ImageStore, write_store  # noqa: E402
from medfilip.training.augment import augment_batch, draw_parameters  # noqa: E402
from medfilip.training.data import augment_image  # noqa: E402


def cpu_ms_per_image(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t) / n * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        images = ((i, rng.integers(0, 256, (args.size, args.size), dtype=np.uint8)) for i in range(args.images))
        write_store(Path(tmp) / "store", ((f"im{i}", a, {}) for i, a in images), size=args.size, dataset="corpus")
        store = ImageStore.open(Path(tmp) / "store")

        def reference(i: int):
            r = np.random.default_rng((0, 0, i))
            return torch.from_numpy(np.array(augment_image(np.asarray(store[i % len(store)]), r), dtype=np.uint8))

        def ours(i: int):
            r = np.random.default_rng((0, 0, i))
            return torch.from_numpy(np.array(store[i % len(store)], dtype=np.uint8)), draw_parameters(r)

        for f in (reference, ours):  # warm the page cache and the allocator
            for i in range(min(16, args.images)):
                f(i)
        ref_ms = cpu_ms_per_image(reference, args.images, args.repeat)
        our_ms = cpu_ms_per_image(ours, args.images, args.repeat)
        batch = torch.from_numpy(np.stack([np.asarray(store[i % len(store)]) for i in range(args.batch)]))
        params = torch.stack([draw_parameters(np.random.default_rng(i)) for i in range(args.batch)])
        augment_batch(batch, params)
        t = time.process_time()
        augment_batch(batch, params)
        warp_cpu_ms = (time.process_time() - t) / args.batch * 1e3
    print(f"data path, {args.size} px, one core (CPU ms per image; best of {args.repeat})")
    print(
        f"  reference: store read + float warp on the CPU        {ref_ms:7.3f} ms  -> {1e3 / ref_ms:7.0f} images/s per worker"
    )
    print(
        f"  ours:      store read + 4 parameters (warp on device) {our_ms:7.3f} ms  -> {1e3 / our_ms:7.0f} images/s per worker"
    )
    print(f"  ratio reference/ours: {ref_ms / our_ms:.1f}x")
    print(f"  the batched warp itself on this CPU (moved to the device): {warp_cpu_ms:.3f} ms per image")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device here")
        b, p = batch.to(args.device), params.to(args.device)
        for _ in range(3):
            augment_batch(b, p)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            augment_batch(b, p)
        torch.cuda.synchronize()
        print(
            f"  the batched warp on {torch.cuda.get_device_name()}: {(time.perf_counter() - t) / (20 * args.batch) * 1e3:.4f} ms per image"
        )


if __name__ == "__main__":
    main()
