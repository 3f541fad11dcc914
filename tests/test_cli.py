"""The stage CLIs chained on real IU-Xray reports (a slice of the corpus torchxrayvision ships), and DuckDB queries."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from medfilip.cli import main


@pytest.fixture(scope="module")
def results(tmp_path_factory, repo):
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "reports": {"n_shards": 2, "limit": 60},
        "extraction": {"rules": {"vocabulary_dir": str(repo / "resources" / "vocabulary")}},
        "quality": {"mesh_mapping": str(repo / "resources" / "mesh" / "mesh_to_category.yaml")},
    }))
    res = root / "results"
    shards = [res / "reports" / "shards" / f"00{i}.parquet" for i in range(2)]
    outs = [res / "extraction" / "rules" / f"00{i}.parquet" for i in range(2)]
    c = ["-q", "-c", str(cfg)]
    assert main(c + ["reports", "--out-dir", str(res / "reports" / "shards"), "--rejects", str(res / "reports" / "rejects.parquet")]) == 0
    assert main(c + ["extract", "--shards", *map(str, shards), "--out", *map(str, outs), "--cache-dir", str(root / "cache"),
                     "--runs-dir", str(res / "extraction" / "runs"), "--no-progress"]) == 0
    assert main(c + ["entities", *map(str, outs), "--out", str(res / "entities.parquet")]) == 0
    assert main(c + ["quality", "--reports", *map(str, shards), "--entities", str(res / "entities.parquet"),
                     "--out", str(res / "tables" / "extraction_quality.csv")]) == 0
    return res


def test_reports_are_sharded_with_the_contract_columns(results):
    table = pq.read_table(results / "reports" / "shards")
    assert table.num_rows == 60
    assert {"report_id", "source", "subject_id", "study_id", "findings", "impression", "text", "split"} <= set(table.column_names)
    assert set(table["split"].to_pylist()) <= {"train", "validate", "test"}
    assert all("XXXX" not in t for t in table["text"].to_pylist())


def test_query_answers_over_the_views(results, capsys):
    capsys.readouterr()
    assert main(["query", "--results", str(results), "--format", "json",
                 "select count(*) as n, count(distinct report_id) as r from reports"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {"n": 60, "r": 60}
    assert main(["query", "--results", str(results), "--format", "csv",
                 "select e.polarity, count(*) as n from entities e join reports r using (report_id) group by 1 order by 1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "polarity,n"
    assert {l.split(",")[0] for l in lines[1:]} <= {"present", "negated", "uncertain"}
    assert main(["query", "--results", str(results), "--format", "json",
                 "select sum(n_reports) as n, sum(n_extracted) as x from extraction_runs"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == 60 and 0 < row["x"] <= 60


def test_query_error_is_a_message_not_a_traceback(results, capsys):
    assert main(["query", "--results", str(results), "select * from no_such_view"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("query failed:") and "no_such_view" in err


def test_query_cannot_change_the_parquet_files(results, capsys):
    before = (results / "entities.parquet").read_bytes()
    main(["query", "--results", str(results), "delete from entities"])
    assert (results / "entities.parquet").read_bytes() == before
