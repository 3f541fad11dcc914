"""SSM target cost per training batch: cached embeddings (gather + matmul) vs re-embedding each step.

From one run on this machine, with the same E_sim model for both:
  * embedding every unique label string of the corpus once (what `medfilip embed` does, every
    label variant in results/labels.parquet): wall time and peak resident memory added,
  * the per-batch SSM target of a batch of 64 images (about 150 labels) from the cached vectors
    (medfilip.ssm: batch_texts + ssm_target over an (L, D) tensor) — median over many batches,
  * the same target the reference way: the batch's label texts re-embedded by the model each step,
    then cosine + max over each image's labels — median over fewer batches,
  * the ratio.

Labels come from results/labels.parquet when it exists; otherwise a synthetic set of about 3,000
label strings is rendered from the vocabulary's categories, severities and locations (the output
says which).

    python benchmarks/ssm.py [--labels results/labels.parquet] [--batch 64] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from medfilip.embeddings.model import TextEncoder, resolve_model
from medfilip.embeddings.store import embed_texts, load_embeddings
from medfilip.ssm import batch_texts, ssm_target

REPO = Path(__file__).resolve().parent.parent
SEVERITIES = [None, None, "mild", "minimal", "small", "moderate", "large", "severe"]
SIDES = ["left ", "right ", "bilateral ", ""]
REGIONS = ["upper lobe", "lower lobe", "base", "apex", "hilum", "retrocardiac", "costophrenic angle", "lung", "pleura"]


def synthetic_labels(n_reports: int = 4000, n_unique: int = 3000, seed: int = 0) -> pa.Table:
    """Reports with 1-4 triplet_explanation labels drawn from ~n_unique vocabulary-based label strings."""
    from medfilip.extraction.vocabulary import Vocabulary
    from medfilip.labels.templates import render_label

    rng = random.Random(seed)
    categories = sorted(Vocabulary.load(REPO / "resources" / "vocabulary").by_name)
    try:
        from medfilip.knowledge import load_knowledge

        knowledge = load_knowledge(REPO / "resources" / "knowledge" / "dictionary.yaml")
        explain = knowledge.explanation
    except (
        ImportError,
        OSError,
        ValueError,
    ):  # the dictionary is optional here: a generic explanation keeps the length realistic

        def explain(c):
            return f"a finding of the {c} kind with its typical density, shape, borders and zone on a chest radiograph"

    pool: dict[str, str] = {}
    while len(pool) < n_unique:
        c = rng.choice(categories)
        location = (rng.choice(SIDES) + rng.choice(REGIONS)).strip() if rng.random() < 0.7 else None
        pool.setdefault(render_label(c, rng.choice(SEVERITIES), location, explain(c)), c)
    texts = list(pool)
    rows = {"report_id": [], "variant": [], "label": [], "category": []}
    for i in range(n_reports):
        for text in rng.sample(texts, rng.choice([1, 1, 2, 2, 3, 4])):
            rows["report_id"].append(f"S{i:05d}")
            rows["variant"].append("triplet_explanation")
            rows["label"].append(text)
            rows["category"].append(pool[text])
    return pa.table(rows)


def reference_target(encoder: TextEncoder, image_labels: list[list[str]], device: str) -> torch.Tensor:
    """The reference code's way: embed the batch's texts now, then max cosine over each image's labels."""
    texts = list(dict.fromkeys(t for labels in image_labels for t in labels))
    vectors = torch.from_numpy(encoder.encode(texts)).to(device)
    index = {t: i for i, t in enumerate(texts)}
    ids = [[index[t] for t in labels] for labels in image_labels]
    text_ids, _ = batch_texts(ids, device=device)
    return ssm_target(ids, text_ids, vectors)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=REPO / "results" / "labels.parquet")
    ap.add_argument("--variant", default="triplet_explanation", help="label variant the batches are drawn from")
    ap.add_argument("--model", default=None, help="E_sim (default: the shipped MiniLM)")
    ap.add_argument("--batch", type=int, default=64, help="images per batch")
    ap.add_argument("--repeat-cached", type=int, default=200)
    ap.add_argument("--repeat-reembed", type=int, default=10)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--keep-cache",
        type=Path,
        default=None,
        help="embedding cache folder kept between runs (default: a temporary one, so the cold cost is measured)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)

    if args.labels.exists():
        labels = pq.read_table(args.labels, columns=["report_id", "variant", "label"])
        source = f"{args.labels}"
    else:
        labels = synthetic_labels()
        source = "SYNTHETIC: results/labels.parquet absent; vocabulary-based strings"
    all_texts = list(dict.fromkeys(labels.column("label").to_pylist()))
    per_variant = {}
    for v, t in zip(labels.column("variant").to_pylist(), labels.column("label").to_pylist()):
        per_variant.setdefault(v, set()).add(t)
    print(f"labels: {source}")
    print(
        f"unique label strings: {len(all_texts)} ({', '.join(f'{v} {len(s)}' for v, s in sorted(per_variant.items()))})"
    )
    print(f"E_sim: {resolve_model(args.model).source}; device {args.device}, {args.threads} CPU threads")

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.keep_cache or Path(tmp) / "cache"
        # 1. embed every unique label once (what the embed_labels rule pays on a cold cache)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        summary = embed_texts(
            all_texts,
            args.model,
            cache_dir,
            batch_size=args.batch_size,
            max_length=args.max_length,
            device=args.device,
            progress=False,
        )
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gpu_peak = f", GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if args.device == "cuda" else ""
        print(
            f"embed all {summary.n_unique} unique labels ({summary.n_new} not cached): {summary.seconds:.1f} s "
            f"({summary.n_new / summary.seconds:.0f} texts/s), peak RSS +{(rss1 - rss0) / 1024:.0f} MiB "
            f"(process peak {rss1 / 1024:.0f} MiB){gpu_peak}"
        )
        again = embed_texts(all_texts, args.model, cache_dir, progress=False)
        print(f"re-run with every label cached: {again.n_new} embedded in {again.seconds:.2f} s")

        # 2. batches of images drawn from the chosen variant
        rows = labels.filter(pa.compute.equal(labels["variant"], args.variant))
        by_report: dict[str, list[str]] = {}
        for rid, text in zip(rows.column("report_id").to_pylist(), rows.column("label").to_pylist()):
            by_report.setdefault(rid, []).append(text)
        reports = sorted(by_report)
        rng = random.Random(0)
        batches = [[by_report[r] for r in rng.sample(reports, args.batch)] for _ in range(args.repeat_cached)]
        n_labels = statistics.mean(sum(map(len, b)) for b in batches)
        n_texts = statistics.mean(len({t for labels in b for t in labels}) for b in batches)
        print(f"batch: {args.batch} images, {n_labels:.0f} labels on average ({n_texts:.0f} distinct texts)")

        vocab = list(dict.fromkeys(rows.column("label").to_pylist()))
        vectors = torch.from_numpy(load_embeddings(cache_dir, vocab)).to(args.device)
        label_id = {t: i for i, t in enumerate(vocab)}
        id_batches = [[[label_id[t] for t in labels] for labels in b] for b in batches]

        def cached_step(ids):
            text_ids, _ = batch_texts(ids, device=args.device)
            return ssm_target(ids, text_ids, vectors)

        for ids in id_batches[:5]:  # warm-up
            cached_step(ids)
        cached = []
        for ids in id_batches:
            sync(args.device)
            t = time.perf_counter()
            cached_step(ids)
            sync(args.device)
            cached.append(time.perf_counter() - t)

        encoder = TextEncoder(resolve_model(args.model), device=args.device, max_length=args.max_length, progress=False)
        reference_target(encoder, batches[0], args.device)  # warm-up
        reembed = []
        for b, ids in zip(batches[: args.repeat_reembed], id_batches):
            sync(args.device)
            t = time.perf_counter()
            target = reference_target(encoder, b, args.device)
            sync(args.device)
            reembed.append(time.perf_counter() - t)
            ours = cached_step(ids)
            assert torch.allclose(target, ours, atol=1e-4), "both paths give the same target"

    c, r = statistics.median(cached), statistics.median(reembed)
    print(
        f"SSM target per batch, cached embeddings (gather + matmul): {c * 1e3:.2f} ms median, "
        f"{min(cached) * 1e3:.2f} ms min ({len(cached)} batches)"
    )
    print(
        f"SSM target per batch, re-embedding the batch's texts:       {r * 1e3:.1f} ms median, "
        f"{min(reembed) * 1e3:.1f} ms min ({len(reembed)} batches)"
    )
    print(f"ratio: {r / c:.0f}x faster with the cache (medians; {min(reembed) / min(cached):.0f}x on minima)")


if __name__ == "__main__":
    sys.exit(main())
