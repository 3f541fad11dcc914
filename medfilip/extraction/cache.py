"""Content-addressed Parquet cache of extraction results, safe for many jobs on a shared file system.

Results are appended as small part files, each written atomically, so a run
killed at any moment loses at most the results it had not yet flushed and
never leaves a torn file.

Compaction takes no lock (``flock`` is unreliable on NFS and Lustre, where a cluster's jobs share
the cache). It is safe because of four rules:

1. Parts are immutable and uniquely named (time, pid and a random tag: two hosts never pick the
   same name); a part appears whole, by an atomic rename in the same folder, or not at all.
2. A compaction writes its merged part (rename) *before* it removes anything, and removes only the
   parts it has read in full. A part that vanishes while it reads (another compaction merged it)
   is skipped, neither merged nor removed.
3. Readers choose each key's winner with a total order on rows (an 'ok' row beats a 'failed' one,
   then the newer ``created_at``, then the row's content as a last tie-break), so the winner of a
   key is the same whichever parts hold its rows and in whatever order they are read: merging is
   associative, commutative and idempotent, and a compaction keeps each key's winner of what it read.
4. A reader that finds a listed part gone lists the folder again and reads the parts it has not read
   yet (medfilip.io.read_cache_parts).

So no row is lost: from the moment its part is renamed in, every row (or a row that beats it for the
same key) is in some part on disk, since a part goes only after a part holding its winners is in
place (2). Two compactions that race merge the same parts into two parts, and delete the originals
twice (harmless); the two merged parts hold the same winners, so readers see each key once with the
same row (3), and the next compaction merges them. A reader's answer holds every row that was in the
cache when it started: a part it could not read had its rows in a part renamed in before the first
one went, which the next listing shows (4). A killed compaction leaves at worst its merged part
beside the parts it merged: duplicates on disk, one row per key for readers.

The claims of :class:`KeyClaims` still use ``folder_lock``: where flock does not exclude, two jobs may
extract the same text twice (duplicate work, one row per key for readers), never lose one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.extraction.backend import ExtractionResult
from medfilip.extraction.schema import TRIPLET_TYPE, triplet_rows
from medfilip.io import (
    cache_parts,
    folder_lock,
    part_file_name,
    read_cache_parts,
    write_parquet_atomic,
    write_text_atomic,
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


def results_table(results: Iterable[tuple[str, ExtractionResult]], backend: str, model: str, version: str) -> pa.Table:
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
        """cache_key -> row (as a dict) for the wanted keys (all keys if None).

        With ``keys``, a filtered scan: each part is read row group by row group and only the
        wanted rows are kept (parts are written sorted by key, so row-group statistics skip most
        groups), so a job's memory follows its own shard, not the whole corpus's cache.
        """
        if keys is not None:
            table = _read_keys(self.root, sorted(set(keys)))
        else:
            table = read_cache_parts(self.root, CACHE_SCHEMA)
        return _winners(table.to_pylist())

    def append(self, table: pa.Table) -> Path | None:
        if table.num_rows == 0:
            return None
        name = part_file_name()
        return write_parquet_atomic(table.sort_by("cache_key"), self.root / name)

    def compact(self, force: bool = False) -> int:
        """Merge parts into one when there are many; returns the number of parts merged.

        No lock: several jobs may compact at once (see the module docstring for why no row is lost
        and none is seen twice)."""
        parts = self.parts()
        if len(parts) <= 1 or (not force and len(parts) <= self.compact_above):
            return 0
        tables, merged_parts = [], []
        for part in parts:
            table = _read_part(part)
            if table is not None:  # None: merged and removed by another compaction meanwhile
                tables.append(table)
                merged_parts.append(part)
        if len(merged_parts) <= 1:
            return 0
        rows = _winners(pa.concat_tables(tables).to_pylist())
        merged = pa.Table.from_pylist(list(rows.values()), schema=CACHE_SCHEMA).sort_by("cache_key")
        write_parquet_atomic(merged, self.root / part_file_name(f"compact{uuid.uuid4().hex[:8]}"))
        for part in merged_parts:  # the merged part is in place before any part it holds goes
            part.unlink(missing_ok=True)
        _remove_stale_temporaries(self.root)
        log.info("compacted %d cache parts in %s into %d rows", len(merged_parts), self.root, merged.num_rows)
        return len(merged_parts)

    def stats(self) -> dict:
        rows = self.load()
        return {
            "root": str(self.root),
            "parts": len(self.parts()),
            "entries": len(rows),
            "failed": sum(r["status"] != "ok" for r in rows.values()),
        }


def _read_keys(root: Path, keys: list[str]) -> pa.Table:
    """The rows of ``keys`` from every part: a filtered scan (row groups whose key range misses
    every wanted key are skipped; of the rest only matching rows are kept). A part deleted by a
    concurrent compaction between listing and reading is retried by read_cache_parts."""
    import pyarrow.dataset as ds

    if not keys:
        return CACHE_SCHEMA.empty_table()
    # the filter is pushed down to row groups; columns an older part lacks are null
    return read_cache_parts(root, CACHE_SCHEMA, filters=ds.field("cache_key").isin(pa.array(keys, pa.string())))


def _winners(rows: Iterable[dict]) -> dict[str, dict]:
    """cache_key -> its winning row (:func:`_better`); the same whatever the order of ``rows``."""
    best: dict[str, dict] = {}
    for row in rows:
        old = best.get(row["cache_key"])
        if old is None or _better(row, old):
            best[row["cache_key"]] = row
    return best


def _better(new: dict, old: dict) -> bool:
    """A total order on the rows of one key: 'ok' beats 'failed', then the newer ``created_at``, then
    (rows written at the same instant: in practice never) the larger content, so that the winner does not
    depend on which part a row is read from."""
    if (new["status"] == "ok") != (old["status"] == "ok"):
        return new["status"] == "ok"
    a, b = _created(new), _created(old)
    if a != b:
        return a > b
    return _content(new) >= _content(old)


def _created(row: dict) -> float:
    return -math.inf if row.get("created_at") is None else row["created_at"]


def _content(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _read_part(part: Path) -> pa.Table | None:
    """A part as a table of CACHE_SCHEMA (columns an older part lacks are null), or None if it is gone."""
    try:
        return pq.read_table(part, schema=CACHE_SCHEMA)
    except OSError as e:
        if isinstance(e, FileNotFoundError) or getattr(e, "errno", None) == errno.ESTALE or not part.exists():
            return None
        raise


def _remove_stale_temporaries(root: Path, age_s: float = 86_400.0) -> None:
    """Temporary files of writers killed before their rename (a day old: no live writer takes that long)."""
    now = time.time()
    for tmp in root.glob(".part-*.tmp"):
        try:
            if now - tmp.stat().st_mtime > age_s:
                tmp.unlink()
        except FileNotFoundError:
            pass


class KeyClaims:
    """The cache keys live extraction jobs are extracting right now: one ``<host>-<pid>-<tag>.keys``
    file per job under ``<cache>/claims/``, changed only under the folder's lock.

    A claim counts while its job lives: on this host, while its process exists and it touched its file
    within ``stale_s``; on another host (a cluster sharing the folder), while it touched its file
    within ``stale_s``. A killed job's claims are taken over by the next job that asks.
    """

    def __init__(self, cache_root: str | Path, stale_s: float = 600.0):
        self.root = Path(cache_root) / "claims"
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().replace("-", "_")
        self.path = self.root / f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.keys"
        self.stale_s = stale_s
        self.keys: set[str] = set()
        self._touched = 0.0

    def _alive(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_s:
            return False
        host, pid, _ = path.stem.rsplit("-", 2)
        if host != self.host:
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return True

    def held_elsewhere(self) -> set[str]:
        """Keys claimed by other live jobs (stale claim files are removed on the way)."""
        held: set[str] = set()
        for path in self.root.glob("*.keys"):
            if path == self.path:
                continue
            if not self._alive(path):
                path.unlink(missing_ok=True)
                continue
            try:
                held.update(path.read_text(encoding="utf-8").split())
            except FileNotFoundError:
                continue
        return held

    def claim(self, keys: Iterable[str], done: Callable[[list[str]], set[str]]) -> tuple[list[str], list[str]]:
        """Claim the keys no live job holds and ``done`` does not report finished (read after the claims,
        so a job that flushed and released in between is seen); returns (claimed, held elsewhere)."""
        keys = list(dict.fromkeys(keys))
        with folder_lock(self.root):
            others = self.held_elsewhere()
            theirs = [k for k in keys if k in others]
            free = [k for k in keys if k not in others]
            finished = done(free) if free else set()
            mine = [k for k in free if k not in finished]
            if mine:
                self.keys.update(mine)
                write_text_atomic("\n".join(sorted(self.keys)) + "\n", self.path)
                self._touched = time.time()
        return mine, theirs

    def touch(self, every_s: float = 30.0) -> None:
        """Mark this job alive (cheap: at most once every ``every_s``)."""
        now = time.time()
        if self.keys and now - self._touched >= every_s:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)
            self._touched = now

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self.keys.clear()
