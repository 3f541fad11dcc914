"""A chunk's way through the Batch API, one persisted step at a time: upload its input, create its
batch, poll it, download its output; a chunk the server no longer knows is uploaded again or given up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import openai

from medfilip.extraction.openai.batch_index import ChunkIndex
from medfilip.extraction.openai.batch_lines import batch_state, field_of
from medfilip.extraction.openai.batch_server import BatchServer
from medfilip.extraction.openai.batch_store import ABANDONED, ACTIVE, ENDED, BatchStore, Chunk

log = logging.getLogger(__name__)

__all__ = ["ChunkSteps", "Hook"]

Hook = Callable[[str, Chunk], None]


class ChunkSteps:
    """Takes the chunks of ``endpoint`` through ``server``, saving each step to ``store`` (and what it
    read to ``index``); ``hook(step, chunk)`` is called after each persisted step."""

    def __init__(self, store: BatchStore, index: ChunkIndex, server: BatchServer, *, endpoint: str, hook: Hook):
        self.store = store
        self.index = index
        self.server = server
        self.endpoint = endpoint
        self.hook = hook

    def advance(self, cid: str) -> Chunk:
        """Take a chunk one step further (upload, create, poll, download); idempotent and resumable.

        Steps run under the chunk's lock, re-reading its state first, so two processes sharing the
        folder never upload or submit a chunk twice; if another process holds the lock, the chunk is
        returned as it is on disk.
        """
        with self.store.lock(cid, blocking=False) as held:
            chunk = self.store.load(cid)
            self.index.seen(chunk)
            if not held or chunk.endpoint != self.endpoint:
                return chunk
            try:
                if chunk.status == "prepared":
                    self._upload(chunk)
                if chunk.status == "uploaded":
                    self._create(chunk)
                    return chunk  # polled on the next round
                if chunk.status in ACTIVE:
                    self._poll(chunk)
                if chunk.status in ENDED and not chunk.downloaded:
                    self._download(chunk)
            except openai.NotFoundError as err:
                self._lost(chunk, err)
            return chunk

    def _lost(self, chunk: Chunk, err: Exception) -> None:
        """The server no longer knows the chunk's file or batch (another account, deleted, a wiped
        test server): submit it again from its input if that is still here, else queue its reports again."""
        what = f"batch {chunk.batch_id}" if chunk.batch_id else f"file {chunk.input_file_id}"
        if chunk.batch_id is None and self.store.path(chunk.chunk_id, "input.jsonl").exists():
            chunk.status, chunk.input_file_id, chunk.uploading, chunk.creating = "prepared", None, False, False
            log.warning(
                "batch chunk %s: the server does not know %s (HTTP 404); uploading it again", chunk.chunk_id, what
            )
        else:
            chunk.status = ABANDONED
            log.warning(
                "batch chunk %s: the server does not know %s (HTTP 404); its reports are queued again",
                chunk.chunk_id,
                what,
            )
        chunk.errors = [*chunk.errors, f"not found on the server: {what}"]
        self.store.save(chunk)

    def _upload(self, chunk: Chunk) -> None:
        path = self.store.path(chunk.chunk_id, "input.jsonl")
        if chunk.uploading and chunk.input_file_id is None:
            chunk.input_file_id = self.server.find_upload(chunk)
        if chunk.input_file_id is None:
            if not path.exists():
                log.warning("batch chunk %s: input file %s is gone; its reports are queued again", chunk.chunk_id, path)
                chunk.status = ABANDONED
                self.store.save(chunk)
                return
            chunk.uploading = True
            self.store.save(chunk)
            chunk.input_file_id = self.server.upload(chunk, path)
        chunk.status = "uploaded"
        self.store.save(chunk)
        log.info("batch chunk %s: uploaded as %s", chunk.chunk_id, chunk.input_file_id)
        self.hook("uploaded", chunk)

    def _create(self, chunk: Chunk) -> None:
        batch = self.server.find_batch(chunk) if chunk.creating else None
        if batch is None:
            chunk.creating = True
            self.store.save(chunk)
            batch = self.server.create_batch(chunk)
        chunk.batch_id = field_of(batch, "id")
        _update(chunk, batch)
        self.store.save(chunk)
        self.store.path(chunk.chunk_id, "input.jsonl").unlink(missing_ok=True)  # the server has it now
        log.info("batch chunk %s: batch %s created (%d requests)", chunk.chunk_id, chunk.batch_id, chunk.n_requests)
        self.hook("created", chunk)

    def _poll(self, chunk: Chunk) -> None:
        old = chunk.status
        if _update(chunk, self.server.retrieve(chunk.batch_id)):
            self.store.save(chunk)
        if chunk.status != old:
            log.info(
                "batch %s (chunk %s): %s -> %s %s",
                chunk.batch_id,
                chunk.chunk_id,
                old,
                chunk.status,
                chunk.request_counts,
            )
        self.hook("polled", chunk)

    def _download(self, chunk: Chunk) -> None:
        self.store.write_output(chunk.chunk_id, self.server.results_text(chunk))
        chunk.downloaded = True
        self.store.save(chunk)
        if chunk.status != "completed":
            log.warning(
                "batch %s (chunk %s) ended %s %s%s",
                chunk.batch_id,
                chunk.chunk_id,
                chunk.status,
                chunk.request_counts,
                f": {'; '.join(chunk.errors)}" if chunk.errors else "",
            )
        self.hook("downloaded", chunk)


def _update(chunk: Chunk, batch: Any) -> bool:
    """Copy ``batch``'s state into ``chunk``; whether anything changed."""
    new = batch_state(batch)
    changed = any(getattr(chunk, k) != v for k, v in new.items())
    for k, v in new.items():
        setattr(chunk, k, v)
    return changed
