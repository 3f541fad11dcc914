"""Training throughput: our training step versus the reference loop's data path, same model, same batch;
and our step with the frozen text layers cached (training.text_cache) versus without.

From one run on one machine, with the same dual encoder (architecture, frozen layers, loss), the
same batches (order, masked label texts, batch texts) and the same optimiser:

  * ours: ``medfilip.training.train.train_run`` itself — uint8 images read from the memory-mapped
    store by DataLoader workers, texts tokenised and the SSM target built in the workers from the
    cached E_sim vectors (a gather + matmul), bf16/channels_last when asked;
  * reference: the reference train.py's loop re-implemented — every image preloaded as a
    normalised float tensor in memory, served by a DataLoader with the same number of workers as
    ours, and the SSM target re-embedded every step (as the official code does) by running E_sim
    (the same MiniLM) over the batch's label texts, then cosine + max per image.

  * ours + text cache: the same run with ``training.text_cache: true`` (the frozen text layers run
    once per distinct string; the hidden states entering the first trained layer kept in memory).
    Its gain grows with how often strings repeat: ``--label-pool N`` draws every label from N
    fixed (category, severity, location) triplets (0: each drawn afresh, few repeats), and steps
    beyond one epoch (``--steps`` > images / batch) see their strings again.

Images/s is measured over the steps after ``--warmup`` (wall time between step ends, so waiting
for data counts). The corpus is synthetic (random images with bright patches, label texts rendered
from the vocabulary with the paper template and a generic explanation), built in a temporary
folder; label vectors for our path are random unit vectors (their values do not change the cost).

    python benchmarks/train_step.py [--images 480] [--size 128] [--arch resnet18] [--batch 32]
        [--steps 12] [--warmup 2] [--workers 1] [--threads 2] [--label-pool 0] [--no-reference]
    python benchmarks/train_step.py --device cuda --size 448 --arch resnet50 --batch 128 --bf16 \
        --channels-last --workers 8 --images 4096 --text-model /path/to/clip-vit-base-patch32 \
        --text-pooling eos --text-trainable-layers 12      # the GPU figure (CLIP-size text tower)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medfilip.images.store import ImageStore, ImageStoreWriter
from medfilip.io import write_parquet_atomic
from medfilip.labels.templates import render_label
from medfilip.training.data import (
    EpochBatchSampler,
    batch_text_table,
    masked_text,
    read_label_table,
    training_items,
)
from medfilip.training.loss import ImageTextMatchingLoss, total_loss
from medfilip.training.model import build_model, default_text_model
from medfilip.training.precision import autocast
from medfilip.training.settings import ModelSettings, TrainingConfig
from medfilip.training.train import train_run

SEVERITIES = [None, None, "mild", "small", "moderate", "large", "severe"]
LOCATIONS = [None, "left base", "right base", "bilateral lung", "right upper lobe", "left lower lobe", "retrocardiac"]


def synthetic_corpus(root: Path, n_images: int, size: int, seed: int = 0, label_pool: int = 0) -> dict[str, Path]:
    """A corpus store (all train) + labels.parquet (triplet_explanation) + random label vectors.

    ``label_pool`` > 0: labels are drawn from that many fixed triplets (drawn first), so they repeat."""
    from medfilip.extraction.vocabulary import Vocabulary

    rng = np.random.default_rng(seed)
    categories = sorted(Vocabulary.load(REPO / "resources" / "vocabulary").by_name)

    def triplet() -> tuple[str, str | None, str | None]:
        return (
            categories[int(rng.integers(0, len(categories)))],
            SEVERITIES[int(rng.integers(0, len(SEVERITIES)))],
            LOCATIONS[int(rng.integers(0, len(LOCATIONS)))],
        )

    pool = [triplet() for _ in range(label_pool)]
    rows = []
    with ImageStoreWriter(root / "corpus", size, "corpus", shard_size=1024) as writer:
        for i in range(n_images):
            image = rng.integers(0, 80, size=(size, size), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                cat, sev, loc = pool[int(rng.integers(0, len(pool)))] if pool else triplet()
                expl = f"a {cat} pattern with its typical density, borders and zone on a chest radiograph"
                label = render_label(cat, sev, loc, expl)
                rows.append(
                    {
                        "report_id": f"r{i}",
                        "variant": "triplet_explanation",
                        "label": label,
                        "label_key": hashlib.sha256(label.encode()).hexdigest()[:16],
                        "category": cat,
                        "severity": sev,
                        "location": loc,
                        "polarity": "present",
                        "explanation": expl,
                    }
                )
                y, x = rng.integers(0, size - size // 4, size=2)
                image[y : y + size // 4, x : x + size // 4] += 100
            writer.add(f"img{i}", image, report_id=f"r{i}", path=f"{i}.png", view="PA", split="train")
    write_parquet_atomic(pa.Table.from_pylist(rows), root / "labels.parquet")
    texts = sorted({r["label"] for r in rows})
    vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_parquet_atomic(
        pa.table(
            {
                "key": [hashlib.sha256(t.encode()).hexdigest()[:32] for t in texts],
                "text": texts,
                "vector": pa.array(list(vectors), pa.list_(pa.float32())),
            }
        ),
        root / "embeddings.parquet",
    )
    return {"images": root / "corpus", "labels": root / "labels.parquet", "embeddings": root / "embeddings.parquet"}


def steady_rate(step_seconds: list[float], batch: int, warmup: int) -> float:
    timed = step_seconds[warmup:]
    return batch * len(timed) / sum(timed)


def ours(corpus: dict, cfg: TrainingConfig, out: Path, steps: int) -> tuple[list[float], str]:
    """Seconds per step of train_run, and the text cache's statistics (when on)."""
    result = train_run(
        "medfilip",
        cfg,
        images_dir=corpus["images"],
        labels_path=corpus["labels"],
        embeddings_path=corpus["embeddings"],
        out_dir=out,
        resume=False,
        progress=False,
        stop_after_steps=steps,
        return_model=True,
    )
    import csv

    with open(out / "train_log.csv", newline="") as fh:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(fh)][: result.steps]
    cache = result.model.text.cache
    return [cfg.batch_size / r for r in rates], cache.describe() if cache is not None else ""


class _ReferenceItems(torch.utils.data.Dataset):
    """(float image, label ids, masked texts) per item: the reference's per-item work."""

    def __init__(self, pixels, image_label_ids, labels, mask_probability, seed):
        self.pixels, self.image_label_ids, self.labels = pixels, image_label_ids, labels
        self.mask_probability, self.seed = mask_probability, seed

    def __len__(self) -> int:
        return len(self.image_label_ids)

    def __getitem__(self, key):
        epoch, i = key
        rng = np.random.default_rng((self.seed, epoch, i))
        ids = self.image_label_ids[i]
        return self.pixels[i], {
            "label_ids": ids,
            "texts": [masked_text(self.labels, lid, self.mask_probability, rng) for lid in ids],
        }


def _reference_collate(batch):
    return torch.stack([image for image, _ in batch]), [item for _, item in batch]


def reference(corpus: dict, cfg: TrainingConfig, device: torch.device, precision: str, steps: int) -> list[float]:
    """The reference loop's data path around the same model, loss and optimiser."""
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(cfg.seed)
    store = ImageStore.open(corpus["images"])
    labels, by_report = read_label_table(corpus["labels"], "triplet_explanation")
    positions, image_label_ids, _ = training_items(store, by_report)
    # preload: every image as a normalised float tensor (the reference's data_prepare + np.save)
    pixels = torch.from_numpy(store.get_batch(positions)).float().div_(255).sub_(0.449).div_(0.226).unsqueeze(1)
    model = build_model(cfg.model, store.size, seed=cfg.seed).to(device).train()
    if device.type == "cuda" and cfg.channels_last:
        model.image.to(memory_format=torch.channels_last)
    esim_tok = AutoTokenizer.from_pretrained(default_text_model())
    esim = AutoModel.from_pretrained(default_text_model()).to(device).eval()
    optimizer = torch.optim.SGD(
        model.trainable_parameters(),
        lr=cfg.optimiser.lr,
        momentum=cfg.optimiser.momentum,
        weight_decay=cfg.optimiser.weight_decay,
    )
    loss_fn = ImageTextMatchingLoss("mse_ce")
    sampler = EpochBatchSampler(len(positions), cfg.batch_size, seed=cfg.seed)
    # the reference's DataLoader: the same number of workers as ours, over the preloaded float images
    loader = torch.utils.data.DataLoader(
        _ReferenceItems(pixels, image_label_ids, labels, cfg.mask_probability, cfg.seed),
        batch_sampler=sampler,
        collate_fn=_reference_collate,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    seconds, last = [], time.perf_counter()
    for images, items in loader:
        if len(seconds) == steps:
            break
        images = images.to(device, non_blocking=True)
        if device.type == "cuda" and cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        texts, sources, _ = batch_text_table(items)
        # SSM re-embedded: E_sim over the batch's label texts, every step
        flat = [lid for item in items for lid in item["label_ids"]]
        esim_in = esim_tok(
            [labels.texts[j] for j in flat + sources], padding=True, truncation=True, return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            hidden = esim(**esim_in).last_hidden_state
            mask = esim_in["attention_mask"].unsqueeze(-1).float()
            vec = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
        sims = vec[: len(flat)] @ vec[len(flat) :].T
        owner = torch.tensor([n for n, item in enumerate(items) for _ in item["label_ids"]], device=device)
        target = torch.stack([sims[owner == n].max(0).values for n in range(len(items))])
        tokens = model.tokenize(texts)
        with autocast(precision, device):
            img = torch.nn.functional.normalize(model.image(images).float(), dim=-1)
            txt = torch.nn.functional.normalize(
                model.text(tokens["input_ids"], tokens["attention_mask"]).float(), dim=-1
            )
        loss = total_loss(loss_fn(img, txt, model.logit_scale, target))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=480)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text-trainable-layers", type=int, default=1)
    p.add_argument(
        "--label-pool", type=int, default=0, help="draw labels from this many fixed triplets (0: each drawn afresh)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop (cached vs uncached only)")
    p.add_argument(
        "--text-model",
        default=None,
        help="a local text model folder, e.g. openai/clip-vit-base-patch32 (the CLIP-size text tower; "
        "default: the packaged MiniLM)",
    )
    p.add_argument("--text-pooling", default=None, help="eos for CLIP (default: the model setting's default)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = "bf16" if args.bf16 else "fp32"
    cfg = TrainingConfig(
        model=ModelSettings(
            image_arch=args.arch,
            text_trainable_layers=args.text_trainable_layers,
            **({"text_model": args.text_model} if args.text_model else {}),
            **({"text_pooling": args.text_pooling} if args.text_pooling else {}),
        ),
        batch_size=args.batch,
        epochs=max(1.0, args.steps / max(1, args.images // args.batch)),  # --steps may span several epochs
        num_workers=args.workers,
        device=args.device,
        precision=precision,
        channels_last=args.channels_last,
        checkpoint_every=args.steps,  # the log is written at checkpoints
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        corpus = synthetic_corpus(Path(tmp), args.images, args.size, label_pool=args.label_pool)
        print(
            f"synthetic corpus: {args.images} images at {args.size} px, "
            f"{'labels from a pool of ' + str(args.label_pool) if args.label_pool else 'every label drawn afresh'} "
            f"({time.perf_counter() - t0:.1f} s to build)"
        )
        ours_s, _ = ours(corpus, cfg, Path(tmp) / "run", args.steps)
        cached_s, cache_stats = ours(
            corpus, cfg.model_copy(update={"text_cache": True}), Path(tmp) / "cached", args.steps
        )
        ref_s = None if args.no_reference else reference(corpus, cfg, device, precision, args.steps)
    ours_rate = steady_rate(ours_s, args.batch, args.warmup)
    cached_rate = steady_rate(cached_s, args.batch, args.warmup)
    what = f"{args.arch} at {args.size} px, batch {args.batch}, {precision}, {args.device}"
    if args.device == "cuda":
        what += f" ({torch.cuda.get_device_name()})"
    print(
        f"model: {what}; text {args.text_model or 'MiniLM'}, top {args.text_trainable_layers} layer(s) trained; "
        f"{args.steps - args.warmup} timed steps after {args.warmup} warm-up "
        f"({args.steps / max(1, args.images // args.batch):.2f} epochs)"
    )
    print(
        f"ours      (uint8 store, {args.workers} worker(s), cached SSM): {ours_rate:8.1f} images/s "
        f"(median step {statistics.median(ours_s[args.warmup :]):.3f} s)"
    )
    print(
        f"ours + text cache (frozen text layers once per string):   {cached_rate:8.1f} images/s "
        f"(median step {statistics.median(cached_s[args.warmup :]):.3f} s); cache: {cache_stats}"
    )
    print(f"ratio cached / uncached: {cached_rate / ours_rate:.2f}x")
    if ref_s is not None:
        ref_rate = steady_rate(ref_s, args.batch, args.warmup)
        print(
            f"reference (float preloaded, {args.workers} worker(s), SSM re-embedded): {ref_rate:8.1f} images/s "
            f"(median step {statistics.median(ref_s[args.warmup :]):.3f} s)"
        )
        print(f"ratio ours / reference: {ours_rate / ref_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
