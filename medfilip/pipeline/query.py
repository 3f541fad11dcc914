"""DuckDB over the pipeline's Parquet outputs: ``medfilip query "select ..."``.

Views (read-only: they only read Parquet files):
  reports          results/reports/shards/*.parquet (one row per report: the newest shard holding it)
  entities         results/entities.parquet
  extraction       results/extraction/<backend>/<shard>.parquet (one row per report and backend, from
                   the newest shard file, for the reports of the current shards only)
  extraction_runs  results/extraction/runs/*.parquet (one row per shard run)
  rejects          results/reports/rejects.parquet
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from medfilip.pipeline import paths

VIEWS = {
    "reports": "reports/shards/*.parquet",
    "entities": "entities.parquet",
    "extraction": "extraction/*/*.parquet",
    "extraction_runs": "extraction/runs/*.parquet",
    "rejects": "reports/rejects.parquet",
}
# Views over files that a re-run or another shard count may leave side by side: each report counts
# once, from the newest file that holds it (and, for extraction, only reports in the current shards).
ONE_ROW_PER = {"reports": ("report_id",), "extraction": ("backend", "report_id")}


def _files(results: Path, name: str) -> list[Path]:
    """The view's files, oldest first. Extraction shards are the digit-named files of a backend's
    folder: never the run records of extraction/runs/."""
    files = [p for p in results.glob(VIEWS[name]) if p.is_file()]
    if name == "extraction":
        files = [p for p in files if p.parent.name != "runs" and p.stem.isdigit()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(results: str | Path = paths.RESULTS) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose views read the Parquet outputs; nothing is written back."""
    results = Path(results)
    con = duckdb.connect(":memory:")
    for name in VIEWS:
        files = _files(results, name)
        if not files:
            continue
        listed = "[" + ", ".join(_quote(str(p)) for p in files) + "]"
        if name not in ONE_ROW_PER:
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({listed}, union_by_name=true)")
            continue
        ranks = ", ".join(f"({_quote(str(p))}, {i})" for i, p in enumerate(files))
        keys = ", ".join(ONE_ROW_PER[name])
        current = ""
        if name == "extraction" and "reports" in {
            v for (v,) in con.execute("select view_name from duckdb_views()").fetchall()
        }:
            current = "WHERE report_id IN (SELECT report_id FROM reports)"
        con.execute(
            f"""CREATE VIEW {name} AS SELECT * EXCLUDE (filename, _rank) FROM (
                  SELECT t.*, r._rank FROM read_parquet({listed}, union_by_name=true, filename=true) t
                  JOIN (VALUES {ranks}) r(_file, _rank) ON t.filename = r._file {current}
                ) QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _rank DESC) = 1"""
        )
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ValueError unless every statement of ``sql`` is a SELECT (SHOW, DESCRIBE, SUMMARIZE are).

    DuckDB writes files on request: ``COPY entities TO 'results/entities.parquet'`` (or an EXPLAIN
    ANALYZE of it) would replace a pipeline output, and ATTACH, INSTALL, SET ... act outside the views.
    """
    for statement in con.extract_statements(sql):
        if statement.type != duckdb.StatementType.SELECT:
            kind = str(statement.type).rsplit(".", 1)[-1]
            raise ValueError(f"medfilip query is read-only: {kind} statements are refused (only SELECT)")


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
