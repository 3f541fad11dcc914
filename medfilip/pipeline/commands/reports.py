"""``medfilip reports``: the configured report corpus -> Parquet shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfilip.names import ReportSource
from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig


def cmd_reports(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.reports.readers import read_configured_reports
    from medfilip.reports.shards import write_report_shards

    summary = write_report_shards(
        read_configured_reports(cfg.reports),
        args.out_dir,
        cfg.reports.n_shards,
        args.rejects,
        limit=cfg.reports.limit,
        source=_corpus_description(cfg),
    )
    print(
        f"{summary.n_reports} reports in {len(summary.per_shard)} shards, {summary.n_rejects} rejected; splits {summary.per_split}"
    )
    return 0


def _corpus_description(cfg: PipelineConfig) -> str:
    """The configured corpus, as its key path and path (for error messages)."""
    r = cfg.reports
    if r.source == ReportSource.iu_xray:
        return (
            f"reports.iu_xray.path = {str(r.iu_xray.path) if r.iu_xray.path else 'null (the shipped IU-Xray tarball)'}"
        )
    return f"reports.mimic_cxr.root = {r.mimic_cxr.root}"


def register(sub) -> None:
    s = sub.add_parser("reports", help="read the report corpus into Parquet shards")
    s.add_argument("--out-dir", type=Path, default=Path(paths.REPORT_SHARDS_DIR))
    s.add_argument("--rejects", type=Path, default=Path(paths.REPORT_REJECTS))
    s.set_defaults(func=cmd_reports)
