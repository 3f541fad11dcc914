"""Issue 12.5: ``medfilip query`` counts each report once, from the current results only."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.rules import RulesBackend
from medfilip.extraction.runner import extract_shard
from medfilip.io import write_parquet_atomic
from medfilip.pipeline.cli import main
from medfilip.reports.records import Report
from medfilip.reports.shards import reports_table


def _query(results: Path, sql: str, capsys) -> dict:
    capsys.readouterr()
    assert main(["query", "--results", str(results), "--format", "json", sql]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    return row


def test_extraction_view_counts_each_report_once_after_reruns(tmp_path: Path, repo: Path, capsys):
    results = tmp_path / "results"
    backend = RulesBackend(repo / "resources" / "vocabulary")
    cache = ExtractionCache(tmp_path / "cache")
    shards = []
    for s in range(2):
        reports = [
            Report(f"S{s}R{i}", "test", "p", "s", f"Report {s}-{i}. Mild cardiomegaly.", "", "train") for i in range(5)
        ]
        shards.append(write_parquet_atomic(reports_table(reports), results / "reports" / "shards" / f"00{s}.parquet"))

    def run_all():
        for shard in shards:
            extract_shard(
                shard,
                backend,
                cache,
                results / "extraction" / "rules" / shard.name,
                runs_dir=results / "extraction" / "runs",
                progress=False,
            )

    run_all()
    run_all()  # a forced re-run: two more run records
    count = "select count(*) as n, count(distinct report_id) as r from extraction"
    assert _query(results, count, capsys) == {"n": 10, "r": 10}
    assert _query(results, "select count(*) as n from extraction_runs", capsys) == {"n": 4}

    # a stale copy of a shard from an earlier run (e.g. another n_shards) holding the same reports,
    # and one holding a report no longer in the corpus
    stale = results / "extraction" / "rules" / "002.parquet"
    pq.write_table(pq.read_table(results / "extraction" / "rules" / "000.parquet"), stale)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    gone = pq.read_table(stale).to_pylist()[:1]
    gone[0]["report_id"] = "DELETED"
    pq.write_table(
        pa.Table.from_pylist(gone, schema=pq.read_schema(stale)), results / "extraction" / "rules" / "003.parquet"
    )
    assert _query(results, count, capsys) == {"n": 10, "r": 10}
    # the newest file wins: a re-extraction's rows are the ones shown
    row = _query(results, "select status from extraction where report_id = 'S0R0'", capsys)
    assert row == {"status": "ok"}
    assert _query(results, "select count(*) as n from reports", capsys) == {"n": 10}
