"""Concurrent openai extraction jobs share the run's per-minute limits (issue 13 §6): the workflow
declares llm_requests (1 unless --resources sets it) and hands every job its count, and each job
paces itself to 1/N of extraction.openai's limits. Real snakemake runs against the local server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_helpers import job_counts, make_project, output_of, snakemake


def _project(tmp_path: Path, base_url: str) -> Path:
    openai = {"base_url": base_url, "requests_per_minute": 600, "tokens_per_minute": 300_000}
    return make_project(tmp_path, {"extraction": {"backend": "openai", "openai": openai}}) / "config.yaml"


def _limits(workdir: Path) -> list[str]:
    logs = sorted((workdir / "results" / "logs" / "extract_triplets" / "openai").glob("*.log"))
    return [re.search(r"LLM limits of this job: .*", p.read_text()).group(0) for p in logs]


@pytest.mark.slow
@pytest.mark.parametrize("resources, jobs", [((), 1), (("--resources", "llm_requests=2"), 2)])
def test_extraction_jobs_pace_to_their_share(tmp_path, openai_server, monkeypatch, resources, jobs):
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    config = _project(tmp_path, openai_server.base_url)
    proc = snakemake(tmp_path, "results/entities.parquet", "--cores", "4", *resources, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc)["extract_triplets"] == 2
    assert (
        _limits(tmp_path)
        == [
            f"LLM limits of this job: {600 // jobs} requests/min, {300_000 // jobs} tokens/min "
            f"(1/{jobs} of the run's: {jobs} extraction job(s) may run at once)"
        ]
        * 2
    )
    assert openai_server.count() > 0
