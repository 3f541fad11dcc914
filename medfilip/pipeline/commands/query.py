"""``medfilip query``: read-only SQL over the results (DuckDB)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medfilip.pipeline import paths


def cmd_query(args: argparse.Namespace) -> int:
    from medfilip.pipeline.query import check_read_only, connect, format_result

    con = connect(args.results)
    try:
        check_read_only(con, args.sql)
        result = con.execute(args.sql)
    except Exception as err:  # noqa: BLE001 - duckdb raises many error types; show the message, not a traceback
        print(f"query failed: {err}", file=sys.stderr)
        return 2
    print(format_result(result, args.format, args.max_rows))
    return 0


def register(sub) -> None:
    s = sub.add_parser("query", help="run SQL over reports, entities and extraction_runs (DuckDB, read-only)")
    s.add_argument("sql", help="SELECT statements only (COPY, CREATE, ATTACH, SET ... are refused)")
    s.add_argument("--results", type=Path, default=Path(paths.RESULTS), help="results folder")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--max-rows", type=int, default=50)
    s.set_defaults(func=cmd_query)
