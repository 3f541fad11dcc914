"""Extraction cache compaction without a lock: real processes append and compact the same folder while
another reads it; no row is lost, each key is seen once with the same winner as a cache never compacted."""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.extraction.cache import CACHE_SCHEMA, ExtractionCache, _better
from medfilip.io import read_cache_parts

KEYS = [f"k{i:04d}" for i in range(300)]
WRITERS, PARTS = 4, 12


def planned_parts(writer: int) -> list[pa.Table]:
    """The parts one writer appends: random keys, both statuses, created_at values shared across
    writers (ties that only the content tie-break resolves)."""
    rng = random.Random(writer)
    parts = []
    for j in range(PARTS):
        rows = []
        for key in rng.sample(KEYS, 40):
            rows.append(
                {
                    "cache_key": key,
                    "report_id": f"w{writer}-p{j}-{key}",
                    "backend": "rules",
                    "model": "m",
                    "prompt_version": "v",
                    "status": rng.choice(["ok", "ok", "failed"]),
                    "error": None,
                    "triplets": [],
                    "dropped_uncategorised": writer,
                    "prompt_tokens": j,
                    "completion_tokens": 0,
                    "latency_s": rng.random(),
                    "created_at": float(rng.randrange(5)),
                }
            )
        parts.append(pa.Table.from_pylist(rows, schema=CACHE_SCHEMA))
    return parts


def _no_flock(*_args, **_kwargs):
    raise AssertionError("the cache took a flock")


def writer_process(root: str, writer: int) -> None:
    import fcntl

    fcntl.flock = _no_flock  # any lock taken in this process fails the test
    cache = ExtractionCache(root, compact_above=3)
    for part in planned_parts(writer):
        cache.append(part)
        cache.compact()  # as every extraction job does when it finishes; here after every flush
    cache.compact(force=True)


def reader_process(root: str, stop, results) -> None:
    """Loads the whole cache over and over; a key once seen must stay, its winner only get better."""
    import fcntl

    fcntl.flock = _no_flock
    cache = ExtractionCache(root)
    seen: dict[str, dict] = {}
    loads, problems = 0, []
    while not stop.is_set() or loads < 3:
        rows = cache.load()
        loads += 1
        for key, old in seen.items():
            new = rows.get(key)
            if new is None:
                problems.append(f"{key} vanished")
            elif new != old and not _better(new, old):
                problems.append(f"{key}: winner went back")
        seen = rows
        if problems:
            break
    results.put((loads, problems[:5]))


def test_concurrent_writers_and_compactors_lose_nothing_and_agree(tmp_path: Path):
    ctx = mp.get_context("spawn")
    root = tmp_path / "cache"
    stop, results = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=reader_process, args=(str(root), stop, results))
    reader.start()
    writers = [ctx.Process(target=writer_process, args=(str(root), w)) for w in range(WRITERS)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    loads, problems = results.get(timeout=120)
    reader.join(30)
    assert [p.exitcode for p in writers] == [0] * WRITERS and reader.exitcode == 0
    assert problems == [] and loads >= 3

    # the reference: the same parts appended to a cache that is never compacted, in another order
    reference = ExtractionCache(tmp_path / "reference")
    for w in reversed(range(WRITERS)):
        for part in reversed(planned_parts(w)):
            reference.append(part)
    want = reference.load()
    cache = ExtractionCache(root)
    got = cache.load()
    assert got == want and len(got) == len(KEYS)
    raw = read_cache_parts(root, CACHE_SCHEMA)
    assert raw.num_rows >= len(KEYS)  # racing compactions may leave duplicates on disk, never in load()
    cache.compact(force=True)
    assert len(cache.parts()) == 1 and cache.load() == want
    assert read_cache_parts(root, CACHE_SCHEMA).num_rows == len(KEYS)
    assert cache.compact(force=True) == 0 and cache.load() == want  # idempotent
    assert not (root / ".lock").exists()
    # ties of status and created_at went to the content, not to the order parts were read in
    tied = [
        k
        for k in KEYS
        if sum(
            1
            for w in range(WRITERS)
            for t in planned_parts(w)
            for r in t.to_pylist()
            if r["cache_key"] == k and r["status"] == want[k]["status"] and r["created_at"] == want[k]["created_at"]
        )
        > 1
    ]
    assert tied  # the plan has such ties, so the order-independence above was exercised


def _one(key: str, status: str, created: float, report: str = "r") -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "cache_key": key,
                "report_id": report,
                "backend": "rules",
                "model": "m",
                "prompt_version": "v",
                "status": status,
                "error": None,
                "triplets": [],
                "dropped_uncategorised": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "latency_s": 0.0,
                "created_at": created,
            }
        ],
        schema=CACHE_SCHEMA,
    )


def test_compaction_skips_a_part_another_compaction_removed_and_merges_old_parts(tmp_path: Path, monkeypatch):
    cache = ExtractionCache(tmp_path, compact_above=1)
    cache.append(_one("a", "failed", 1.0))
    cache.append(_one("a", "ok", 0.5))  # ok beats failed whatever the time
    cache.append(_one("b", "ok", 2.0))
    # a part of an older cache: the old compact name, no dropped_uncategorised column
    pq.write_table(
        _one("c", "ok", 1.0).drop_columns(["dropped_uncategorised"]),
        tmp_path / f"part-{time.time_ns() - 10**12:020d}-1-compact.parquet",
    )
    real = cache.parts()
    ghost = tmp_path / "part-00000000000000000001-1-gone.parquet"
    monkeypatch.setattr(cache, "parts", lambda: [ghost, *real])
    assert cache.compact() == 4
    monkeypatch.undo()
    [merged] = cache.parts()
    assert "compact" in merged.name
    rows = cache.load()
    assert (
        sorted(rows) == ["a", "b", "c"] and rows["a"]["status"] == "ok" and rows["c"]["dropped_uncategorised"] is None
    )


def test_a_reader_relists_when_a_part_vanishes(tmp_path: Path, monkeypatch):
    from medfilip import io

    cache = ExtractionCache(tmp_path)
    cache.append(_one("a", "ok", 1.0))
    real = io.cache_parts
    calls = []

    def listing(root):
        calls.append(1)
        parts = real(root)
        return parts + [Path(root) / "part-99999999999999999999-1-gone.parquet"] if len(calls) == 1 else parts

    monkeypatch.setattr(io, "cache_parts", listing)
    assert read_cache_parts(tmp_path, CACHE_SCHEMA).column("cache_key").to_pylist() == ["a"]
    assert len(calls) == 2
