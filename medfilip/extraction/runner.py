"""Run a backend over a report shard through the shared cache.

Only reports whose cache key is missing reach the backend; results are
flushed to the cache every ``flush_every`` reports, so a killed run resumes
where it stopped without losing or duplicating finished reports.

Concurrent jobs sharing a cache (one per shard) never extract the same text
twice: before dispatch a job claims the keys it will extract (claim files
under ``<cache>/claims/``, changed under a lock) and releases them once they
are flushed; a key another live job holds is waited for and then read from the
cache. The claims of a killed job are taken over.

A shard whose share of failed reports exceeds ``max_failure_share`` raises
:class:`ExtractionFailed` before its output is written: failed reports never
become "normal" labels downstream.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from medfilip.extraction.backend import ExtractionAborted, ExtractionBackend
from medfilip.extraction.cache import CACHE_SCHEMA, ExtractionCache
from medfilip.extraction.shard_work import MissingTexts, ShardReports
from medfilip.io import write_parquet_atomic

log = logging.getLogger(__name__)

SHARD_COLUMNS = [
    "report_id",
    "cache_key",
    "backend",
    "model",
    "prompt_version",
    "status",
    "error",
    "triplets",
    "dropped_uncategorised",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
]
SHARD_SCHEMA = pa.schema([CACHE_SCHEMA.field(c) for c in SHARD_COLUMNS])

RUN_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("shard", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("started_at", pa.timestamp("s", tz="UTC")),
        ("wall_s", pa.float64()),
        ("n_reports", pa.int64()),
        ("n_cached", pa.int64()),
        ("n_extracted", pa.int64()),
        ("n_failed", pa.int64()),
        ("n_failed_in_shard", pa.int64()),
        ("n_triplets", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
    ]
)


@dataclass
class ShardRun:
    run_id: str
    shard: str
    backend: str
    model: str
    prompt_version: str
    started_at: float
    wall_s: float = 0.0
    n_reports: int = 0
    n_cached: int = 0
    n_extracted: int = 0
    n_failed: int = 0
    n_failed_in_shard: int = 0  # cached failures included: what reaches entities and labels as failed
    n_triplets: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class ExtractionFailed(ExtractionAborted):
    """A shard's share of failed reports is above ``extraction.max_failure_share``."""


def extract_shard(
    reports_path: str | Path,
    backend: ExtractionBackend,
    cache: ExtractionCache,
    out_path: str | Path,
    *,
    runs_dir: str | Path | None = None,
    flush_every: int = 200,
    retry_failed: bool = False,
    progress: bool = True,
    max_failure_share: float = 1.0,
    poll_s: float = 0.5,
) -> ShardRun:
    """Extract the reports of one shard missing from the cache, then write the shard's results.

    ``n_extracted`` counts the reports this run extracted successfully, ``n_failed`` those it tried
    and failed, ``n_failed_in_shard`` the shard's failed reports (cached failures included).
    """
    shard = ShardReports.read(Path(reports_path), backend)
    run = ShardRun(uuid.uuid4().hex[:12], shard.name, backend.name, backend.model, backend.version, time.time())
    run.n_reports = len(shard.report_ids)
    work = MissingTexts(shard, backend, cache, run, flush_every=flush_every, retry_failed=retry_failed)
    work.run_missing(progress=progress, poll_s=poll_s)
    cache.compact()
    out_rows = _shard_rows(shard, cache, run)
    failed = [r for r in out_rows if r["status"] != "ok"]
    _close_run(run, len(failed), runs_dir)
    check_failures(run, failed, backend.name, max_failure_share)
    write_parquet_atomic(pa.Table.from_pylist(out_rows, schema=SHARD_SCHEMA), Path(out_path))
    return run


def _shard_rows(shard: ShardReports, cache: ExtractionCache, run: ShardRun) -> list[dict]:
    """The shard's output rows from the cache, one per report in file order; counts the run's triplets."""
    rows = cache.load(shard.keys)
    out_rows = []
    for rid, key in zip(shard.report_ids, shard.keys):
        row = dict(rows[key])
        row["report_id"] = rid
        out_rows.append({c: row[c] for c in SHARD_COLUMNS})
        run.n_triplets += len(row["triplets"])
    return out_rows


def _close_run(run: ShardRun, n_failed_in_shard: int, runs_dir: str | Path | None) -> None:
    """The run's last counts and wall time, its record under ``runs_dir`` and its summary line."""
    run.n_failed_in_shard = n_failed_in_shard
    run.n_cached = run.n_reports - run.n_extracted - run.n_failed
    run.wall_s = time.time() - run.started_at
    if runs_dir is not None:
        record_run(run, Path(runs_dir))
    log.info(
        "shard %s done in %.1fs: %d extracted, %d failed (%d failed in shard), %d triplets, %d+%d tokens, $%.4f",
        run.shard,
        run.wall_s,
        run.n_extracted,
        run.n_failed,
        run.n_failed_in_shard,
        run.n_triplets,
        run.prompt_tokens,
        run.completion_tokens,
        run.cost_usd,
    )


def check_failures(run: ShardRun, failed: list[dict], backend: str, max_failure_share: float) -> None:
    """Raise :class:`ExtractionFailed` when the shard's failed share is above the limit."""
    if not failed or run.n_reports == 0 or len(failed) / run.n_reports <= max_failure_share:
        return
    reasons = Counter((r["error"] or "no reason given").split("\n")[0][:200] for r in failed)
    top = "; ".join(f"{why} (x{n})" for why, n in reasons.most_common(3))
    limit = "any failure stops it" if max_failure_share == 0 else f"the limit is {max_failure_share:.0%}"
    raise ExtractionFailed(
        f"shard {run.shard}: {len(failed)} of {run.n_reports} reports failed extraction with the {backend} backend "
        f"({len(failed) / run.n_reports:.0%}; extraction.max_failure_share: {limit}). Most common errors: {top}. "
        "Failed reports would be missing from entities and labels, so the shard's output was not written. "
        "Fix the cause (endpoint down? wrong key or model?), then run again with extraction.retry_failed: true "
        "in the config (or `medfilip extract --retry-failed`): the reports that succeeded are cached and not "
        "extracted (or paid for) again. To accept some failures, raise extraction.max_failure_share."
    )


def record_run(run: ShardRun, runs_dir: Path) -> Path:
    row = asdict(run)
    row["started_at"] = int(row["started_at"])
    table = pa.Table.from_pylist([row], schema=RUN_SCHEMA)
    return write_parquet_atomic(table, runs_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{run.shard}-{run.run_id}.parquet")
