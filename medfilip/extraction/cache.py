"""Content-addressed Parquet cache of extraction results.

Results are appended as small part files, each written atomically, so a run
killed at any moment loses at most the results it had not yet flushed and
never leaves a torn file. Parts are merged under an exclusive lock.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from medfilip.extraction.backend import ExtractionResult
from medfilip.extraction.schema import TRIPLET_TYPE, triplet_rows
from medfilip.io import (
    cache_parts,
    folder_lock,
    part_file_name,
    read_cache_parts,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

CACHE_SCHEMA = pa.schema(
    [
        ("cache_key", pa.string()),
        ("report_id", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("triplets", pa.list_(TRIPLET_TYPE)),
        ("dropped_uncategorised", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("created_at", pa.float64()),
    ]
)


def results_table(
    results: Iterable[tuple[str, ExtractionResult]], backend: str, model: str, version: str
) -> pa.Table:
    now = time.time()
    rows: dict[str, list] = {name: [] for name in CACHE_SCHEMA.names}
    for key, r in results:
        rows["cache_key"].append(key)
        rows["report_id"].append(r.report_id)
        rows["backend"].append(backend)
        rows["model"].append(model)
        rows["prompt_version"].append(version)
        rows["status"].append(r.status)
        rows["error"].append(r.error)
        rows["triplets"].append(triplet_rows(r.triplets))
        rows["dropped_uncategorised"].append(r.dropped_uncategorised)
        rows["prompt_tokens"].append(r.prompt_tokens)
        rows["completion_tokens"].append(r.completion_tokens)
        rows["latency_s"].append(r.latency_s)
        rows["created_at"].append(now)
    return pa.table(rows, schema=CACHE_SCHEMA)


class ExtractionCache:
    """A folder of Parquet parts; the newest row of a key wins, an 'ok' row beats a 'failed' one."""

    def __init__(self, root: str | Path, compact_above: int = 64):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.compact_above = compact_above

    def parts(self) -> list[Path]:
        return cache_parts(self.root)

    def load(self, keys: Iterable[str] | None = None) -> dict[str, dict]:
        """cache_key -> row (as a dict) for the wanted keys (all keys if None)."""
        table = read_cache_parts(self.root, CACHE_SCHEMA)
        if keys is not None:
            import pyarrow.compute as pc

            wanted = pa.array(sorted(set(keys)), pa.string())
            table = table.filter(pc.is_in(table["cache_key"], value_set=wanted))
        best: dict[str, dict] = {}
        for row in table.to_pylist():
            old = best.get(row["cache_key"])
            if old is None or _better(row, old):
                best[row["cache_key"]] = row
        return best

    def append(self, table: pa.Table) -> Path | None:
        if table.num_rows == 0:
            return None
        name = part_file_name()
        return write_parquet_atomic(table, self.root / name)

    def compact(self, force: bool = False) -> int:
        """Merge parts into one when there are many; returns the number of parts merged."""
        with folder_lock(self.root):
            parts = self.parts()
            if len(parts) <= 1 or (not force and len(parts) <= self.compact_above):
                return 0
            rows = self.load()
            merged = pa.Table.from_pylist(list(rows.values()), schema=CACHE_SCHEMA)
            name = part_file_name("compact")
            write_parquet_atomic(merged, self.root / name)
            for p in parts:  # the merged file is in place before any part goes
                p.unlink(missing_ok=True)
            log.info("compacted %d cache parts in %s into %d rows", len(parts), self.root, merged.num_rows)
            return len(parts)

    def stats(self) -> dict:
        rows = self.load()
        return {"root": str(self.root), "parts": len(self.parts()), "entries": len(rows),
                "failed": sum(r["status"] != "ok" for r in rows.values())}


def _better(new: dict, old: dict) -> bool:
    if (new["status"] == "ok") != (old["status"] == "ok"):
        return new["status"] == "ok"
    return new["created_at"] >= old["created_at"]

