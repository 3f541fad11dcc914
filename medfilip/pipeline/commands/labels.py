"""``medfilip labels``: entities + knowledge dictionary -> labels.parquet and label_stats.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig


def cmd_labels(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.extraction.vocabulary import configured_vocabulary, load_severity_scale
    from medfilip.io import write_csv_atomic
    from medfilip.knowledge import load_knowledge
    from medfilip.labels.build import build_labels, label_statistics

    vocabulary = configured_vocabulary(cfg)
    knowledge = load_knowledge(cfg.knowledge.path, required=vocabulary.by_name)
    summary = build_labels(
        args.reports,
        args.entities,
        knowledge,
        cfg.labels,
        args.out,
        default_locations={name: cat.location for name, cat in vocabulary.by_name.items()},
        extractions=args.extractions,
        location_text=vocabulary.label_location,
        severity_scale=(
            load_severity_scale(cfg.extraction.rules.vocabulary_dir)
            if cfg.labels.severity_scale == "three_level"
            else None
        ),
    )
    if args.stats:
        write_csv_atomic(label_statistics(args.out), args.stats, ["statistic", "variant", "key", "value"])
    print(
        f"{summary.n_rows} labels for {summary.n_reports} reports ({summary.n_normal_reports} normal, "
        f"{summary.n_failed_reports} left out: extraction failed); "
        f"unique per variant: {summary.unique_labels}"
    )
    return 0


def register(sub) -> None:
    s = sub.add_parser("labels", help="structured labels (paper template + knowledge) from entities")
    s.add_argument("--reports", type=Path, nargs="+", required=True, help="report shard Parquet files")
    s.add_argument("--entities", type=Path, default=Path(paths.ENTITIES))
    s.add_argument(
        "--extractions",
        type=Path,
        nargs="+",
        required=True,
        help="extraction shards (results/extraction/<backend>/*.parquet): reports whose extraction "
        "failed get no labels",
    )
    s.add_argument("--out", type=Path, default=Path(paths.LABELS))
    s.add_argument("--stats", type=Path, default=None, help="label statistics CSV (results/tables/label_stats.csv)")
    s.set_defaults(func=cmd_labels)
