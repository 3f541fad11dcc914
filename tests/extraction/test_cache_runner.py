"""The shared extraction cache and the shard runner: no repeated calls, atomic parts, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medfilip.extraction.backend import ExtractionResult
from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.rules import RulesBackend
from medfilip.extraction.runner import extract_shard
from medfilip.io import write_parquet_atomic
from medfilip.reports.records import Report
from medfilip.reports.shards import reports_table

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


def write_shard(path: Path, n: int, duplicate_every: int = 0) -> list[str]:
    reports = []
    for i in range(n):
        text = f"Report {i}. {FINDINGS[i % len(FINDINGS)]}"
        if duplicate_every and i % duplicate_every == 0:
            text = "Mild cardiomegaly."  # same text in several reports
        reports.append(Report(f"r{i:05d}", "test", f"p{i}", f"s{i}", text, "", "train"))
    write_parquet_atomic(reports_table(reports), path)
    return [r.report_id for r in reports]


class CountingRulesBackend(RulesBackend):
    """The real rules backend, counting the reports it is asked to extract."""

    def __init__(self, vocabulary_dir, fail_ids=()):
        super().__init__(vocabulary_dir)
        self.calls = 0
        self.fail_ids = set(fail_ids)

    def extract(self, reports):
        for result in super().extract(reports):
            self.calls += 1
            if result.report_id in self.fail_ids:
                yield ExtractionResult(result.report_id, "failed", error="reply did not validate")
            else:
                yield result


def test_second_run_makes_no_extraction_calls(tmp_path, repo):
    ids = write_shard(tmp_path / "000.parquet", 40, duplicate_every=10)
    cache = ExtractionCache(tmp_path / "cache")
    backend = CountingRulesBackend(repo / "resources" / "vocabulary")
    out = tmp_path / "out" / "000.parquet"
    run = extract_shard(
        tmp_path / "000.parquet", backend, cache, out, runs_dir=tmp_path / "runs", flush_every=7, progress=False
    )
    # 4 reports share one text: extracted once
    assert backend.calls == 37 and run.n_extracted == 37
    first = pq.read_table(out)
    assert first["report_id"].to_pylist() == ids
    assert set(first["status"].to_pylist()) == {"ok"}
    assert len(cache.parts()) == 6  # ceil(37 / 7) flushes, each its own atomic part

    backend.calls = 0
    run2 = extract_shard(tmp_path / "000.parquet", backend, cache, out, runs_dir=tmp_path / "runs", progress=False)
    assert backend.calls == 0 and run2.n_cached == 40
    assert pq.read_table(out).equals(first)
    runs = pq.read_table(tmp_path / "runs")
    assert sorted(runs["n_extracted"].to_pylist()) == [0, 37]


def test_failed_results_are_kept_and_retried_only_on_request(tmp_path, repo):
    write_shard(tmp_path / "000.parquet", 8)
    cache = ExtractionCache(tmp_path / "cache")
    out = tmp_path / "000.out.parquet"
    failing = CountingRulesBackend(repo / "resources" / "vocabulary", fail_ids={"r00003"})
    run = extract_shard(tmp_path / "000.parquet", failing, cache, out, progress=False)
    assert run.n_failed == 1
    row = pq.read_table(out).to_pylist()[3]
    assert (row["status"], row["error"], row["triplets"]) == ("failed", "reply did not validate", [])

    healthy = CountingRulesBackend(repo / "resources" / "vocabulary")
    extract_shard(tmp_path / "000.parquet", healthy, cache, out, progress=False)
    assert healthy.calls == 0  # a failure is a cached answer until asked to retry
    extract_shard(tmp_path / "000.parquet", healthy, cache, out, retry_failed=True, progress=False)
    assert healthy.calls == 1
    assert pq.read_table(out)["status"].to_pylist() == ["ok"] * 8


def test_compaction_keeps_every_entry_once(tmp_path, repo):
    write_shard(tmp_path / "000.parquet", 50)
    cache = ExtractionCache(tmp_path / "cache", compact_above=1000)
    backend = CountingRulesBackend(repo / "resources" / "vocabulary")
    extract_shard(tmp_path / "000.parquet", backend, cache, tmp_path / "o.parquet", flush_every=5, progress=False)
    before = cache.load()
    assert len(cache.parts()) == 10
    assert cache.compact(force=True) == 10
    assert len(cache.parts()) == 1
    after = cache.load()
    assert after.keys() == before.keys() and len(after) == 50
    assert pq.read_table(cache.parts()[0]).num_rows == 50


def test_cache_key_depends_on_backend_model_version_and_text(rules_backend):
    k = rules_backend.cache_key("Mild cardiomegaly.")
    assert len(k) == 64
    assert k == rules_backend.cache_key("Mild cardiomegaly.")
    assert k != rules_backend.cache_key("Mild cardiomegaly. ")


SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    from medfilip.extraction.cache import ExtractionCache
    from medfilip.extraction.rules import RulesBackend
    from medfilip.extraction.runner import extract_shard

    class SlowRules(RulesBackend):
        def extract(self, reports):
            for r in super().extract(reports):
                time.sleep(float(sys.argv[4]))
                yield r

    shard, cache_dir, out = sys.argv[1:4]
    run = extract_shard(shard, SlowRules(sys.argv[5]), ExtractionCache(cache_dir), out, flush_every=10, progress=False)
    print("extracted", run.n_extracted, "cached", run.n_cached)
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_losing_or_duplicating(tmp_path, repo):
    ids = write_shard(tmp_path / "000.parquet", 200)
    script = tmp_path / "run.py"
    script.write_text(SLOW_RUN)
    cache_dir, out = tmp_path / "cache", tmp_path / "out.parquet"
    vocab = str(repo / "resources" / "vocabulary")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    args = [sys.executable, str(script), str(tmp_path / "000.parquet"), str(cache_dir), str(out)]
    proc = subprocess.Popen(args + ["0.01", vocab], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache_dir.glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    done = ExtractionCache(cache_dir).load()
    assert 30 <= len(done) < 200  # three or more flushes of 10 landed, not the whole shard

    resumed = subprocess.run(args + ["0", vocab], env=env, capture_output=True, text=True, check=True)
    extracted = int(resumed.stdout.split()[1])
    assert extracted == 200 - len(done)  # finished reports are not extracted again
    table = pq.read_table(out)
    assert table["report_id"].to_pylist() == ids  # none lost, none duplicated
    assert len(ExtractionCache(cache_dir).load()) == 200


COUNTING_RUN = textwrap.dedent(
    """
    import os, sys, time
    from medfilip.extraction.cache import ExtractionCache
    from medfilip.extraction.rules import RulesBackend
    from medfilip.extraction.runner import extract_shard

    class LoggedRules(RulesBackend):
        # the real rules backend; each extraction appends the text's key to a shared log (O_APPEND)
        def extract(self, reports):
            reports = list(reports)
            for r in super().extract(reports):
                time.sleep(0.005)
                with open(sys.argv[4], "a") as fh:
                    fh.write(self.cache_key(texts[r.report_id]) + "\\n")
                yield r

    shard, cache_dir, out, log_path, vocab, go = sys.argv[1:7]
    import pyarrow.parquet as pq
    t = pq.read_table(shard, columns=["report_id", "text"])
    texts = dict(zip(t["report_id"].to_pylist(), t["text"].to_pylist()))
    while not os.path.exists(go):  # all writers start together
        time.sleep(0.01)
    run = extract_shard(shard, LoggedRules(vocab), ExtractionCache(cache_dir), out, flush_every=5, progress=False,
                        poll_s=0.05)
    print(run.n_extracted)
    """
)


@pytest.mark.slow
def test_concurrent_jobs_extract_each_text_once(tmp_path, repo):
    """Issue 12.7: four writers over shards sharing most of their texts extract each text once."""
    script = tmp_path / "run.py"
    script.write_text(COUNTING_RUN)
    texts = [f"Report {i}. {FINDINGS[i % len(FINDINGS)]}" for i in range(60)]
    shards = []
    for w in range(4):
        # each shard: 45 of the 60 texts (a different window), so every text is in three shards
        picked = [texts[(w * 15 + i) % 60] for i in range(45)]
        reports = [Report(f"w{w}r{i:03d}", "test", f"p{i}", f"s{i}", t, "", "train") for i, t in enumerate(picked)]
        path = tmp_path / f"{w:03d}.parquet"
        write_parquet_atomic(reports_table(reports), path)
        shards.append(path)
    cache_dir, log_path, go = tmp_path / "cache", tmp_path / "extracted.log", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(s),
                str(cache_dir),
                str(tmp_path / f"out{s.name}"),
                str(log_path),
                str(repo / "resources" / "vocabulary"),
                str(go),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in shards
    ]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    extracted = log_path.read_text().split()
    assert len(extracted) == len(set(extracted)) == 60, "each distinct text extracted exactly once"
    assert sum(int(o[0].split()[-1]) for o in outs) == 60
    for s in shards:
        table = pq.read_table(tmp_path / f"out{s.name}")
        assert table.num_rows == 45 and set(table["status"].to_pylist()) == {"ok"}
    assert not list((cache_dir / "claims").glob("*.keys")), "claims are released"
