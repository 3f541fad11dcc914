"""``medfilip corpus-images`` (report shards → rendered or real PNG/JPGs → the corpus image store)
and ``medfilip image-store`` (a store's summary)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig


def cmd_corpus_images(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    import os

    import pyarrow.parquet as pq

    from medfilip.images.corpus import build_corpus_store
    from medfilip.pipeline.workflows.images import corpus_image_root

    corpus = cfg.images.corpus
    mapping = entities = None
    if corpus.findings == "mesh":
        from medfilip.extraction.quality import MeshMapping
        from medfilip.extraction.vocabulary import configured_vocabulary

        mapping = MeshMapping.load(cfg.quality.mesh_mapping, configured_vocabulary(cfg))
    else:
        if args.entities is None:
            raise ValueError("images.corpus.findings = entities: pass --entities results/entities.parquet")
        entities = pq.read_table(args.entities, columns=["report_id", "category", "location", "severity", "polarity"])
    workers = args.workers or len(os.sched_getaffinity(0))
    store = build_corpus_store(
        args.reports,
        args.out,
        size=cfg.images.size,
        findings=corpus.findings,
        mapping=mapping,
        entities=entities,
        second_view=corpus.second_view,
        png_dir=args.png_dir,
        image_root=corpus_image_root(cfg),
        seed=corpus.seed,
        workers=workers,
        shard_size=cfg.images.shard_size,
        phantom_settings=cfg.phantom.model_dump(mode="json"),
        progress=not args.no_progress,
    )
    print(_summary(store))
    return 0


def _summary(store) -> str:
    from collections import Counter

    splits = Counter(store.index.column("split").to_pylist()) if "split" in store.index.column_names else {}
    rendered = store.meta.get("rendered") or {}
    parts = [
        f"{store.root}: {len(store)} images of {store.size}x{store.size} ({store.dataset})",
        f"splits {dict(sorted((k or 'none', v) for k, v in splits.items()))}",
        f"{store.meta.get('n_rejects', 0)} rejected",
    ]
    if rendered:
        parts.append(
            f"{rendered.get('rendered', 0)} rendered, {rendered.get('kept', 0)} PNGs up to date"
            + (f", {rendered['failed']} FAILED to render" if rendered.get("failed") else "")
        )
    if store.meta.get("seconds"):
        parts.append(f"preprocessed in {store.meta['seconds']:.1f}s with {store.meta.get('workers', 1)} worker(s)")
    return "; ".join(parts)


def cmd_corpus_merge(args: argparse.Namespace) -> int:
    from medfilip.images.corpus import merge_corpus_parts

    print(_summary(merge_corpus_parts(args.parts, args.out)))
    return 0


def cmd_image_store(args: argparse.Namespace) -> int:
    from collections import Counter

    from medfilip.images.store import ImageStore

    store = ImageStore.open(args.store)
    print(_summary(store))
    reasons = Counter(r.split(":")[0] for r in store.rejects().column("reason").to_pylist())
    for reason, n in reasons.most_common():
        print(f"  rejected {n}: {reason}")
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "corpus-images",
        help="the pretraining corpus images: render one phantom per report (or read the real files) and preprocess them",
    )
    s.add_argument(
        "--reports", type=Path, nargs="+", required=True, help="report shards (results/reports/shards/*.parquet)"
    )
    s.add_argument(
        "--entities", type=Path, default=None, help="results/entities.parquet (images.corpus.findings = entities)"
    )
    s.add_argument(
        "--png-dir",
        type=Path,
        default=Path(paths.RENDERED_PNG_DIR.format(source="iu_xray")),
        help="where rendered PNGs go, in the IU-Xray layout; a cache: up-to-date files are not rendered again",
    )
    s.add_argument("--out", type=Path, required=True, help="the image store folder (results/images/corpus)")
    s.set_defaults(func=cmd_corpus_images)

    s = sub.add_parser(
        "corpus-merge",
        help="the corpus store from its per-report-shard parts (pixels linked, not decoded again)",
    )
    s.add_argument("--parts", type=Path, nargs="+", required=True, help="part stores (results/images/corpus_parts/*)")
    s.add_argument("--out", type=Path, required=True, help="the image store folder (results/images/corpus)")
    s.set_defaults(func=cmd_corpus_merge)

    s = sub.add_parser("image-store", help="summary of an image store (size, splits, rejects by reason)")
    s.add_argument("store", type=Path)
    s.set_defaults(func=cmd_image_store)
