"""A job reads only its own keys from the extraction cache (a filtered scan), with the same rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.extraction.cache import CACHE_SCHEMA, ExtractionCache


def _rows(keys, status="ok", created=1.0):
    return pa.Table.from_pylist(
        [
            {
                "cache_key": k,
                "report_id": f"r{k}",
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
            for k in keys
        ],
        schema=CACHE_SCHEMA,
    )


def test_load_of_keys_reads_only_them_and_agrees_with_a_full_read(tmp_path):
    cache = ExtractionCache(tmp_path)
    cache.append(_rows([f"k{i:04d}" for i in range(0, 3000, 2)], status="failed"))
    cache.append(_rows([f"k{i:04d}" for i in range(1000, 0, -1)], created=2.0))
    # an older part without the dropped_uncategorised column still reads (null)
    old = _rows(["k9999"]).drop_columns(["dropped_uncategorised"])
    pq.write_table(old, tmp_path / "part-old.parquet")
    wanted = ["k0002", "k0003", "k2000", "k9999", "missing"]
    got = cache.load(wanted)
    full = cache.load()
    assert set(got) == {"k0002", "k0003", "k2000", "k9999"}
    for key, row in got.items():
        assert row == full[key]
    assert got["k0002"]["status"] == "ok" and got["k2000"]["status"] == "failed"  # ok beats failed
    assert got["k9999"]["dropped_uncategorised"] is None
    assert cache.load([]) == {}
    # parts are written sorted by key (row-group statistics then skip groups a job does not need)
    part = next(p for p in cache.parts() if p.name != "part-old.parquet")
    keys = pq.read_table(part, columns=["cache_key"]).column(0).to_pylist()
    assert keys == sorted(keys)
