"""``medfilip twin`` (a downstream dataset's phantom twin in its real layout) and
``medfilip preprocess-dataset`` (a real or twin dataset folder -> the uint8 image store)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medfilip.datasets.catalog import DATASET_NAMES
from medfilip.names import SPLITS
from medfilip.pipeline.config import PipelineConfig


def _workers(args: argparse.Namespace) -> int:
    return args.workers or len(os.sched_getaffinity(0))


def cmd_twin(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.datasets.twins import build_twin

    summary = build_twin(
        args.dataset,
        args.out,
        cfg.datasets,
        phantom_settings=cfg.phantom,
        workers=_workers(args),
        progress=not args.no_progress,
    )
    print(
        f"{summary.dataset} twin: {summary.n_images} images {summary.splits} in {summary.seconds:.1f}s -> {summary.root}; "
        f"positives {summary.positives}"
    )
    return 0


def cmd_preprocess_dataset(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.datasets.readers import classes_of, label_names_of, read_dataset, task_of
    from medfilip.images.preprocess import preprocess_images

    settings = getattr(cfg.datasets, args.dataset)
    root = args.root or settings.root
    if root is None:
        raise ValueError(f"datasets.{args.dataset}.root is null: pass --root (e.g. results/twins/{args.dataset})")
    table = read_dataset(args.dataset, root, cfg.datasets)
    store = preprocess_images(
        table,
        args.out,
        size=cfg.images.size,
        workers=_workers(args),
        dataset=args.dataset,
        label_names=label_names_of(table),
        shard_size=cfg.images.shard_size,
        progress=not args.no_progress,
        extra_meta={"task": task_of(table), "classes": classes_of(table), "root": str(root)},
    )
    splits = {s: len(store.indices(s)) for s in SPLITS}
    print(
        f"{args.dataset}: {len(store)} images of {store.size}x{store.size} from {root} -> {args.out}; splits {splits}; "
        f"{store.meta.get('n_rejects', 0)} rejected; labels {store.label_names}"
    )
    return 0


def register(sub) -> None:
    s = sub.add_parser("twin", help="write a downstream dataset's phantom twin in the real dataset's layout")
    s.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    s.add_argument("--out", type=Path, required=True, help="twin folder (results/twins/<dataset>), replaced whole")
    s.set_defaults(func=cmd_twin)

    s = sub.add_parser("preprocess-dataset", help="read a downstream dataset (real or twin) into the uint8 image store")
    s.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    s.add_argument("--root", type=Path, default=None, help="dataset folder (default: datasets.<dataset>.root)")
    s.add_argument("--out", type=Path, required=True, help="store folder (results/images/<dataset>)")
    s.set_defaults(func=cmd_preprocess_dataset)
