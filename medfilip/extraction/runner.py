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
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.extraction.backend import ExtractionAborted, ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.cache import CACHE_SCHEMA, ExtractionCache, KeyClaims, results_table
from medfilip.io import progress_bar, write_parquet_atomic

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
    reports_path, out_path = Path(reports_path), Path(out_path)
    shard = reports_path.stem
    table = pq.read_table(reports_path, columns=["report_id", "text"])
    report_ids = table["report_id"].to_pylist()
    texts = table["text"].to_pylist()
    keys = [backend.cache_key(t) for t in texts]
    run = ShardRun(uuid.uuid4().hex[:12], shard, backend.name, backend.model, backend.version, time.time())
    run.n_reports = len(report_ids)
    text_of = dict(zip(keys, texts))
    first_id: dict[str, str] = {}
    for rid, key in zip(report_ids, keys):
        first_id.setdefault(key, rid)  # identical text in two reports: extract once

    def finished(wanted: list[str]) -> set[str]:
        rows = cache.load(wanted)
        return {
            k
            for k, row in rows.items()
            if row["status"] == "ok" or not retry_failed or row["created_at"] >= run.started_at
        }

    done_before = finished(list(first_id))
    wanted = [k for k in first_id if k not in done_before]
    claims = KeyClaims(cache.root)
    buffer: list[tuple[str, ExtractionResult]] = []
    bar = None

    def flush() -> None:
        if buffer:
            cache.append(results_table(buffer, backend.name, backend.model, backend.version))
            buffer.clear()

    def extract(batch: list[str]) -> None:
        for result in backend.extract([ReportText(first_id[k], text_of[k]) for k in batch]):
            buffer.append((key_of_id[result.report_id], result))
            ok = result.status == "ok"
            run.n_extracted += ok
            run.n_failed += not ok
            run.prompt_tokens += result.prompt_tokens
            run.completion_tokens += result.completion_tokens
            run.cost_usd += backend.cost(result.prompt_tokens, result.completion_tokens)
            if run.cost_usd > 0:
                bar.set_postfix_str(f"${run.cost_usd:.4f} spent", refresh=False)
            bar.update(1)
            claims.touch()
            if len(buffer) >= flush_every:
                flush()

    key_of_id = {first_id[k]: k for k in first_id}
    try:
        mine, theirs = claims.claim(wanted, finished)
        log.info(
            "shard %s: %d reports, %d texts to extract with %s/%s (%d of them being extracted by another job)",
            shard,
            run.n_reports,
            len(wanted),
            backend.name,
            backend.model,
            len(theirs),
        )
        bar = progress_bar(
            total=len(mine) + len(theirs),
            desc=f"extract {backend.name} shard {shard}",
            unit="report",
            disable=not progress or not wanted,
        )
        try:
            extract(mine)
        finally:
            flush()  # on an exception too: finished work is kept
            claims.release()  # flushed: a job waiting for these texts finds them in the cache
        waiting, last_look = theirs, time.time()
        while waiting:
            # texts another live job claimed: it releases them once flushed (or dies, and they are
            # taken over here). Claims are cheap to read; the cache is read when some were released,
            # and at least every 30 s.
            time.sleep(poll_s)
            held = claims.held_elsewhere()
            if all(k in held for k in waiting) and time.time() - last_look < 30:
                continue
            last_look = time.time()
            done = finished(waiting)
            bar.update(len(done))
            waiting = [k for k in waiting if k not in done]
            if waiting:
                taken, waiting = claims.claim(waiting, finished)
                if taken:
                    log.info(
                        "shard %s: %d texts claimed by a job that stopped; extracting them here", shard, len(taken)
                    )
                    try:
                        extract(taken)
                    finally:
                        flush()
                        claims.release()
    finally:
        claims.release()
        if bar is not None:
            bar.close()
    cache.compact()

    rows = cache.load(keys)
    out_rows = []
    for rid, key in zip(report_ids, keys):
        row = dict(rows[key])
        row["report_id"] = rid
        out_rows.append({c: row[c] for c in SHARD_COLUMNS})
        run.n_triplets += len(row["triplets"])
    failed = [r for r in out_rows if r["status"] != "ok"]
    run.n_failed_in_shard = len(failed)
    run.n_cached = run.n_reports - run.n_extracted - run.n_failed
    run.wall_s = time.time() - run.started_at
    if runs_dir is not None:
        record_run(run, Path(runs_dir))
    log.info(
        "shard %s done in %.1fs: %d extracted, %d failed (%d failed in shard), %d triplets, %d+%d tokens, $%.4f",
        shard,
        run.wall_s,
        run.n_extracted,
        run.n_failed,
        run.n_failed_in_shard,
        run.n_triplets,
        run.prompt_tokens,
        run.completion_tokens,
        run.cost_usd,
    )
    check_failures(run, failed, backend.name, max_failure_share)
    write_parquet_atomic(pa.Table.from_pylist(out_rows, schema=SHARD_SCHEMA), out_path)
    return run


def check_failures(run: ShardRun, failed: list[dict], backend: str, max_failure_share: float) -> None:
    """Raise :class:`ExtractionFailed` when the shard's failed share is above the limit."""
    if not failed or run.n_reports == 0 or len(failed) / run.n_reports <= max_failure_share:
        return
    from collections import Counter

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
