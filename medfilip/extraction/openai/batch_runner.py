"""``BatchRunner``: submits, polls and collects chunks of requests through a :class:`BatchStore`.

Every step is resumable. A restart polls the batches already submitted and submits the uploads
already made; a report whose key is in a chunk is never sent again while that chunk can still
deliver it. Chunks are capped at ``max_requests_per_batch`` and the requests in flight (all chunks
not finished, of every process sharing the folder) at ``max_enqueued_requests``; further chunks go
out as earlier ones finish. An expired batch's unfinished requests are queued again; those of a
failed or cancelled batch become failed results naming the reason.

The runner schedules; its collaborators do the rest: :mod:`.batch_index` (the folder's chunks and
which holds each key), :mod:`.batch_input` (what goes into a chunk), :mod:`.batch_steps` with
:mod:`.batch_server` (a chunk's upload, create, poll and download) and :mod:`.batch_results`
(a ready chunk's results and what to send again).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from medfilip.extraction.backend import ExtractionResult
from medfilip.extraction.openai.batch_index import ChunkIndex
from medfilip.extraction.openai.batch_input import request_lines, take
from medfilip.extraction.openai.batch_results import ResultOf, collect
from medfilip.extraction.openai.batch_server import BatchServer
from medfilip.extraction.openai.batch_steps import ChunkSteps, Hook
from medfilip.extraction.openai.batch_store import BatchStore, Chunk
from medfilip.extraction.settings import BatchConfig

log = logging.getLogger(__name__)

__all__ = ["BatchRunner"]


class BatchRunner:
    """Submits, polls and collects chunks of requests through a :class:`BatchStore`.

    ``request_body(text)`` makes a chat-completions body; ``result_of(report_id, line)`` turns one
    output or error line into a result. ``on_step(step, chunk)`` is called after each persisted step
    ("uploaded", "created", "polled", "downloaded", "merged" after results were handed to the runner);
    tests raise from it to simulate a kill.
    """

    def __init__(
        self,
        client: Any,
        store: BatchStore,
        cfg: BatchConfig,
        *,
        endpoint: str,
        model: str,
        url: str,
        request_body: Callable[[str], dict],
        result_of: ResultOf,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Hook | None = None,
        create_retries: int = 4,
    ):
        self.store = store
        self.cfg = cfg
        self.endpoint = endpoint
        self.model = model
        self.url = url
        self.request_body = request_body
        self.result_of = result_of
        self.sleep = sleep
        self.on_step = on_step
        self.index = ChunkIndex(store, endpoint)
        server = BatchServer(client, cfg, url=url, sleep=sleep, create_retries=create_retries)
        self.steps = ChunkSteps(store, self.index, server, endpoint=endpoint, hook=self._hook)

    def _hook(self, step: str, chunk: Chunk) -> None:
        if self.on_step is not None:
            self.on_step(step, chunk)

    def advance(self, cid: str) -> Chunk:
        """Take a chunk one step further (see :meth:`ChunkSteps.advance`)."""
        return self.steps.advance(cid)

    def _new_chunk(self, keys: list[str], texts: Mapping[str, str]) -> Chunk:
        return self.index.new_chunk(keys, request_lines(keys, texts, self.url, self.request_body), self.model)

    def _mark_handed(self, cid: str, keys: list[str]) -> None:
        """Record that these keys' results went to the runner (the chunk is merged once all have)."""
        if keys:
            self._hook("merged", self.index.mark_handed(cid, keys))

    # -- the loop ----------------------------------------------------------------------------
    def _in_flight(self, waiting: Mapping[str, Any]) -> int:
        """Requests of every chunk of this endpoint whose batch has not ended (of any process)."""
        total = 0
        for cid, chunk in list(self.index.chunks.items()):
            if chunk.ended or chunk.endpoint != self.endpoint:
                continue
            if cid not in waiting:  # another process's, or an orphan of a killed one: look again
                chunk = self.advance(cid)
                if chunk.ended:
                    continue
            total += chunk.n_requests
        return total

    def _submit(
        self, queue: list[str], texts: Mapping[str, str], consulted: dict[str, str | None], waiting: dict[str, set[str]]
    ) -> list[str]:
        """New chunks from the front of ``queue`` while the queue limit allows; returns what is left.

        Keys another process put in a chunk meanwhile are moved to ``waiting`` instead.
        """
        limit = self.cfg.max_enqueued_requests
        in_flight = self._in_flight(waiting)
        while queue and in_flight < limit:
            with self.store.lock("plan"):
                self.index.refresh()
                elsewhere = {k for k in queue if self.index.holder(k) != consulted.get(k)}
                if elsewhere:
                    for k in elsewhere:
                        waiting[self.index.holder(k)].add(k)
                    queue = [k for k in queue if k not in elsewhere]
                keys = take(queue, min(self.cfg.max_requests_per_batch, limit - in_flight), texts)
                if not keys:
                    break
                chunk = self._new_chunk(keys, texts)
            queue = queue[len(keys) :]
            for k in keys:
                consulted[k] = chunk.chunk_id
            waiting[chunk.chunk_id] = set(keys)
            in_flight += len(keys)
            self.advance(chunk.chunk_id)
        if queue:
            log.info("%d requests wait for room in the queue (%d of %d in flight)", len(queue), in_flight, limit)
        return queue

    def _plan(self, texts: Mapping[str, str]) -> tuple[dict[str, set[str]], list[str], dict[str, str | None]]:
        with self.store.lock("plan"):
            self.index.refresh()
        waiting: dict[str, set[str]] = defaultdict(set)
        queue: list[str] = []
        for key in texts:
            cid = self.index.holder(key)
            (waiting[cid].add(key) if cid is not None else queue.append(key))
        consulted = {k: self.index.holder(k) for k in texts}
        return waiting, queue, consulted

    def submit(self, texts: Mapping[str, str]) -> int:
        """Submit the keys not yet in any chunk, as far as the queue limit allows, without waiting.

        Returns how many were submitted; the rest go out with :meth:`run`.
        """
        waiting, queue, consulted = self._plan(texts)
        left = self._submit(queue, texts, consulted, waiting)
        return len(queue) - len(left)

    def run(self, texts: Mapping[str, str]) -> Iterator[tuple[str, ExtractionResult]]:
        """Yield (key, result) for every key of ``texts`` (key -> report text), each once."""
        if not texts:
            return
        waiting, queue, consulted = self._plan(texts)
        reused = sum(len(v) for v in waiting.values())
        if reused:
            log.info(
                "%d reports are in %d batch chunks already submitted or downloaded: not sent again",
                reused,
                len(waiting),
            )
        while queue or waiting:
            for cid in sorted(waiting):
                chunk = self.advance(cid)
                if not chunk.ready:
                    continue
                keys = waiting.pop(cid)
                requeue: list[str] = []
                handed: list[str] = []
                for key, result in collect(self.store, chunk, keys, requeue, self.result_of):
                    yield key, result
                    handed.append(key)
                self._mark_handed(cid, handed)
                queue.extend(requeue)
                for k in requeue:
                    consulted[k] = self.index.holder(k)
            if queue:
                queue = self._submit(queue, texts, consulted, waiting)
            if queue or waiting:
                self.sleep(self.cfg.poll_interval_s)
