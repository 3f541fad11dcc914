"""Issue 12.1: a down LLM endpoint never turns into "normal" labels.

The openai backend is pointed at a closed port on 127.0.0.1 (nothing listens: every request is a
connection error). The stage stops with a message saying how to retry; with failures tolerated,
failed reports are left out of entities and labels and counted, and ``n_extracted`` counts
successes only.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from medfilip.extraction.settings import ExtractionConfig
from medfilip.io import write_parquet_atomic
from medfilip.pipeline.cli import main
from medfilip.reports.records import Report
from medfilip.reports.shards import reports_table

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Mild cardiomegaly.",
    "No acute disease.",
    "Small left pleural effusion.",
    "The lungs are clear.",
    "No pneumothorax.",
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: connections are refused


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDFILIP_TEST_KEY", "sk-test-not-a-real-key")
    reports = [Report(f"R{i}", "test", f"p{i}", f"s{i}", t, "", "train") for i, t in enumerate(TEXTS)]
    write_parquet_atomic(reports_table(reports), tmp_path / "shards" / "000.parquet")
    return tmp_path


def write_config(root: Path, backend: str, **extraction) -> Path:
    cfg = {
        "extraction": {
            "backend": backend,
            "rules": {"vocabulary_dir": str(ROOT / "resources" / "vocabulary")},
            "openai": {
                "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                "api_key_env": "MEDFILIP_TEST_KEY",
                "prompt": str(ROOT / "resources" / "prompts" / "triplets.yaml"),
                "max_retries": 0,
                "timeout_s": 5,
            },
            **extraction,
        },
        "knowledge": {"path": str(ROOT / "resources" / "knowledge" / "dictionary.yaml")},
    }
    path = root / f"{backend}-{len(extraction)}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def extract(config: Path, root: Path, backend: str, *extra: str) -> tuple[int, Path]:
    out = root / "extraction" / backend / "000.parquet"
    rc = main(
        [
            "-c",
            str(config),
            "extract",
            "--shards",
            str(root / "shards" / "000.parquet"),
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache" / backend),
            "--runs-dir",
            str(root / "runs" / backend),
            *extra,
        ]
    )
    return rc, out


def labels(config: Path, root: Path, extraction: Path) -> list[dict]:
    assert main(["-c", str(config), "entities", str(extraction), "--out", str(root / "entities.parquet")]) == 0
    assert (
        main(
            [
                "-c",
                str(config),
                "labels",
                "--reports",
                str(root / "shards" / "000.parquet"),
                "--entities",
                str(root / "entities.parquet"),
                "--extractions",
                str(extraction),
                "--out",
                str(root / "labels.parquet"),
            ]
        )
        == 0
    )
    return pq.read_table(root / "labels.parquet").to_pylist()


def test_default_failure_share_is_zero_for_paid_backends_and_tolerant_for_rules():
    assert ExtractionConfig(backend="openai").failure_share_limit() == 0.0
    assert ExtractionConfig(backend="rules").failure_share_limit() == 1.0
    assert ExtractionConfig(backend="openai", max_failure_share=0.25).failure_share_limit() == 0.25


def test_down_endpoint_stops_the_stage_with_how_to_retry(project: Path, capsys):
    rc, out = extract(write_config(project, "openai"), project, "openai")
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "5 of 5 reports failed extraction with the openai backend" in err
    assert "connection error" in err and "retry_failed: true" in err and "max_failure_share" in err
    assert not out.exists(), "a shard of failures is not written, so nothing downstream reads it"
    runs = pq.read_table(project / "runs" / "openai").to_pylist()
    assert [(r["n_extracted"], r["n_failed"], r["n_failed_in_shard"]) for r in runs] == [(0, 5, 5)]


def test_tolerated_failures_are_left_out_of_entities_and_labels(project: Path, capsys, caplog):
    config = write_config(project, "openai", max_failure_share=1.0)
    rc, out = extract(config, project, "openai")
    assert rc == 0, capsys.readouterr().err
    assert pq.read_table(out)["status"].to_pylist() == ["failed"] * 5
    assert pq.read_table(project / "runs" / "openai")["n_extracted"].to_pylist() == [0]
    rows = labels(config, project, out)
    assert rows == [], "a failed extraction is never a normal report"
    assert "5 left out: extraction failed" in capsys.readouterr().out
    assert "5 reports have failed extractions and contribute no entities" in caplog.text

    # the same reports extracted for real: the normal ones are normal, and only those
    rules = write_config(project, "rules")
    rc, out = extract(rules, project, "rules")
    assert rc == 0
    rows = labels(rules, project, out)
    normal = {r["report_id"] for r in rows if r["is_normal"]}
    assert normal == {"R1", "R3", "R4"}
    assert {r["report_id"] for r in rows} == {f"R{i}" for i in range(5)}


def test_a_partly_failed_shard_counts_successes_only(project: Path, capsys):
    """n_extracted counts successes; a retry after the endpoint is back extracts only the failures."""
    import openai_server

    config = write_config(project, "openai", max_failure_share=1.0)
    assert extract(config, project, "openai")[0] == 0
    with openai_server.OpenAIServer(api_key="sk-test-not-a-real-key") as server:
        cfg = yaml.safe_load(config.read_text())
        cfg["extraction"]["openai"]["base_url"] = server.base_url
        cfg["extraction"]["max_failure_share"] = None
        config.write_text(yaml.safe_dump(cfg))
        rc, out = extract(config, project, "openai")
        assert rc == 3 and "retry_failed" in capsys.readouterr().err  # cached failures still stop it
        rc, out = extract(config, project, "openai", "--retry-failed")
        assert rc == 0, capsys.readouterr().err
        assert server.count() == 5
    runs = pq.read_table(project / "runs" / "openai").to_pylist()
    assert sorted((r["n_extracted"], r["n_failed"]) for r in runs) == [(0, 0), (0, 5), (5, 0)]
    assert pq.read_table(out)["status"].to_pylist() == ["ok"] * 5
