"""Extraction throughput on the 3,955 IU-Xray reports shipped with torchxrayvision.

Prints, from one run on this machine:
  * reading + sharding the corpus,
  * the `rules` backend cold (empty cache) in reports/s, through the real runner and cache,
  * a fully cached re-run (what `snakemake` pays when nothing changed), and its speed-up over
    the reference approach of re-extracting every report on every run.

    python benchmarks/extraction.py [--shards 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from medfilip.config import shard_names
from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.rules import RulesBackend
from medfilip.extraction.runner import extract_shard
from medfilip.reports.iu_xray import read_iu_xray
from medfilip.reports.shards import write_report_shards

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="cold and cached runs are repeated; medians are printed")
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
    print(f"corpus: {n} IU-Xray reports ({summary.n_rejects} rejected), {args.shards} shards; read+shard {read_s:.2f} s")
    print(f"rules engine alone:          {len(texts) / engine_s:8.0f} reports/s")
    print(f"cold extraction (runner):    {n / c:8.0f} reports/s  ({c:.2f} s; {n_cold} unique texts extracted)")
    print(f"cached re-run:               {w:8.2f} s        ({n / w:.0f} reports/s, 0 extracted)")
    print(f"re-extract-everything (reference) vs cached re-run: {c / w:.1f}x faster with the cache")


if __name__ == "__main__":
    main()
