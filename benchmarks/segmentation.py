"""Segmentation fine-tuning speed, and the segmentation stage's time on the embedded default.

From one run on one machine:

  1. Training images per second (per CPU-second on CPU: process time, so a busy machine does not
     skew it; wall time on a GPU) of one UNet step (BCE + soft Dice, batch ``--batch``, ``--size`` px,
     resnet18 encoder, 1 input channel), ours against the reference approach, same batches:
       * ours: the embedded default's UNet (decoder channels 128-64-32-16-8) with fused AdamW
         (medfilip.evaluation.segmentation.finetune.make_optimiser);
       * reference: smp's default UNet decoder (256-128-64-32-16) with torch's default AdamW (a
         Python loop over the tensors), as a plain smp fine-tuning script would do it.
  2. One whole segmentation job as the workflow runs it (``medfilip.evaluation.segmentation.run``:
     the random-init baseline, every fraction, validate checks, test scoring) on a store of the
     embedded default's size (``--train`` / ``--validate`` / ``--test`` images at ``--store-size``
     px, 22 % with a pneumothorax-like dark region and its RLE mask), with the embedded default's
     ``evaluation.segmentation`` settings; its wall time, times the jobs of the demo (four runs +
     the baseline) over the cores, estimates the stage (a pretrained run's job also loads its
     model.pt: about a second more). ``--store DIR`` uses an existing SIIM store instead.

    python benchmarks/segmentation.py [--threads 1] [--cores 2] [--jobs 5]
    python benchmarks/segmentation.py --device cuda --size 448 --batch 32     # the GPU figure
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medfilip.datasets.rle import rle_encode
from medfilip.evaluation.segmentation.finetune import make_optimiser
from medfilip.evaluation.segmentation.settings import SegmentationSettings
from medfilip.evaluation.segmentation.unet import build_unet
from medfilip.images.preprocess import letterbox
from medfilip.images.store import ImageStoreWriter
from medfilip.pipeline.config import validate_config


def synthetic_store(root: Path, n_train: int, n_validate: int, n_test: int, size: int, seed: int = 0) -> Path:
    """A SIIM-like store: noisy grey images, 22 % with a dark ellipse and its RLE mask (source 1.25x size)."""
    rng = np.random.default_rng(seed)
    src = int(size * 1.25)
    yy, xx = np.mgrid[0:src, 0:src]
    splits = ["train"] * n_train + ["validate"] * n_validate + ["test"] * n_test
    with ImageStoreWriter(root, size, "siim", label_names=["pneumothorax", "normal"]) as writer:
        for i, split in enumerate(splits):
            positive = rng.random() < 0.22
            image = rng.normal(150, 14, size=(src, src))
            mask = np.zeros((src, src), bool)
            if positive:
                cy, cx = rng.uniform(0.15, 0.6) * src, rng.choice([0.25, 0.75]) * src
                ry, rx = rng.uniform(0.04, 0.15) * src, rng.uniform(0.03, 0.08) * src
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
                image[mask] -= 60
            writer.add(
                f"img{i:05d}",
                letterbox(np.clip(image, 0, 255).astype(np.uint8), size),
                path=f"{i}.dcm",
                view="PA",
                split=split,
                labels=[float(positive), float(not positive)],
                mask_rle=[rle_encode(mask)] if positive else [],
                mask_height=src,
                mask_width=src,
            )
    return root


def step_speed(decoder, fused: bool, size: int, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    import torch.nn.functional as F
    from segmentation_models_pytorch.losses import DiceLoss

    unet = build_unet("resnet18", 1, decoder, seed=0).to(device).train()
    settings = SegmentationSettings()
    opt = (
        make_optimiser(unet, settings)
        if fused
        else torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=gen).to(device)
    y = (torch.rand(batch, 1, size, size, generator=gen) > 0.9).float().to(device)
    dice = DiceLoss(mode="binary", from_logits=True)
    # CPU: process time (with 1 thread, the compute a core spends, whatever else shares the machine); GPU: wall
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    for i in range(warmup + steps):
        start = clock()
        logits = unet(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(clock() - start)
    return batch * len(times) / sum(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=SegmentationSettings().image_size, help="UNet input px (step speed)")
    p.add_argument("--batch", type=int, default=SegmentationSettings().batch_size)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the workflow gives a job 1 on 2 cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--validate", type=int, default=256)
    p.add_argument("--test", type=int, default=1024)
    p.add_argument("--store-size", type=int, default=128, help="images.size of the synthetic store")
    p.add_argument("--store", type=Path, default=None, help="an existing SIIM store instead of the synthetic one")
    p.add_argument("--cores", type=int, default=2, help="cores of the demo machine (jobs run side by side)")
    p.add_argument("--jobs", type=int, default=5, help="segmentation jobs of the demo: four runs + the baseline")
    p.add_argument("--skip-job", action="store_true", help="only the step speed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ours = step_speed((128, 64, 32, 16, 8), True, args.size, args.batch, args.steps, args.warmup, device)
    ref = step_speed((256, 128, 64, 32, 16), False, args.size, args.batch, args.steps, args.warmup, device)
    print(f"UNet training step, resnet18, {args.size} px, batch {args.batch}, {args.threads} thread(s), {device}:")
    print(f"  ours (decoder 128-64-32-16-8, fused AdamW)      {ours:8.1f} images/s")
    print(f"  reference (smp default decoder, default AdamW)  {ref:8.1f} images/s")
    print(f"  ratio                                           {ours / ref:8.2f}x")
    if args.skip_job:
        return

    from medfilip.evaluation.segmentation.run import run_segmentation

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            started = time.perf_counter()
            store = synthetic_store(Path(tmp) / "siim", args.train, args.validate, args.test, args.store_size)
            print(
                f"synthetic store ({args.train} train / {args.validate} validate / {args.test} test, "
                f"{args.store_size} px) in {time.perf_counter() - started:.1f} s"
            )
        cfg = validate_config({"evaluation": {"segmentation": {"device": args.device}}})
        started, cpu = time.perf_counter(), time.process_time()
        summary_file = run_segmentation("random_init", store, Path(tmp) / "out", cfg)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        summary = json.loads(summary_file.read_text())
    print(
        f"one segmentation job (random init, embedded default settings, {args.threads} thread(s)): {wall:.1f} s wall, "
        f"{cpu:.1f} s CPU (+ about 8 s of imports per process)"
    )
    for rec in summary["fractions"]:
        if rec["status"] == "ok":
            print(
                f"  {rec['fraction']:>5g}: {rec['n_train']:>5} train images, {rec['steps']} steps x {rec['batch_size']}, "
                f"train {rec['train_seconds']:.1f} s ({rec['train_images_per_s']:.1f} images/s), test {rec['test_seconds']:.1f} s, "
                f"validate Dice {rec['validate_dice']:.3f}"
            )
        else:
            print(f"  {rec['fraction']:>5g}: skipped: {rec['reason']}")
    per_job = cpu + 8.0
    print(
        f"stage estimate on a quiet machine: {args.jobs} jobs x {per_job:.0f} CPU-s / {args.cores} cores = "
        f"{args.jobs * per_job / args.cores:.0f} s (+ the table job; each job runs on 1 thread)"
    )


if __name__ == "__main__":
    main()
