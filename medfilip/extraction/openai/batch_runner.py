"""``BatchRunner``: submits, polls and collects chunks of requests through a :class:`BatchStore`.

Every step is resumable. A restart polls the batches already submitted and submits the uploads
already made; a report whose key is in a chunk is never sent again while that chunk can still
deliver it. Chunks are capped at ``max_requests_per_batch`` and the requests in flight (all chunks
not finished, of every process sharing the folder) at ``max_enqueued_requests``; further chunks go
out as earlier ones finish. An expired batch's unfinished requests are queued again; those of a
failed or cancelled batch become failed results naming the reason.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import openai

from medfilip.extraction.backend import ExtractionResult
from medfilip.extraction.openai.batch_lines import error_text, field_of, never_ran
from medfilip.extraction.openai.batch_store import ABANDONED, ACTIVE, ENDED, BatchStore, Chunk
from medfilip.extraction.settings import BatchConfig

log = logging.getLogger(__name__)

__all__ = ["MAX_INPUT_BYTES", "BatchRunner", "Hook", "ResultOf"]

MAX_INPUT_BYTES = 190 * 1024 * 1024  # the API takes input files up to 200 MB

Hook = Callable[[str, Chunk], None]
ResultOf = Callable[[str, Mapping[str, Any]], ExtractionResult]


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
        self.client = client
        self.create_retries = create_retries
        self.store = store
        self.cfg = cfg
        self.endpoint = endpoint
        self.model = model
        self.url = url
        self.request_body = request_body
        self.result_of = result_of
        self.sleep = sleep
        self.on_step = on_step
        self._chunks: dict[str, Chunk] = {}  # every chunk seen, refreshed from disk while not ended
        self._index: dict[str, str] = {}  # key -> newest chunk of this endpoint (or downloaded) holding it

    # -- the folder --------------------------------------------------------------------------
    def _usable(self, chunk: Chunk) -> bool:
        """A chunk can deliver results here: ours to poll, or its output is already on disk."""
        return chunk.status != ABANDONED and (chunk.endpoint == self.endpoint or chunk.ready)

    def _refresh_index(self) -> None:
        for cid in self.store.chunk_ids():
            if cid in self._chunks:
                continue
            chunk = self._chunks[cid] = self.store.load(cid)
            if not self._usable(chunk):
                continue
            try:
                keys = self.store.keys(cid)
            except FileNotFoundError:
                log.warning("%s: batch state without its key list; ignored", self.store.path(cid, "json"))
                continue
            for key in keys:
                self._index[key] = cid  # ids sort by creation: the newest chunk wins

    def _hook(self, step: str, chunk: Chunk) -> None:
        if self.on_step is not None:
            self.on_step(step, chunk)

    # -- one chunk ---------------------------------------------------------------------------
    def _new_chunk(self, keys: list[str], texts: Mapping[str, str]) -> Chunk:
        cid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        lines = [
            json.dumps(
                {"custom_id": k, "method": "POST", "url": self.url, "body": self.request_body(texts[k])},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for k in keys
        ]
        chunk = Chunk(cid, self.endpoint, self.model, len(keys), time.time())
        self.store.create(chunk, keys, lines)
        self._chunks[cid] = chunk
        for k in keys:
            self._index[k] = cid
        log.info("batch chunk %s: %d requests prepared", cid, len(keys))
        return chunk

    def advance(self, cid: str) -> Chunk:
        """Take a chunk one step further (upload, create, poll, download); idempotent and resumable.

        Steps run under the chunk's lock, re-reading its state first, so two processes sharing the
        folder never upload or submit a chunk twice; if another process holds the lock, the chunk is
        returned as it is on disk.
        """
        with self.store.lock(cid, blocking=False) as held:
            chunk = self.store.load(cid)
            self._chunks[cid] = chunk
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
            chunk.input_file_id = self._find_upload(chunk)
        if chunk.input_file_id is None:
            if not path.exists():
                log.warning("batch chunk %s: input file %s is gone; its reports are queued again", chunk.chunk_id, path)
                chunk.status = ABANDONED
                self.store.save(chunk)
                return
            chunk.uploading = True
            self.store.save(chunk)
            with open(path, "rb") as fh:
                uploaded = self.client.files.create(
                    file=(f"{chunk.chunk_id}.jsonl", fh, "application/jsonl"), purpose="batch"
                )
            chunk.input_file_id = uploaded.id
        chunk.status = "uploaded"
        self.store.save(chunk)
        log.info("batch chunk %s: uploaded as %s", chunk.chunk_id, chunk.input_file_id)
        self._hook("uploaded", chunk)

    def _create(self, chunk: Chunk) -> None:
        batch = self._find_batch(chunk) if chunk.creating else None
        if batch is None:
            chunk.creating = True
            self.store.save(chunk)
            batch = self._create_once(chunk)
        chunk.batch_id = field_of(batch, "id")
        self._update(chunk, batch)
        self.store.save(chunk)
        self.store.path(chunk.chunk_id, "input.jsonl").unlink(missing_ok=True)  # the server has it now
        log.info("batch chunk %s: batch %s created (%d requests)", chunk.chunk_id, chunk.batch_id, chunk.n_requests)
        self._hook("created", chunk)

    def _create_once(self, chunk: Chunk) -> Any:
        """batches.create without blind retries: after an error that may hide a created batch (a lost
        response, a 5xx, a 429), look for it by its metadata before asking again."""
        client = self.client.with_options(max_retries=0) if hasattr(self.client, "with_options") else self.client
        for attempt in range(self.create_retries + 1):
            try:
                return client.batches.create(
                    input_file_id=chunk.input_file_id,
                    endpoint=self.url,
                    completion_window=self.cfg.completion_window,
                    metadata={"medfilip_chunk": chunk.chunk_id},
                )
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as err:
                found = self._find_batch(chunk)
                if found is not None:
                    return found
                if attempt == self.create_retries:
                    raise
                wait = min(60.0, 0.5 * 2**attempt)
                log.warning(
                    "batch chunk %s: creating the batch failed (%s); again in %.1fs",
                    chunk.chunk_id,
                    type(err).__name__,
                    wait,
                )
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _find_upload(self, chunk: Chunk) -> str | None:
        """After a kill during files.create: the file it may have made, by name (best effort)."""
        try:
            for f in self.client.files.list(purpose="batch"):
                if field_of(f, "filename") == f"{chunk.chunk_id}.jsonl":
                    return field_of(f, "id")
        except Exception as err:  # noqa: BLE001 - listing is optional for OpenAI-compatible servers
            log.debug("cannot list files to find the upload of chunk %s: %s", chunk.chunk_id, err)
        return None

    def _find_batch(self, chunk: Chunk) -> Any | None:
        """After a kill during batches.create: the batch it may have made, by metadata (best effort)."""
        try:
            for n, b in enumerate(self.client.batches.list(limit=100)):
                meta = field_of(b, "metadata") or {}
                if meta.get("medfilip_chunk") == chunk.chunk_id and field_of(b, "input_file_id") == chunk.input_file_id:
                    return b
                if n >= 1000:
                    break
        except Exception as err:  # noqa: BLE001 - listing is optional for OpenAI-compatible servers
            log.debug("cannot list batches to find the batch of chunk %s: %s", chunk.chunk_id, err)
        return None

    def _update(self, chunk: Chunk, batch: Any) -> bool:
        counts = field_of(batch, "request_counts")
        errors = field_of(batch, "errors")
        data = field_of(errors, "data") if errors is not None else None
        new = {
            "status": field_of(batch, "status"),
            "output_file_id": field_of(batch, "output_file_id"),
            "error_file_id": field_of(batch, "error_file_id"),
            "request_counts": {k: field_of(counts, k) for k in ("total", "completed", "failed")}
            if counts is not None
            else {},
            "errors": [
                error_text(
                    e if isinstance(e, Mapping) else {"code": field_of(e, "code"), "message": field_of(e, "message")}
                )
                for e in (data or [])
            ],
        }
        changed = any(getattr(chunk, k) != v for k, v in new.items())
        for k, v in new.items():
            setattr(chunk, k, v)
        return changed

    def _poll(self, chunk: Chunk) -> None:
        old = chunk.status
        batch = self.client.batches.retrieve(chunk.batch_id)
        if self._update(chunk, batch):
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
        self._hook("polled", chunk)

    def _download(self, chunk: Chunk) -> None:
        parts = []
        for fid in (chunk.output_file_id, chunk.error_file_id):
            if fid:
                text = self.client.files.content(fid).text
                parts.append(text if text.endswith("\n") or not text else text + "\n")
        self.store.write_output(chunk.chunk_id, "".join(parts))
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
        self._hook("downloaded", chunk)

    def _mark_handed(self, cid: str, keys: list[str]) -> None:
        """Record that these keys' results went to the runner; the chunk is merged once all have."""
        if not keys:
            return
        with self.store.lock(cid):
            self.store.add_handed(cid, keys)
            chunk = self.store.load(cid)
            if not chunk.merged and self.store.handed(cid).issuperset(self.store.keys(cid)):
                chunk.merged = True
                self.store.save(chunk)
            self._chunks[cid] = chunk
        self._hook("merged", chunk)

    # -- results -----------------------------------------------------------------------------
    def _collect(self, chunk: Chunk, keys: set[str], requeue: list[str]) -> Iterator[tuple[str, ExtractionResult]]:
        """Results of a ready chunk for ``keys``; the keys it cannot answer go to ``requeue``.

        A report an expired batch never ran is sent again. A failed result already handed to the
        runner once is not handed again: the report is sent again instead (``--retry-failed``,
        or a run killed between the hand-over and the cache flush). An ok result is handed again
        whenever the runner asks (it only asks for reports missing from the cache).
        """
        lines = self.store.read_output(chunk.chunk_id)
        handed = self.store.handed(chunk.chunk_id)
        for key in (k for k in self.store.keys(chunk.chunk_id) if k in keys):
            line = lines.get(key)
            if line is not None and not never_ran(line):
                result = self.result_of(key, line)
                if result.status == "ok" or key not in handed:
                    yield key, result
                else:
                    requeue.append(key)
            elif chunk.status in ("expired", ABANDONED) or key in handed:
                requeue.append(key)
            else:
                yield key, ExtractionResult(key, "failed", error=self._reason(chunk))

    @staticmethod
    def _reason(chunk: Chunk) -> str:
        if chunk.status == "failed":
            why = "; ".join(chunk.errors) or "no reason given"
            return f"batch {chunk.batch_id} failed: {why}"
        if chunk.status == "cancelled":
            return f"batch {chunk.batch_id} was cancelled before this request ran"
        return f"batch {chunk.batch_id} ended {chunk.status} without a result for this request"

    # -- the loop ----------------------------------------------------------------------------
    def _in_flight(self, waiting: Mapping[str, Any]) -> int:
        """Requests of every chunk of this endpoint whose batch has not ended (of any process)."""
        total = 0
        for cid, chunk in list(self._chunks.items()):
            if chunk.ended or chunk.endpoint != self.endpoint:
                continue
            if cid not in waiting:  # another process's, or an orphan of a killed one: look again
                chunk = self.advance(cid)
                if chunk.ended:
                    continue
            total += chunk.n_requests
        return total

    def _take(self, queue: list[str], n: int, texts: Mapping[str, str]) -> list[str]:
        """Up to n keys from the front of the queue, within the input file size cap."""
        take, size = [], 0
        for key in queue[:n]:
            size += len(texts[key].encode("utf-8")) * 2 + 4096  # generous: prompt + JSON framing
            if take and size > MAX_INPUT_BYTES:
                break
            take.append(key)
        return take

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
                self._refresh_index()
                elsewhere = {k for k in queue if self._index.get(k) != consulted.get(k)}
                if elsewhere:
                    for k in elsewhere:
                        waiting[self._index[k]].add(k)
                    queue = [k for k in queue if k not in elsewhere]
                take = self._take(queue, min(self.cfg.max_requests_per_batch, limit - in_flight), texts)
                if not take:
                    break
                chunk = self._new_chunk(take, texts)
            queue = queue[len(take) :]
            for k in take:
                consulted[k] = chunk.chunk_id
            waiting[chunk.chunk_id] = set(take)
            in_flight += len(take)
            self.advance(chunk.chunk_id)
        if queue:
            log.info("%d requests wait for room in the queue (%d of %d in flight)", len(queue), in_flight, limit)
        return queue

    def _plan(self, texts: Mapping[str, str]) -> tuple[dict[str, set[str]], list[str], dict[str, str | None]]:
        with self.store.lock("plan"):
            self._refresh_index()
        waiting: dict[str, set[str]] = defaultdict(set)
        queue: list[str] = []
        for key in texts:
            cid = self._index.get(key)
            (waiting[cid].add(key) if cid is not None else queue.append(key))
        consulted = {k: self._index.get(k) for k in texts}
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
                for key, result in self._collect(chunk, keys, requeue):
                    yield key, result
                    handed.append(key)
                self._mark_handed(cid, handed)
                queue.extend(requeue)
                for k in requeue:
                    consulted[k] = self._index.get(k)
            if queue:
                queue = self._submit(queue, texts, consulted, waiting)
            if queue or waiting:
                self.sleep(self.cfg.poll_interval_s)
