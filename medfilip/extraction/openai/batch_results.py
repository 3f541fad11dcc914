"""The results of a chunk whose output is on disk: each key's output or error line as a result, the
reason of those its batch never answered, and the keys to send again."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from medfilip.extraction.backend import ExtractionResult
from medfilip.extraction.openai.batch_lines import never_ran
from medfilip.extraction.openai.batch_store import ABANDONED, BatchStore, Chunk

__all__ = ["ResultOf", "collect", "failure_reason"]

ResultOf = Callable[[str, Mapping[str, Any]], ExtractionResult]


def collect(
    store: BatchStore, chunk: Chunk, keys: set[str], requeue: list[str], result_of: ResultOf
) -> Iterator[tuple[str, ExtractionResult]]:
    """Results of a ready chunk for ``keys``; the keys it cannot answer go to ``requeue``.

    ``result_of(key, line)`` turns one output or error line into a result. A report an expired batch
    never ran is sent again. A failed result already handed to the runner once is not handed again:
    the report is sent again instead (``--retry-failed``, or a run killed between the hand-over and
    the cache flush). An ok result is handed again whenever the runner asks (it only asks for reports
    missing from the cache).
    """
    lines = store.read_output(chunk.chunk_id)
    handed = store.handed(chunk.chunk_id)
    for key in (k for k in store.keys(chunk.chunk_id) if k in keys):
        line = lines.get(key)
        if line is not None and not never_ran(line):
            result = result_of(key, line)
            if result.status == "ok" or key not in handed:
                yield key, result
            else:
                requeue.append(key)
        elif chunk.status in ("expired", ABANDONED) or key in handed:
            requeue.append(key)
        else:
            yield key, ExtractionResult(key, "failed", error=failure_reason(chunk))


def failure_reason(chunk: Chunk) -> str:
    """Why a request of an ended chunk has no result."""
    if chunk.status == "failed":
        why = "; ".join(chunk.errors) or "no reason given"
        return f"batch {chunk.batch_id} failed: {why}"
    if chunk.status == "cancelled":
        return f"batch {chunk.batch_id} was cancelled before this request ran"
    return f"batch {chunk.batch_id} ended {chunk.status} without a result for this request"
