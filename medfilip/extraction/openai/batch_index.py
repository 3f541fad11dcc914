"""What a :class:`BatchStore` folder holds, as one process sees it: every chunk (refreshed while not
ended), which chunk holds each report key, new chunks, and the keys handed to the runner."""

from __future__ import annotations

import logging
import time
import uuid

from medfilip.extraction.openai.batch_store import ABANDONED, BatchStore, Chunk

log = logging.getLogger(__name__)

__all__ = ["ChunkIndex"]


class ChunkIndex:
    """The chunks of ``store`` and the key -> chunk index of those usable by ``endpoint``.

    A key's chunk is the newest usable one holding it: ours to poll, or with its output already on
    disk (chunk ids sort by creation).
    """

    def __init__(self, store: BatchStore, endpoint: str):
        self.store = store
        self.endpoint = endpoint
        self.chunks: dict[str, Chunk] = {}  # every chunk seen, refreshed from disk while not ended
        self._holder: dict[str, str] = {}  # key -> newest chunk of this endpoint (or downloaded) holding it

    def holder(self, key: str) -> str | None:
        """The chunk that will deliver ``key``'s result, if any."""
        return self._holder.get(key)

    def usable(self, chunk: Chunk) -> bool:
        """A chunk can deliver results here: ours to poll, or its output is already on disk."""
        return chunk.status != ABANDONED and (chunk.endpoint == self.endpoint or chunk.ready)

    def refresh(self) -> None:
        """Index the chunks written since the last look (by any process); call it under the store's "plan" lock."""
        for cid in self.store.chunk_ids():
            if cid in self.chunks:
                continue
            chunk = self.chunks[cid] = self.store.load(cid)
            if not self.usable(chunk):
                continue
            try:
                keys = self.store.keys(cid)
            except FileNotFoundError:
                log.warning("%s: batch state without its key list; ignored", self.store.path(cid, "json"))
                continue
            for key in keys:
                self._holder[key] = cid  # ids sort by creation: the newest chunk wins

    def seen(self, chunk: Chunk) -> None:
        """Keep ``chunk`` as just read from disk."""
        self.chunks[chunk.chunk_id] = chunk

    def new_chunk(self, keys: list[str], lines: list[str], model: str) -> Chunk:
        """A new chunk of this endpoint with ``keys`` and their request ``lines``, written to the store."""
        cid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        chunk = Chunk(cid, self.endpoint, model, len(keys), time.time())
        self.store.create(chunk, keys, lines)
        self.chunks[cid] = chunk
        for k in keys:
            self._holder[k] = cid
        log.info("batch chunk %s: %d requests prepared", cid, len(keys))
        return chunk

    def mark_handed(self, cid: str, keys: list[str]) -> Chunk:
        """Record that these keys' results went to the runner; the chunk is merged once all have."""
        with self.store.lock(cid):
            self.store.add_handed(cid, keys)
            chunk = self.store.load(cid)
            if not chunk.merged and self.store.handed(cid).issuperset(self.store.keys(cid)):
                chunk.merged = True
                self.store.save(chunk)
            self.chunks[cid] = chunk
        return chunk
