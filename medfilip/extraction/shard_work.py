"""A shard's reports, and one run's extraction of those missing from the cache (see
:mod:`medfilip.extraction.runner`): claimed, extracted, flushed every ``flush_every`` results, and
those another live job claimed waited for, or taken over when that job died."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from medfilip.extraction.backend import ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.cache import ExtractionCache, KeyClaims, results_table
from medfilip.io import progress_bar

if TYPE_CHECKING:
    from medfilip.extraction.runner import ShardRun

log = logging.getLogger(__name__)

__all__ = ["MissingTexts", "ShardReports"]


@dataclass(frozen=True)
class ShardReports:
    """A shard's reports: ids, texts and cache keys in file order, and each distinct text's first report."""

    name: str
    report_ids: list[str]
    texts: list[str]
    keys: list[str]
    first_id: dict[str, str]  # cache key -> the first report with that text (identical texts: extract once)

    @classmethod
    def read(cls, path: Path, backend: ExtractionBackend) -> ShardReports:
        table = pq.read_table(path, columns=["report_id", "text"])
        report_ids, texts = table["report_id"].to_pylist(), table["text"].to_pylist()
        keys = [backend.cache_key(t) for t in texts]
        first_id: dict[str, str] = {}
        for rid, key in zip(report_ids, keys):
            first_id.setdefault(key, rid)
        return cls(path.stem, report_ids, texts, keys, first_id)


class MissingTexts:
    """One run's extraction of a shard's missing texts: claimed, extracted, flushed, and those another
    live job claimed waited for (or taken over when that job died)."""

    def __init__(
        self,
        shard: ShardReports,
        backend: ExtractionBackend,
        cache: ExtractionCache,
        run: ShardRun,
        *,
        flush_every: int,
        retry_failed: bool,
    ):
        self.shard, self.backend, self.cache, self.run = shard, backend, cache, run
        self.flush_every, self.retry_failed = flush_every, retry_failed
        self.text_of = dict(zip(shard.keys, shard.texts))
        self.key_of_id = {rid: k for k, rid in shard.first_id.items()}
        self.buffer: list[tuple[str, ExtractionResult]] = []
        self.bar = None

    def finished(self, wanted: list[str]) -> set[str]:
        """The keys of ``wanted`` the cache answers (a failure only if not retried, or from this run)."""
        rows = self.cache.load(wanted)
        return {
            k
            for k, row in rows.items()
            if row["status"] == "ok" or not self.retry_failed or row["created_at"] >= self.run.started_at
        }

    def flush(self) -> None:
        if self.buffer:
            b = self.backend
            self.cache.append(results_table(self.buffer, b.name, b.model, b.version))
            self.buffer.clear()

    def extract(self, keys: list[str], claims: KeyClaims) -> None:
        """The texts of ``keys`` through the backend, counted in the run, flushed every ``flush_every``."""
        run, backend = self.run, self.backend
        reports = [ReportText(self.shard.first_id[k], self.text_of[k]) for k in keys]
        for result in backend.extract(reports):
            self.buffer.append((self.key_of_id[result.report_id], result))
            ok = result.status == "ok"
            run.n_extracted += ok
            run.n_failed += not ok
            run.prompt_tokens += result.prompt_tokens
            run.completion_tokens += result.completion_tokens
            run.cost_usd += backend.cost(result.prompt_tokens, result.completion_tokens)
            if run.cost_usd > 0:
                self.bar.set_postfix_str(f"${run.cost_usd:.4f} spent", refresh=False)
            self.bar.update(1)
            claims.touch()
            if len(self.buffer) >= self.flush_every:
                self.flush()

    def extract_claimed(self, keys: list[str], claims: KeyClaims) -> None:
        """Extract ``keys`` (claimed), then flush and release them, on an exception too (finished work is kept)."""
        try:
            self.extract(keys, claims)
        finally:
            self.flush()
            claims.release()  # flushed: a job waiting for these texts finds them in the cache

    def run_missing(self, *, progress: bool, poll_s: float) -> None:
        """Extract the shard's texts missing from the cache, and wait for those another job extracts."""
        shard, backend = self.shard, self.backend
        done_before = self.finished(list(shard.first_id))
        wanted = [k for k in shard.first_id if k not in done_before]
        claims = KeyClaims(self.cache.root)
        try:
            mine, theirs = claims.claim(wanted, self.finished)
            log.info(
                "shard %s: %d reports, %d texts to extract with %s/%s (%d of them being extracted by another job)",
                shard.name,
                self.run.n_reports,
                len(wanted),
                backend.name,
                backend.model,
                len(theirs),
            )
            self.bar = progress_bar(
                total=len(mine) + len(theirs),
                desc=f"extract {backend.name} shard {shard.name}",
                unit="report",
                disable=not progress or not wanted,
            )
            self.extract_claimed(mine, claims)
            self.wait_for(theirs, claims, poll_s)
        finally:
            claims.release()
            if self.bar is not None:
                self.bar.close()

    def wait_for(self, waiting: list[str], claims: KeyClaims, poll_s: float) -> None:
        """Texts another live job claimed: it releases them once flushed (or dies, and they are taken
        over here). Claims are cheap to read; the cache is read when some were released, and at least
        every 30 s."""
        last_look = time.time()
        while waiting:
            time.sleep(poll_s)
            held = claims.held_elsewhere()
            if all(k in held for k in waiting) and time.time() - last_look < 30:
                continue
            last_look = time.time()
            done = self.finished(waiting)
            self.bar.update(len(done))
            waiting = [k for k in waiting if k not in done]
            if waiting:
                taken, waiting = claims.claim(waiting, self.finished)
                if taken:
                    log.info(
                        "shard %s: %d texts claimed by a job that stopped; extracting them here",
                        self.shard.name,
                        len(taken),
                    )
                    self.extract_claimed(taken, claims)
