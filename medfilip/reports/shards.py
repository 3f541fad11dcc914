"""Write reports as deterministic Parquet shards plus a rejects table."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.io import write_parquet_atomic
from medfilip.reports.records import Reject, Report
from medfilip.reports.settings import shard_names
from medfilip.reports.splits import shard_of

log = logging.getLogger(__name__)

IMAGE_TYPE = pa.struct([("image_id", pa.string()), ("path", pa.string()), ("view", pa.string())])

REPORT_SCHEMA = pa.schema(
    [
        ("report_id", pa.string()),
        ("source", pa.string()),
        ("subject_id", pa.string()),
        ("study_id", pa.string()),
        ("findings", pa.string()),
        ("impression", pa.string()),
        ("text", pa.string()),
        ("split", pa.string()),
        ("images", pa.list_(IMAGE_TYPE)),
        ("annotations", pa.list_(pa.string())),
    ]
)

REJECT_SCHEMA = pa.schema(
    [("source", pa.string()), ("location", pa.string()), ("report_id", pa.string()), ("reason", pa.string())]
)


@dataclass(frozen=True)
class ShardSummary:
    n_reports: int
    n_rejects: int
    per_shard: dict[str, int]
    per_split: dict[str, int]


def reports_table(reports: list[Report]) -> pa.Table:
    rows = {
        "report_id": [r.report_id for r in reports],
        "source": [r.source for r in reports],
        "subject_id": [r.subject_id for r in reports],
        "study_id": [r.study_id for r in reports],
        "findings": [r.findings for r in reports],
        "impression": [r.impression for r in reports],
        "text": [r.text for r in reports],
        "split": [r.split for r in reports],
        "images": [[vars(i) for i in r.images] for r in reports],
        "annotations": [list(r.annotations) for r in reports],
    }
    return pa.table(rows, schema=REPORT_SCHEMA)


def write_report_shards(
    records: Iterable[Report | Reject],
    out_dir: str | Path,
    n_shards: int,
    rejects_path: str | Path,
    limit: int | None = None,
    source: str | None = None,
) -> ShardSummary:
    """Shard reports by a hash of their id; duplicates of an id are rejected, not overwritten.

    A corpus without a single usable report is an error naming ``source`` (the corpus path), raised
    before anything is written.
    """
    out_dir = Path(out_dir)
    reports: dict[str, Report] = {}
    rejects: list[Reject] = []
    for rec in records:
        if isinstance(rec, Reject):
            log.debug("rejected %s (%s): %s", rec.location, rec.report_id or "no id", rec.reason)
            rejects.append(rec)
        elif rec.report_id in reports:
            rejects.append(Reject(rec.source, rec.report_id, rec.report_id, "duplicate report_id; first one kept"))
        else:
            reports[rec.report_id] = rec
    kept = sorted(reports)
    if not kept:
        why = (
            f"all {len(rejects)} records rejected (first: {rejects[0].location}: {rejects[0].reason})"
            if rejects
            else "no report files found"
        )
        raise ValueError(f"{source or 'the report corpus'}: no reports ({why}); check the corpus path in the config")
    if limit is not None:
        kept = kept[:limit]
    names = shard_names(n_shards)
    buckets: dict[str, list[Report]] = {name: [] for name in names}
    for rid in kept:
        buckets[names[shard_of(rid, n_shards)]].append(reports[rid])
    for name, bucket in buckets.items():
        write_parquet_atomic(reports_table(bucket), out_dir / f"{name}.parquet")
    # shards of an earlier, larger n_shards would be read twice by globbing consumers (medfilip query)
    for stale in out_dir.glob("*.parquet"):
        if stale.stem.isdigit() and stale.stem not in buckets:
            log.info("removing stale shard %s (n_shards is now %d)", stale, n_shards)
            stale.unlink()
    write_parquet_atomic(
        pa.table(
            {
                "source": [r.source for r in rejects],
                "location": [r.location for r in rejects],
                "report_id": [r.report_id for r in rejects],
                "reason": [r.reason for r in rejects],
            },
            schema=REJECT_SCHEMA,
        ),
        rejects_path,
    )
    if rejects:
        reasons = Counter(r.reason.split(":")[0] for r in rejects)
        log.warning(
            "%d reports rejected (%s); first: %s (%s); all listed in %s",
            len(rejects),
            ", ".join(f"{k}: {v}" for k, v in reasons.most_common()),
            rejects[0].location,
            rejects[0].reason,
            rejects_path,
        )
    summary = ShardSummary(
        n_reports=len(kept),
        n_rejects=len(rejects),
        per_shard={k: len(v) for k, v in buckets.items()},
        per_split=dict(Counter(reports[r].split for r in kept)),
    )
    log.info(
        "wrote %d reports in %d shards to %s (%d rejected, splits %s)",
        summary.n_reports,
        n_shards,
        out_dir,
        summary.n_rejects,
        summary.per_split,
    )
    return summary


def read_report_shards(paths: Iterable[str | Path], columns: list[str] | None = None) -> pa.Table:
    tables = [pq.read_table(p, columns=columns) for p in paths]
    if not tables:
        return REPORT_SCHEMA.empty_table()
    return pa.concat_tables(tables)
