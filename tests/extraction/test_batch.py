"""Batch API mode against the real OpenAI-compatible test server (openai_server.py).

Poll intervals are a few milliseconds and ``server.batch_polls`` sets how many polls a
batch takes, so every scenario (chunking, the queue limit, kills between steps, error
lines, expiry, cancellation) runs in well under a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import openai
import pyarrow.parquet as pq
import pytest
import yaml

from medfilip.extraction.backend import ExtractionAborted
from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.openai.batch import OpenAIBatchBackend
from medfilip.extraction.openai.batch_store import ENDED, batch_summary
from medfilip.extraction.runner import extract_shard
from medfilip.extraction.settings import BatchConfig, ModelPrice, OpenAIBackendConfig
from medfilip.io import write_parquet_atomic
from medfilip.pipeline.cli import main
from medfilip.reports.records import Report
from medfilip.reports.shards import reports_table

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ROOT / "resources" / "prompts" / "triplets.yaml"
FINDINGS = [
    "Mild cardiomegaly.",
    "No pleural effusion.",
    "Small left pleural effusion.",
    "Right lower lobe atelectasis.",
    "Possible pneumonia.",
    "Calcified granuloma.",
    "Low lung volumes.",
    "Degenerative changes of the spine.",
]
PRICES = {"gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60)}


def write_shard(path: Path, n: int, offset: int = 0, duplicate: bool = False) -> list[str]:
    reports = []
    for i in range(offset, offset + n):
        text = f"Report {i}. {FINDINGS[i % len(FINDINGS)]}"
        if duplicate and i % 5 == 4:
            text = "Mild cardiomegaly."  # the same text in several reports: one request
        reports.append(Report(f"r{i:05d}", "test", f"p{i}", f"s{i}", text, "", "train"))
    write_parquet_atomic(reports_table(reports), path)
    return [r.report_id for r in reports]


def openai_config(server, **batch) -> OpenAIBackendConfig:
    batch.setdefault("poll_interval_s", 0.005)
    return OpenAIBackendConfig(
        base_url=server.base_url,
        prompt=PROMPT,
        mode="batch",
        timeout_s=5.0,
        max_retries=1,
        requests_per_minute=100_000,
        tokens_per_minute=10**9,
        batch=BatchConfig(**batch),
    )


def sync_backend(server, **batch) -> OpenAIBackend:
    return OpenAIBackend(
        openai_config(server, **batch), api_key=server.api_key, prices=PRICES, backoff_s=0.01, backoff_max_s=0.05
    )


def batch_backend(server, cache_dir: Path, on_step=None, **batch) -> OpenAIBatchBackend:
    return OpenAIBatchBackend(sync_backend(server, **batch), cache_dir / "batches", on_step=on_step)


def run_shard(backend, shard: Path, cache_dir: Path, out: Path, **kw):
    return extract_shard(shard, backend, ExtractionCache(cache_dir), out, progress=False, flush_every=4, **kw)


def posts(server, suffix: str) -> list:
    return [r for r in server.requests if r.method == "POST" and r.path.endswith(suffix)]


def batch_lines(server) -> list:
    return [r for r in server.requests if r.via_batch]


def states(cache_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cache_dir / "batches").glob("*.json"))]


class Kill(Exception):
    """Stands for the process dying at a hook point."""


def kill_at(step: str):
    def hook(name, chunk):
        if name == step:
            raise Kill(step)

    return hook


# -- end to end ----------------------------------------------------------------------------------
def test_batch_end_to_end_is_interchangeable_with_sync(openai_server, tmp_path):
    server = openai_server
    server.batch_polls = 3  # validating -> in_progress (twice, growing counts) -> completed
    ids = write_shard(tmp_path / "000.parquet", 15, duplicate=True)  # 3 reports share one text
    write_shard(tmp_path / "half.parquet", 6, duplicate=True)  # the first 6 reports, extracted synchronously first
    cache_dir = tmp_path / "cache"
    run_shard(sync_backend(server), tmp_path / "half.parquet", cache_dir, tmp_path / "half-out.parquet")
    n_sync = server.count()
    assert n_sync == 6

    run = run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, tmp_path / "batch.parquet")
    # 15 reports, 6 already cached by the sync run, 3 sharing a text (one of them cached): 7 requests
    assert (run.n_cached, run.n_extracted, run.n_failed) == (8, 7, 0)
    assert server.count() == n_sync  # no synchronous request: all went through the batch
    assert len(posts(server, "/files")) == 1 and len(server.batches) == 1
    (batch,) = server.batches.values()
    assert batch["status"] == "completed" and batch["request_counts"] == {"total": 7, "completed": 7, "failed": 0}
    assert batch["endpoint"] == "/v1/chat/completions" and batch["metadata"]["medfilip_chunk"]
    (upload,) = [f for f in server.files.values() if f["purpose"] == "batch"]
    assert batch["input_file_id"] == upload["id"]
    assert len(batch_lines(server)) == 7
    polls = [r for r in server.requests if r.method == "GET" and r.path == f"/v1/batches/{batch['id']}"]
    assert len(polls) == 3

    (state,) = states(cache_dir)
    assert state["batch_id"] == batch["id"] and state["input_file_id"] == upload["id"]
    assert state["status"] == "completed" and state["downloaded"] and state["merged"]
    assert state["request_counts"] == {"total": 7, "completed": 7, "failed": 0}
    assert not (cache_dir / "batches" / f"{state['chunk_id']}.input.jsonl").exists()  # the server has it

    # the same shard extracted synchronously from scratch: identical content (latency aside)
    sync_run = run_shard(
        sync_backend(server), tmp_path / "000.parquet", tmp_path / "sync-cache", tmp_path / "sync.parquet"
    )
    assert sync_run.n_extracted == 13
    got = pq.read_table(tmp_path / "batch.parquet").drop_columns(["latency_s"])
    want = pq.read_table(tmp_path / "sync.parquet").drop_columns(["latency_s"])
    assert got["report_id"].to_pylist() == ids
    assert got.equals(want)

    # a re-run makes no request at all, batch or sync
    before = len(server.requests)
    again = run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, tmp_path / "batch.parquet")
    assert (again.n_cached, again.n_extracted) == (15, 0)
    assert len(server.requests) == before


def test_chunks_respect_the_batch_size_and_the_queue_limit(openai_server, tmp_path, monkeypatch):
    server = openai_server
    server.batch_polls = 2
    in_flight_at_create = []
    create = server.create_batch

    def recording_create(body):
        with server._lock:
            in_flight_at_create.append(
                sum(b["request_counts"]["total"] for b in server.batches.values() if b["status"] not in ENDED)
            )
        made = create(body)
        in_flight_at_create[-1] += made["request_counts"]["total"]
        return made

    monkeypatch.setattr(server, "create_batch", recording_create)
    write_shard(tmp_path / "000.parquet", 25)
    backend = batch_backend(server, tmp_path / "cache", max_requests_per_batch=10, max_enqueued_requests=20)
    run = run_shard(backend, tmp_path / "000.parquet", tmp_path / "cache", tmp_path / "out.parquet")
    assert run.n_extracted == 25 and run.n_failed == 0
    assert [b["request_counts"]["total"] for b in server.batches.values()] == [10, 10, 5]
    assert in_flight_at_create == [10, 20, 5]  # the third waited until both earlier batches had ended
    assert max(in_flight_at_create) <= 20
    assert sorted(r.custom_id for r in batch_lines(server)) == sorted({r.custom_id for r in batch_lines(server)})
    assert [s["merged"] for s in states(tmp_path / "cache")] == [True, True, True]


def test_cost_uses_the_batch_discount(openai_server, tmp_path):
    server = openai_server
    server.usage = (1000, 200)
    write_shard(tmp_path / "000.parquet", 4)
    run = extract_shard(
        tmp_path / "000.parquet",
        batch_backend(server, tmp_path / "cache", discount=0.5),
        ExtractionCache(tmp_path / "cache"),
        tmp_path / "out.parquet",
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    assert (run.prompt_tokens, run.completion_tokens) == (4000, 800)
    full = (4000 * 0.15 + 800 * 0.60) / 1e6
    assert run.cost_usd == pytest.approx(full * 0.5)
    assert pq.read_table(tmp_path / "runs")["cost_usd"].to_pylist() == [pytest.approx(full * 0.5)]


# -- resuming ------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", ["uploaded", "created", "polled", "downloaded", "merged"])
def test_resume_after_a_kill_between_steps_submits_nothing_twice(openai_server, tmp_path, step):
    server = openai_server
    server.batch_polls = 2
    ids = write_shard(tmp_path / "000.parquet", 12)
    cache_dir = tmp_path / "cache"
    with pytest.raises(Kill):
        run_shard(
            batch_backend(server, cache_dir, on_step=kill_at(step), max_requests_per_batch=5),
            tmp_path / "000.parquet",
            cache_dir,
            tmp_path / "out.parquet",
        )
    assert not (tmp_path / "out.parquet").exists()
    n_before = len(server.requests)

    run = run_shard(
        batch_backend(server, cache_dir, max_requests_per_batch=5),
        tmp_path / "000.parquet",
        cache_dir,
        tmp_path / "out.parquet",
    )
    assert run.n_failed == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table["report_id"].to_pylist() == ids and set(table["status"].to_pylist()) == {"ok"}
    assert len(ExtractionCache(cache_dir).load()) == 12
    # one upload and one batch per chunk, every report run once on the server
    assert len(posts(server, "/files")) == len(server.batches) == 3
    assert sorted(b["request_counts"]["total"] for b in server.batches.values()) == [2, 5, 5]
    assert len(batch_lines(server)) == 12 == len({r.custom_id for r in batch_lines(server)})
    assert all(s["merged"] for s in states(cache_dir))
    if step == "merged":  # the first chunk's results were flushed by the runner before the kill
        assert run.n_cached == 5
    if step in ("downloaded", "merged"):
        # the first chunk's output was on disk: it is not downloaded again
        first = min(states(cache_dir), key=lambda s: s["chunk_id"])
        content = [r for r in server.requests[n_before:] if r.path.endswith("/content")]
        assert first["output_file_id"] not in {r.path.split("/")[-2] for r in content}


def test_kill_inside_the_create_call_finds_the_batch_instead_of_making_another(openai_server, tmp_path):
    server = openai_server
    write_shard(tmp_path / "000.parquet", 4)
    cache_dir = tmp_path / "cache"
    backend = batch_backend(server, cache_dir)
    server_calls = backend.runner.steps.server
    create = server_calls.create_batch

    def create_then_die(chunk):
        create(chunk)  # the server made the batch; the process dies before it saves the id
        raise Kill("in batches.create")

    server_calls.create_batch = create_then_die
    with pytest.raises(Kill):
        run_shard(backend, tmp_path / "000.parquet", cache_dir, tmp_path / "out.parquet")
    (state,) = states(cache_dir)
    assert state["creating"] and state["batch_id"] is None and len(server.batches) == 1

    run = run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, tmp_path / "out.parquet")
    assert run.n_extracted == 4 and run.n_failed == 0
    assert len(server.batches) == 1  # found by its metadata (GET /v1/batches), not created again
    (state,) = states(cache_dir)
    assert state["batch_id"] == next(iter(server.batches))


def test_a_create_answered_500_after_the_batch_was_made_is_not_repeated(openai_server, tmp_path, monkeypatch):
    from openai_server import HTTPError

    server = openai_server
    create = server.create_batch
    calls = []

    def create_then_500(body):
        calls.append(create(body))
        if len(calls) == 1:
            raise HTTPError(500, "The server had an error while processing your request.", "server_error")
        return calls[-1]

    monkeypatch.setattr(server, "create_batch", create_then_500)
    write_shard(tmp_path / "000.parquet", 3)
    run = run_shard(
        batch_backend(server, tmp_path / "cache"),
        tmp_path / "000.parquet",
        tmp_path / "cache",
        tmp_path / "out.parquet",
    )
    assert run.n_extracted == 3 and run.n_failed == 0
    assert len(calls) == 1 and len(server.batches) == 1  # found by its metadata, not created again


def test_a_rejected_key_stops_the_run_without_showing_it(openai_server, tmp_path):
    server = openai_server
    write_shard(tmp_path / "000.parquet", 2)
    cfg = openai_config(server)
    backend = OpenAIBatchBackend(OpenAIBackend(cfg, api_key="sk-wrong-key-123456789"), tmp_path / "cache" / "batches")
    with pytest.raises(ExtractionAborted) as err:
        run_shard(backend, tmp_path / "000.parquet", tmp_path / "cache", tmp_path / "out.parquet")
    assert "401" in str(err.value) and "run again to resume" in str(err.value)
    assert "sk-wrong-key-123456789" not in str(err.value)
    assert not server.batches


def test_a_batch_the_server_forgot_is_submitted_again(openai_server, tmp_path):
    server = openai_server
    server.batch_polls = 2
    write_shard(tmp_path / "000.parquet", 4)
    cache_dir = tmp_path / "cache"
    with pytest.raises(Kill):
        run_shard(
            batch_backend(server, cache_dir, on_step=kill_at("created")),
            tmp_path / "000.parquet",
            cache_dir,
            tmp_path / "out.parquet",
        )
    server.reset()  # files and batches gone (another account, a wiped server)
    run = run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, tmp_path / "out.parquet")
    assert run.n_extracted == 4 and run.n_failed == 0
    assert len(server.batches) == 1
    first, second = states(cache_dir)
    assert first["status"] == "abandoned" and "not found on the server" in first["errors"][0]
    assert second["status"] == "completed" and second["merged"]


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from medfilip.extraction.settings import BatchConfig, OpenAIBackendConfig
    from medfilip.extraction.openai.batch import OpenAIBatchBackend
    from medfilip.extraction.cache import ExtractionCache
    from medfilip.extraction.openai.backend import OpenAIBackend
    from medfilip.extraction.runner import extract_shard

    shard, cache_dir, out, base_url, key, prompt = sys.argv[1:7]
    cfg = OpenAIBackendConfig(base_url=base_url, prompt=prompt, mode="batch",
                              batch=BatchConfig(poll_interval_s=float(sys.argv[7])))
    backend = OpenAIBatchBackend(OpenAIBackend(cfg, api_key=key), Path(cache_dir) / "batches")
    run = extract_shard(shard, backend, ExtractionCache(cache_dir), out, progress=False)
    print("extracted", run.n_extracted)
    """
)


def test_sigkill_while_the_batch_runs_then_resume(openai_server, tmp_path, repo):
    server = openai_server
    server.batch_polls = 10**6  # the batch stays in progress while the first process polls
    ids = write_shard(tmp_path / "000.parquet", 8)
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    cache_dir, out = tmp_path / "cache", tmp_path / "out.parquet"
    args = [
        sys.executable,
        str(script),
        str(tmp_path / "000.parquet"),
        str(cache_dir),
        str(out),
        server.base_url,
        server.api_key,
        str(PROMPT),
    ]
    proc = subprocess.Popen(
        args + ["0.01"], env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 30
    while time.time() < deadline and not any(s.get("status") == "in_progress" for s in states(cache_dir)):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert len(server.batches) == 1

    server.batch_polls = 1  # the next poll finishes it
    run = run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, out)
    assert run.n_extracted == 8 and run.n_failed == 0
    assert len(server.batches) == 1 and len(posts(server, "/files")) == 1  # polled, not submitted again
    assert pq.read_table(out)["report_id"].to_pylist() == ids


# -- failures ------------------------------------------------------------------------------------
def test_error_lines_become_failed_records_and_retry_sends_only_them(openai_server, tmp_path):
    server = openai_server
    write_shard(tmp_path / "000.parquet", 6)
    for kind in ("server_error", "malformed", "refusal", "bad_request", "truncated"):
        server.fail_next(kind)  # batch lines run in file order through the same faults
    cache_dir = tmp_path / "cache"
    run = run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, tmp_path / "out.parquet")
    assert (run.n_extracted, run.n_failed) == (1, 5)  # n_extracted counts successes only
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    status = [r["status"] for r in rows]
    errors = [r["error"] or "" for r in rows]
    assert status == ["failed"] * 5 + ["ok"]
    assert errors[0].startswith("HTTP 500:")
    assert errors[1].startswith("unusable reply: malformed JSON")
    assert errors[2].startswith("unusable reply: the model refused")
    assert errors[3].startswith("HTTP 400:")
    assert errors[4].startswith("unusable reply: truncated reply")
    assert rows[1]["prompt_tokens"] > 0 and rows[0]["prompt_tokens"] == 0  # a reply's tokens count, an error's not
    (batch,) = server.batches.values()
    assert batch["request_counts"] == {"total": 6, "completed": 4, "failed": 2}  # 500 and 400 in the error file

    # without --retry-failed nothing is sent again; with it, only the 5 failed reports, in a new batch
    run_shard(batch_backend(server, cache_dir), tmp_path / "000.parquet", cache_dir, tmp_path / "out.parquet")
    assert len(server.batches) == 1
    run = run_shard(
        batch_backend(server, cache_dir),
        tmp_path / "000.parquet",
        cache_dir,
        tmp_path / "out.parquet",
        retry_failed=True,
    )
    assert (run.n_extracted, run.n_failed) == (5, 0)
    assert [b["request_counts"]["total"] for b in server.batches.values()] == [6, 5]
    assert set(pq.read_table(tmp_path / "out.parquet")["status"].to_pylist()) == {"ok"}


def test_expired_batch_requeues_its_unfinished_requests(openai_server, tmp_path):
    server = openai_server
    server.batch_outcome = "expired"  # only the first half of the lines run

    def after_download(step, chunk):
        if step == "downloaded":
            server.batch_outcome = "completed"

    write_shard(tmp_path / "000.parquet", 10)
    run = run_shard(
        batch_backend(server, tmp_path / "cache", on_step=after_download),
        tmp_path / "000.parquet",
        tmp_path / "cache",
        tmp_path / "out.parquet",
    )
    assert (run.n_extracted, run.n_failed) == (10, 0)
    first, second = server.batches.values()
    assert first["status"] == "expired" and first["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
    assert second["status"] == "completed" and second["request_counts"]["total"] == 5
    assert len(batch_lines(server)) == 10 == len({r.custom_id for r in batch_lines(server)})  # each report ran once
    assert set(pq.read_table(tmp_path / "out.parquet")["status"].to_pylist()) == {"ok"}


def test_failed_and_cancelled_batches_record_the_reason(openai_server, tmp_path):
    server = openai_server
    write_shard(tmp_path / "000.parquet", 3)
    server.batch_outcome = "failed"
    run = run_shard(
        batch_backend(server, tmp_path / "a"), tmp_path / "000.parquet", tmp_path / "a", tmp_path / "a.parquet"
    )
    assert run.n_failed == 3
    (bid,) = server.batches
    assert set(pq.read_table(tmp_path / "a.parquet")["error"].to_pylist()) == {
        f"batch {bid} failed: server_error: The batch failed on the server."
    }

    server.reset()
    server.batch_polls = 3
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key)

    def cancel(step, chunk):
        if step == "created":
            client.batches.cancel(chunk.batch_id)

    run = run_shard(
        batch_backend(server, tmp_path / "b", on_step=cancel),
        tmp_path / "000.parquet",
        tmp_path / "b",
        tmp_path / "b.parquet",
    )
    assert run.n_failed == 3
    (bid,) = server.batches
    assert server.batches[bid]["status"] == "cancelled"
    assert set(pq.read_table(tmp_path / "b.parquet")["error"].to_pylist()) == {
        f"batch {bid} was cancelled before this request ran"
    }


# -- command line --------------------------------------------------------------------------------
def test_cli_batch_mode_submits_every_shard_up_front(openai_server, tmp_path, monkeypatch, capsys):
    server = openai_server
    server.batch_polls = 2
    config = {
        "extraction": {
            "backend": "openai",
            "openai": {
                "base_url": server.base_url,
                "prompt": str(PROMPT),
                "mode": "sync",
                "api_key_env": "BATCH_TEST_KEY",
                "batch": {"poll_interval_s": 0.005},
            },
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("BATCH_TEST_KEY", server.api_key)
    write_shard(tmp_path / "000.parquet", 6)
    write_shard(tmp_path / "001.parquet", 6, offset=6)
    cache_dir = tmp_path / "cache"
    code = main(
        [
            "-q",
            "-c",
            str(tmp_path / "config.yaml"),
            "extract",
            "--mode",
            "batch",
            "--shards",
            str(tmp_path / "000.parquet"),
            str(tmp_path / "001.parquet"),
            "--out",
            str(tmp_path / "o0.parquet"),
            str(tmp_path / "o1.parquet"),
            "--cache-dir",
            str(cache_dir),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert server.count() == 0  # --mode batch overrides the config's sync
    (batch,) = server.batches.values()  # both shards' reports in one batch
    assert batch["request_counts"]["total"] == 12
    (chunk,) = batch_summary(cache_dir / "batches")
    assert chunk["status"] == "completed" and chunk["merged"]  # each shard took its half of the one chunk
    out = capsys.readouterr().out
    assert "6 extracted" in out

    assert main(["-c", str(tmp_path / "config.yaml"), "batches", "--cache-dir", str(cache_dir)]) == 0
    listing = capsys.readouterr().out
    assert batch["id"] in listing and "completed" in listing and server.api_key not in listing
