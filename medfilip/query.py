"""DuckDB over the pipeline's Parquet outputs: ``medfilip query "select ..."``.

Views (read-only: they only read Parquet files):
  reports          results/reports/shards/*.parquet
  entities         results/entities.parquet
  extraction       results/extraction/<backend>/*.parquet (one row per report and backend)
  extraction_runs  results/extraction/runs/*.parquet (one row per shard run)
  rejects          results/reports/rejects.parquet
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

VIEWS = {
    "reports": "reports/shards/*.parquet",
    "entities": "entities.parquet",
    "extraction": "extraction/*/[0-9]*.parquet",
    "extraction_runs": "extraction/runs/*.parquet",
    "rejects": "reports/rejects.parquet",
}


def connect(results: str | Path = "results") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose views read the Parquet outputs; nothing is written back."""
    results = Path(results)
    con = duckdb.connect(":memory:")
    for name, pattern in VIEWS.items():
        if any(results.glob(pattern)):
            path = str(results / pattern).replace("'", "''")
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}', union_by_name=true)")
    return con


def format_result(result: duckdb.DuckDBPyConnection, fmt: str = "table", max_rows: int = 50) -> str:
    columns = [d[0] for d in result.description or []]
    rows = result.fetchmany(max_rows + 1)
    more = len(rows) > max_rows
    rows = rows[:max_rows]
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(columns)]
    fmt_row = lambda vals: " | ".join(v[:w].ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [fmt_row(columns), "-+-".join("-" * w for w in widths)] + [fmt_row(r) for r in cells]
    if more:
        out.append(f"... (more than {max_rows} rows; use --max-rows)")
    return "\n".join(out)
