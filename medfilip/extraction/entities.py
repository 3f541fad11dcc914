"""Flatten extraction shards into ``entities.parquet``, one row per triplet, with canonical categories."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.extraction.vocabulary import Vocabulary
from medfilip.io import write_parquet_atomic

log = logging.getLogger(__name__)

ENTITY_SCHEMA = pa.schema(
    [
        ("report_id", pa.string()),
        ("severity", pa.string()),
        ("location", pa.string()),
        ("category_raw", pa.string()),
        ("category", pa.string()),  # canonical; null when the vocabulary has no name for category_raw
        ("polarity", pa.string()),
        ("sentence", pa.string()),
        ("backend", pa.string()),
    ]
)


def build_entities(extraction_paths: Iterable[str | Path], vocabulary: Vocabulary, out_path: str | Path) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in ENTITY_SCHEMA.names}
    unmapped: Counter[str] = Counter()
    cache: dict[str, str | None] = {}
    n_failed = 0
    for path in extraction_paths:
        table = pq.read_table(path, columns=["report_id", "backend", "status", "triplets"])
        for rec in table.to_pylist():
            if rec["status"] != "ok":
                n_failed += 1
                continue
            seen = set()
            for t in rec["triplets"]:
                raw = t["category"]
                if raw not in cache:
                    cache[raw] = vocabulary.normalise(raw)
                canonical = cache[raw]
                if canonical is None:
                    unmapped[raw] += 1
                # every backend's locations read as the vocabulary says (no "heart opacity")
                location = vocabulary.tidy_location(t["location"], canonical)
                key = (t["sentence"], raw, t["polarity"], location, t["severity"])
                if key in seen:  # same statement twice in a sentence
                    continue
                seen.add(key)
                rows["report_id"].append(rec["report_id"])
                rows["severity"].append(t["severity"])
                rows["location"].append(location)
                rows["category_raw"].append(raw)
                rows["category"].append(canonical)
                rows["polarity"].append(t["polarity"])
                rows["sentence"].append(t["sentence"])
                rows["backend"].append(rec["backend"])
    table = pa.table(rows, schema=ENTITY_SCHEMA)
    write_parquet_atomic(table, out_path)
    if unmapped:
        log.warning(
            "%d raw categories have no canonical name (kept with category null); most common: %s",
            len(unmapped),
            ", ".join(f"{k!r} x{v}" for k, v in unmapped.most_common(5)),
        )
    if n_failed:
        log.warning("%d reports have failed extractions and contribute no entities", n_failed)
    log.info("wrote %d entities to %s", table.num_rows, out_path)
    return table
