"""Issue 12, workflow side: bad paths stop before any job, each invocation has its own effective
config, the corpus path re-runs the reports stage, an empty corpus is an error, and rule logs show
progress. Real snakemake runs on the 7-report corpus of the `project` fixture (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import job_counts, mtimes, output_of, snakemake

from medfilip.pipeline.cli import main
from medfilip.pipeline.config_checks import path_problems

SHARDS_TARGET = "results/reports/rejects.parquet"


def write(project: Path, name: str, **changes) -> Path:
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = project / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


# -- 12.2: every path and model reference checked before any job ---------------------------------
def test_paper_placeholders_fail_medfilip_config_with_their_key_paths(repo, tmp_path, capsys):
    base = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((repo / "config" / "paper.yaml").read_text())
    merged = {
        **base,
        "training": {**base["training"], "model": {**base["training"]["model"], **paper["training"]["model"]}},
    }
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(merged))
    cwd = os.getcwd()
    os.chdir(repo)  # the embedded default's relative paths are the repository's
    try:
        assert main(["-c", str(tmp_path / "paper.yaml"), "config"]) == 2
        assert main(["-c", str(repo / "config" / "config.yaml"), "config"]) == 0
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert "training.model.image_weights = '/path/to/resnet50-0676ba61.pth': file not found (a placeholder" in err
    assert "training.model.text_model = '/path/to/clip-vit-base-patch32': model folder not found" in err


def test_path_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "bert").mkdir()
    (tmp_path / "vocab.yaml").write_text("x")
    cfg = {
        "training": {"model": {"image_weights": "weights", "text_model": "bert"}},
        "extraction": {"rules": {"vocabulary_dir": "vocab.yaml"}},
        "knowledge": {"path": "missing.yaml"},
        "datasets": {"rsna": {"root": "nowhere"}},
    }
    from medfilip.pipeline.config import validate_config

    problems = "\n".join(path_problems(validate_config(cfg)))
    assert "training.model.image_weights = 'weights': is a folder, expected a file" in problems
    assert "training.model.text_model = 'bert': folder has no config.json" in problems
    assert "extraction.rules.vocabulary_dir = 'vocab.yaml': is a file, expected a folder" in problems
    assert "knowledge.path = 'missing.yaml': file not found" in problems
    assert "datasets.rsna.root = 'nowhere': folder not found" in problems
    (tmp_path / "bert" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = "\n".join(
        path_problems(
            validate_config(
                {"training": {"model": {"text_model": "bert"}}, "embeddings": {"model": "no-such-org/no-such-model"}}
            )
        )
    )
    assert "text_model" not in problems
    assert (
        "embeddings.model = 'no-such-org/no-such-model': not a local folder, and not in the Hugging Face cache"
        in problems
    )


@pytest.mark.slow
def test_bad_paths_stop_the_workflow_before_any_job(project: Path):
    config = project / "config.yaml"
    proc = snakemake(project, "--cores", "1", SHARDS_TARGET, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    shards = sorted((project / "results" / "reports" / "shards").glob("*.parquet"))
    before = mtimes(shards)

    bad = write(
        project, "bad.yaml", training__model__image_weights="/path/to/resnet50.pth", reports__iu_xray__path="iu_reprots"
    )
    for args in (("-n", "all"), ("--cores", "1", "all")):
        proc = snakemake(project, *args, configfile=bad)
        assert proc.returncode != 0
        text = output_of(proc)
        assert "training.model.image_weights = '/path/to/resnet50.pth': file not found (a placeholder" in text
        assert "reports.iu_xray.path = 'iu_reprots': path not found" in text
        assert "Job stats" not in text
    assert mtimes(shards) == before


# -- 12.4: the corpus path re-runs the reports stage; an empty corpus is an error ----------------
@pytest.mark.slow
def test_corpus_path_reruns_reports_and_an_empty_corpus_fails(project: Path):
    config = project / "config.yaml"
    assert snakemake(project, "--cores", "1", SHARDS_TARGET, configfile=config).returncode == 0
    # the same files under another name, older than the shards: only the path says "re-run"
    shutil.copytree(project / "iu_reports", project / "iu_copy")
    old = time.time() - 3600
    for p in [project / "iu_copy", *(project / "iu_copy").iterdir()]:
        os.utime(p, (old, old))
    moved = write(project, "moved.yaml", reports__iu_xray__path="iu_copy")
    proc = snakemake(project, "-n", SHARDS_TARGET, configfile=moved)
    assert job_counts(proc) == {"report_shards": 1}, output_of(proc)

    (project / "empty").mkdir()
    empty = write(project, "empty.yaml", reports__iu_xray__path="empty")
    proc = snakemake(project, "--cores", "1", SHARDS_TARGET, configfile=empty)
    assert proc.returncode != 0
    log = (project / "results" / "logs" / "report_shards" / "report_shards.log").read_text()
    assert "reports.iu_xray.path = " in log and "empty: no reports (no report files found)" in log


# -- 12.3 and 12.9: one effective config per invocation; progress lines in the logs --------------
@pytest.mark.slow
def test_each_invocation_reads_its_own_effective_config(project: Path):
    first = write(project, "first.yaml", extraction__flush_every=1)
    second = write(project, "second.yaml", extraction__flush_every=500)
    assert snakemake(project, "--cores", "1", SHARDS_TARGET, configfile=second).returncode == 0
    proc = snakemake(project, "--cores", "2", "results/entities.parquet", configfile=first)
    assert proc.returncode == 0, output_of(proc)
    files = sorted((project / "results" / "config").glob("effective-*.yaml"))
    assert sorted(yaml.safe_load(f.read_text())["extraction"]["flush_every"] for f in files) == [1, 500]
    (mine,) = [f for f in files if yaml.safe_load(f.read_text())["extraction"]["flush_every"] == 1]
    log = (project / "results" / "logs" / "extract_triplets" / "rules" / "000.log").read_text()
    assert f"config results/config/{mine.name}" in log, log
    # flush_every 1: one cache part per extracted text (the other run's 500 would give one per shard)
    parts = list((project / "results" / "cache" / "extraction" / "rules").glob("part-*.parquet"))
    assert len(parts) >= 4
    # about ten progress lines per stage, as plain lines
    progress = [line for line in log.splitlines() if line.startswith("extract rules shard 000:")]
    assert 2 <= len(progress) <= 12 and progress[-1].split(": ", 1)[1].split(" (")[1].startswith("100%"), progress
    assert "\r" not in log
