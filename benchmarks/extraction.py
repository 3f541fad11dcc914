"""Extraction throughput on the 3,955 IU-Xray reports shipped with torchxrayvision.

Prints, from one run on this machine:
  * reading + sharding the corpus,
  * the `rules` backend cold (empty cache) in reports/s, through the real runner and cache,
  * a fully cached re-run (what `snakemake` pays when nothing changed), and its speed-up over
    the reference approach of re-extracting every report on every run,
  * the `openai` backend against the local OpenAI-compatible test server
    (tests/extraction/openai_server.py) answering each call in 200 ms under a 600 requests/min
    limit: reports/s, the share of the limit achieved, 429s, and the requests a re-run makes.

    python benchmarks/extraction.py [--shards 4] [--repeat 3] [--openai-reports 650] [--skip-openai]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.rules import RulesBackend
from medfilip.extraction.runner import extract_shard
from medfilip.reports.iu_xray import read_iu_xray
from medfilip.reports.settings import shard_names
from medfilip.reports.shards import write_report_shards

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="cold and cached runs are repeated; medians are printed")
    ap.add_argument(
        "--openai-reports",
        type=int,
        default=650,
        help="distinct reports sent to the local server (650 at 600/min: ~65 s, past a full minute)",
    )
    ap.add_argument("--openai-rpm", type=int, default=600, help="requests/min limit of the client and the server")
    ap.add_argument("--openai-latency", type=float, default=0.2, help="seconds the server takes per call")
    ap.add_argument("--openai-concurrency", type=int, default=16)
    ap.add_argument("--skip-openai", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        summary = write_report_shards(read_iu_xray(), tmp / "shards", args.shards, tmp / "rejects.parquet")
        read_s = time.perf_counter() - t0
        shards = [tmp / "shards" / f"{n}.parquet" for n in shard_names(args.shards)]
        backend = RulesBackend(REPO / "resources" / "vocabulary")

        def run_all(cache_dir: Path) -> tuple[float, int]:
            cache = ExtractionCache(cache_dir)
            t = time.perf_counter()
            extracted = sum(
                extract_shard(s, backend, cache, tmp / "out" / s.name, progress=False).n_extracted for s in shards
            )
            return time.perf_counter() - t, extracted

        cold, warm = [], []
        for i in range(args.repeat):
            cache_dir = tmp / f"cache{i}"
            c, n_cold = run_all(cache_dir)
            w, n_warm = run_all(cache_dir)
            assert n_warm == 0, "a cached re-run must not extract"
            cold.append(c)
            warm.append(w)

        # the engine alone, without cache or Parquet (the lower bound of a cold run)
        texts = [r.text for r in read_iu_xray() if hasattr(r, "text")]
        t = time.perf_counter()
        for text in texts:
            backend.extractor.extract_text(text)
        engine_s = time.perf_counter() - t

    n = summary.n_reports
    c, w = statistics.median(cold), statistics.median(warm)
    print(
        f"corpus: {n} IU-Xray reports ({summary.n_rejects} rejected), {args.shards} shards; read+shard {read_s:.2f} s"
    )
    print(f"rules engine alone:          {len(texts) / engine_s:8.0f} reports/s")
    print(f"cold extraction (runner):    {n / c:8.0f} reports/s  ({c:.2f} s; {n_cold} unique texts extracted)")
    print(f"cached re-run:               {w:8.2f} s        ({n / w:.0f} reports/s, 0 extracted)")
    print(f"re-extract-everything (reference) vs cached re-run: {c / w:.1f}x faster with the cache")
    if not args.skip_openai:
        openai_benchmark(args)


def openai_benchmark(args: argparse.Namespace) -> None:
    """The openai backend through the runner against the local test server, at a set latency and limit."""
    sys.path.insert(0, str(REPO / "tests" / "extraction"))
    from openai_server import OpenAIServer

    from medfilip.extraction.openai.backend import OpenAIBackend
    from medfilip.extraction.settings import OpenAIBackendConfig

    n, rpm = args.openai_reports, args.openai_rpm
    reports, seen = [], set()
    for r in read_iu_xray():  # distinct texts: identical reports are extracted once
        if hasattr(r, "text") and r.text not in seen and len(reports) < n:
            seen.add(r.text)
            reports.append(r)
    with tempfile.TemporaryDirectory() as tmp, OpenAIServer(api_key="sk-benchmark") as server:
        tmp = Path(tmp)
        write_report_shards(reports, tmp / "shards", 1, tmp / "rejects.parquet")
        shard = tmp / "shards" / f"{shard_names(1)[0]}.parquet"
        server.latency_s, server.rpm_limit, server.window_s = args.openai_latency, rpm, 60.0
        server.ratelimit_headers = True
        cfg = OpenAIBackendConfig(
            base_url=server.base_url,
            requests_per_minute=rpm,
            tokens_per_minute=10**8,
            max_concurrency=args.openai_concurrency,
        )
        cache = ExtractionCache(tmp / "cache")
        t = time.perf_counter()
        run = extract_shard(
            shard, OpenAIBackend(cfg, api_key="sk-benchmark"), cache, tmp / "out.parquet", progress=False
        )
        cold = time.perf_counter() - t
        sent = server.count()
        t = time.perf_counter()
        rerun = extract_shard(
            shard, OpenAIBackend(cfg, api_key="sk-benchmark"), cache, tmp / "out.parquet", progress=False
        )
        warm = time.perf_counter() - t
        rate = run.n_extracted / cold
        print(
            f"openai backend, local server ({args.openai_latency * 1000:.0f} ms a call, limit {rpm}/min, "
            f"{args.openai_concurrency} in flight): {run.n_extracted} reports in {cold:.1f} s = {rate:.2f} reports/s "
            f"= {rate * 60 / rpm:.0%} of the limit; {server.rate_limited} refused (429); most requests in any "
            f"rolling minute {server.max_in_window} (limit {rpm}); {run.n_failed} failed"
        )
        print(f"openai re-run: {server.count() - sent} requests, {rerun.n_cached} cached, {warm:.2f} s")


if __name__ == "__main__":
    main()
