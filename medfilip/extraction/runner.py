"""Run a backend over a report shard through the shared cache.

Only reports whose cache key is missing reach the backend; results are
flushed to the cache every ``flush_every`` reports, so a killed run resumes
where it stopped without losing or duplicating finished reports.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from medfilip.extraction.backend import ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.cache import CACHE_SCHEMA, ExtractionCache, results_table
from medfilip.io import write_parquet_atomic

log = logging.getLogger(__name__)

SHARD_COLUMNS = [
    "report_id", "cache_key", "backend", "model", "prompt_version", "status", "error", "triplets",
    "dropped_uncategorised", "prompt_tokens", "completion_tokens", "latency_s",
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
    n_triplets: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


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
) -> ShardRun:
    reports_path, out_path = Path(reports_path), Path(out_path)
    shard = reports_path.stem
    table = pq.read_table(reports_path, columns=["report_id", "text"])
    report_ids = table["report_id"].to_pylist()
    texts = table["text"].to_pylist()
    keys = [backend.cache_key(t) for t in texts]
    run = ShardRun(uuid.uuid4().hex[:12], shard, backend.name, backend.model, backend.version, time.time())
    run.n_reports = len(report_ids)

    cached = cache.load(keys)
    todo: list[ReportText] = []
    key_of: dict[str, str] = {}
    seen: set[str] = set()
    for rid, text, key in zip(report_ids, texts, keys):
        row = cached.get(key)
        if row is not None and (row["status"] == "ok" or not retry_failed):
            continue
        if key in seen:  # identical text in two reports: extract once
            continue
        seen.add(key)
        todo.append(ReportText(rid, text))
        key_of[rid] = key
    run.n_cached = run.n_reports - len(todo)
    log.info("shard %s: %d reports, %d cached, %d to extract with %s/%s",
             shard, run.n_reports, run.n_cached, len(todo), backend.name, backend.model)

    buffer: list[tuple[str, ExtractionResult]] = []

    def flush() -> None:
        if buffer:
            cache.append(results_table(buffer, backend.name, backend.model, backend.version))
            buffer.clear()

    bar = tqdm(total=len(todo), desc=f"extract {backend.name} shard {shard}", unit="report",
               disable=not progress or not todo, mininterval=1.0)
    try:
        for result in backend.extract(todo):
            buffer.append((key_of[result.report_id], result))
            run.n_extracted += 1
            run.n_failed += result.status != "ok"
            run.prompt_tokens += result.prompt_tokens
            run.completion_tokens += result.completion_tokens
            run.cost_usd += backend.cost(result.prompt_tokens, result.completion_tokens)
            if run.cost_usd > 0:
                bar.set_postfix_str(f"${run.cost_usd:.4f} spent", refresh=False)
            bar.update(1)
            if len(buffer) >= flush_every:
                flush()
    finally:
        flush()  # on an exception too: finished work is kept
        bar.close()
    cache.compact()

    rows = cache.load(keys)
    out_rows = []
    for rid, key in zip(report_ids, keys):
        row = dict(rows[key])
        row["report_id"] = rid
        out_rows.append({c: row[c] for c in SHARD_COLUMNS})
        run.n_triplets += len(row["triplets"])
    write_parquet_atomic(pa.Table.from_pylist(out_rows, schema=SHARD_SCHEMA), out_path)
    run.wall_s = time.time() - run.started_at
    if runs_dir is not None:
        record_run(run, Path(runs_dir))
    failed_total = sum(r["status"] != "ok" for r in out_rows)
    log.info("shard %s done in %.1fs: %d extracted, %d failed in shard, %d triplets, %d+%d tokens, $%.4f",
             shard, run.wall_s, run.n_extracted, failed_total, run.n_triplets, run.prompt_tokens,
             run.completion_tokens, run.cost_usd)
    return run


def record_run(run: ShardRun, runs_dir: Path) -> Path:
    row = asdict(run)
    row["started_at"] = int(row["started_at"])
    table = pa.Table.from_pylist([row], schema=RUN_SCHEMA)
    return write_parquet_atomic(table, runs_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{run.shard}-{run.run_id}.parquet")
