"""Sync mode's reports: each one's request, the format fallback, the one corrective re-ask for an
unusable reply, and its :class:`ExtractionResult`; ``max_concurrency`` of them in flight at once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

from medfilip.extraction.backend import ExtractionAborted, ExtractionResult, ReportText
from medfilip.extraction.openai.accounting import Usage
from medfilip.extraction.openai.api_errors import FormatRejected, RequestFailed
from medfilip.extraction.openai.client import async_client
from medfilip.extraction.openai.completion import ChatCompleter
from medfilip.extraction.openai.loop_thread import Emit
from medfilip.extraction.openai.reply import ReplyError
from medfilip.extraction.openai.request import corrective_request

if TYPE_CHECKING:
    from medfilip.extraction.openai.backend import OpenAIBackend

log = logging.getLogger(__name__)

__all__ = ["ReportExtractor"]


class ReportExtractor:
    """Extracts reports with ``backend``'s prompt, output format and key, each completion through ``completer``."""

    def __init__(self, backend: OpenAIBackend, completer: ChatCompleter):
        self.backend = backend
        self.completer = completer

    async def extract_all(self, reports: list[ReportText], emit: Emit, stop: threading.Event) -> None:
        """Every report's result to ``emit``, ``max_concurrency`` workers sharing one client, until ``stop``."""
        pending: asyncio.Queue[ReportText] = asyncio.Queue()
        for r in reports:
            pending.put_nowait(r)

        async def worker() -> None:
            while not stop.is_set():
                try:
                    report = pending.get_nowait()
                except asyncio.QueueEmpty:
                    return
                emit(await self.extract_one(client, report))

        cfg = self.backend.cfg
        async with async_client(cfg, self.backend.api_key) as client:
            workers = [asyncio.create_task(worker()) for _ in range(min(cfg.max_concurrency, len(reports)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def extract_one(self, client, report: ReportText) -> ExtractionResult:
        """One report's result: ok, or failed with the reason (a rejected format stops the run)."""
        t0 = time.perf_counter()
        usage = Usage()
        backend, fmt = self.backend, self.backend.output_format
        request = backend.request_for(report.text)

        def result(status: str, **fields) -> ExtractionResult:
            return ExtractionResult(
                report.report_id,
                status,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_s=time.perf_counter() - t0,
                **fields,
            )

        def failed(reason: str) -> ExtractionResult:
            reason = backend.redact(reason)
            log.warning("report %s: extraction failed: %s", report.report_id, reason)
            return result("failed", error=reason)

        try:
            try:
                reply = await self.completer.complete(client, request, usage, report.report_id)
            except FormatRejected as err:
                sentences = backend.sentences_of(report.text)
                retry = fmt.fallback(err, request, None if sentences is None else len(sentences))
                if retry is None:
                    raise ExtractionAborted(fmt.rejected(err)) from None
                request = retry
                reply = await self.completer.complete(client, request, usage, report.report_id)
            try:
                triplets, dropped = backend.parse(reply, report.text)
            except ReplyError as first:
                backend.stats["corrective"] += 1
                log.debug("report %s: unusable reply (%s); asking once more", report.report_id, first)
                again = corrective_request(request, reply.content, str(first), indexed=backend.prompt.indexed)
                reply = await self.completer.complete(client, again, usage, report.report_id)
                try:
                    triplets, dropped = backend.parse(reply, report.text)
                except ReplyError as second:
                    return failed(f"unusable reply after one corrective retry: {second} (first reply: {first})")
        except FormatRejected as err:  # json_object_schema rejected too (auto), on a second try
            raise ExtractionAborted(fmt.rejected(err)) from None
        except RequestFailed as err:
            return failed(str(err))
        return result("ok", triplets=tuple(triplets), dropped_uncategorised=dropped)
