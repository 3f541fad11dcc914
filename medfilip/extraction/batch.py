"""Batch API mode of the ``openai`` backend (``extraction.openai.mode: batch``).

For corpus-scale runs at a discount: the reports the runner hands over (those
missing from the extraction cache) are written as JSONL chunks of
chat-completions requests, one line per report with ``custom_id`` = the
report's cache key, uploaded (``files.create(purpose="batch")``) and submitted
(``batches.create``); the batches are polled every ``poll_interval_s``, their
output and error files downloaded, each line parsed with the sync backend's
own :func:`~medfilip.extraction.openai_backend.parse_reply`, and the results
yielded to the runner, which merges them into the same cache as sync mode.

It is an :class:`ExtractionBackend` like any other: same name, model, version
and cache key as the sync backend, so a batch result and a sync result of the
same report are interchangeable, and the runner stays backend-agnostic.

Every step is resumable. Each chunk has a small JSON state file under
``<cache>/batches/`` (input file id, batch id, status, request counts,
downloaded, merged), written atomically after each step, beside its list of
keys, its input JSONL (until the batch exists) and its downloaded output. A
restart polls the batches already submitted and submits the uploads already
made; a report whose key is in a chunk is never sent again while that chunk
can still deliver it. Chunks are capped at ``max_requests_per_batch`` and the
requests in flight (all chunks not finished, of every process sharing the
folder) at ``max_enqueued_requests``; further chunks go out as earlier ones
finish. An expired batch's unfinished requests are queued again; those of a
failed or cancelled batch become failed results naming the reason.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from medfilip.config import BatchConfig
from medfilip.extraction.backend import ExtractionBackend, ExtractionResult, ReportText
from medfilip.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")  # the batch exists and may still change
ENDED = ("completed", "failed", "expired", "cancelled")  # final batch statuses
ABANDONED = "abandoned"  # prepared but its input file is gone: its keys are queued again
BEFORE_BATCH = ("prepared", "uploaded")
MAX_INPUT_BYTES = 190 * 1024 * 1024  # the API takes input files up to 200 MB
UNFINISHED_CODES = ("batch_expired",)  # error-file lines of requests an expired batch never ran


@dataclass
class Chunk:
    """The persisted state of one chunk (one input file, one batch)."""

    chunk_id: str
    endpoint: str
    model: str
    n_requests: int
    created_at: float
    status: str = "prepared"
    uploading: bool = False  # files.create was called; an id may exist on the server
    input_file_id: str | None = None
    creating: bool = False  # batches.create was called; a batch may exist on the server
    batch_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    downloaded: bool = False
    merged: bool = False
    updated_at: float = 0.0

    @property
    def ended(self) -> bool:
        return self.status in ENDED or self.status == ABANDONED

    @property
    def ready(self) -> bool:
        """Its results (if any) are on disk: ended and downloaded, or abandoned."""
        return self.status == ABANDONED or (self.status in ENDED and self.downloaded)


class BatchStore:
    """The folder of chunk states: ``<id>.json`` (state), ``.keys``, ``.input.jsonl``, ``.output.jsonl``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._keys: dict[str, list[str]] = {}

    def path(self, chunk_id: str, kind: str) -> Path:
        return self.root / f"{chunk_id}.{kind}"

    def chunk_ids(self) -> list[str]:
        """Every chunk, oldest first (ids start with their creation time)."""
        return sorted(p.name[: -len(".json")] for p in self.root.glob("*.json"))

    def load(self, chunk_id: str) -> Chunk:
        path = self.path(chunk_id, "json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(Chunk)}
            return Chunk(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: unreadable batch state ({err}); move it away to submit its reports again") from None

    def save(self, chunk: Chunk) -> None:
        chunk.updated_at = time.time()
        write_text_atomic(json.dumps(asdict(chunk), indent=1, sort_keys=True), self.path(chunk.chunk_id, "json"))

    def keys(self, chunk_id: str) -> list[str]:
        if chunk_id not in self._keys:  # immutable once written
            self._keys[chunk_id] = self.path(chunk_id, "keys").read_text(encoding="utf-8").split()
        return self._keys[chunk_id]

    def create(self, chunk: Chunk, keys: list[str], lines: list[str]) -> None:
        """Write a new chunk: input and keys first, the state last (a chunk exists once its state does)."""
        with atomic_path(self.path(chunk.chunk_id, "input.jsonl")) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for line in lines:
                    fh.write(line)
                    fh.write("\n")
        write_text_atomic("\n".join(keys) + "\n", self.path(chunk.chunk_id, "keys"))
        self._keys[chunk.chunk_id] = list(keys)
        self.save(chunk)

    def handed(self, chunk_id: str) -> set[str]:
        """Keys whose results from this chunk were handed to the runner (appended after each hand-over)."""
        path = self.path(chunk_id, "handed")
        return set(path.read_text(encoding="utf-8").split()) if path.exists() else set()

    def add_handed(self, chunk_id: str, keys: Iterable[str]) -> None:
        text = "".join(f"{k}\n" for k in keys)
        if text:
            with open(self.path(chunk_id, "handed"), "a", encoding="utf-8") as fh:
                fh.write(text)

    def write_output(self, chunk_id: str, text: str) -> None:
        write_text_atomic(text, self.path(chunk_id, "output.jsonl"))

    def read_output(self, chunk_id: str) -> dict[str, dict]:
        """custom_id -> output or error line; a 200 response wins over an error line of the same id."""
        path = self.path(chunk_id, "output.jsonl")
        lines: dict[str, dict] = {}
        if not path.exists():
            return lines
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                log.warning("%s line %d: not a batch output line; skipped", path, n)
                continue
            old = lines.get(cid)
            if old is None or (_status_code(line) == 200 and _status_code(old) != 200):
                lines[cid] = line
        return lines

    @contextmanager
    def lock(self, name: str, blocking: bool = True) -> Iterator[bool]:
        """An exclusive flock on ``<name>.lock``; yields False when not blocking and another process holds it.

        A process that dies releases its locks, so a killed run never blocks the next one.
        """
        with open(self.root / f"{name}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def batch_summary(root: str | Path) -> list[dict]:
    """One row per chunk of a state folder, oldest first (for ``medfilip batches``)."""
    store = BatchStore(root)
    rows = []
    for cid in store.chunk_ids():
        c = store.load(cid)
        rows.append({"chunk": cid, "batch_id": c.batch_id, "status": c.status, "requests": c.n_requests,
                     "completed": c.request_counts.get("completed"), "failed": c.request_counts.get("failed"),
                     "downloaded": c.downloaded, "merged": c.merged, "model": c.model, "endpoint": c.endpoint,
                     "errors": "; ".join(c.errors)})
    return rows


def _status_code(line: Mapping[str, Any]) -> int | None:
    return (line.get("response") or {}).get("status_code")


def _error_text(err: Any) -> str:
    if isinstance(err, Mapping):
        code, msg = err.get("code"), err.get("message")
        return f"{code}: {msg}" if code and msg else str(msg or code or err)
    return str(err)


def _unfinished(line: Mapping[str, Any]) -> bool:
    """An error-file line of a request the batch never ran (expired)."""
    err = line.get("error")
    return isinstance(err, Mapping) and err.get("code") in UNFINISHED_CODES


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


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
        lines = [json.dumps({"custom_id": k, "method": "POST", "url": self.url, "body": self.request_body(texts[k])},
                            ensure_ascii=False, separators=(",", ":")) for k in keys]
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
            import openai

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
            log.warning("batch chunk %s: the server does not know %s (HTTP 404); uploading it again",
                        chunk.chunk_id, what)
        else:
            chunk.status = ABANDONED
            log.warning("batch chunk %s: the server does not know %s (HTTP 404); its reports are queued again",
                        chunk.chunk_id, what)
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
                uploaded = self.client.files.create(file=(f"{chunk.chunk_id}.jsonl", fh, "application/jsonl"),
                                                    purpose="batch")
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
        chunk.batch_id = _get(batch, "id")
        self._update(chunk, batch)
        self.store.save(chunk)
        self.store.path(chunk.chunk_id, "input.jsonl").unlink(missing_ok=True)  # the server has it now
        log.info("batch chunk %s: batch %s created (%d requests)", chunk.chunk_id, chunk.batch_id, chunk.n_requests)
        self._hook("created", chunk)

    def _create_once(self, chunk: Chunk) -> Any:
        """batches.create without blind retries: after an error that may hide a created batch (a lost
        response, a 5xx, a 429), look for it by its metadata before asking again."""
        import openai

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
                log.warning("batch chunk %s: creating the batch failed (%s); again in %.1fs", chunk.chunk_id,
                            type(err).__name__, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _find_upload(self, chunk: Chunk) -> str | None:
        """After a kill during files.create: the file it may have made, by name (best effort)."""
        try:
            for f in self.client.files.list(purpose="batch"):
                if _get(f, "filename") == f"{chunk.chunk_id}.jsonl":
                    return _get(f, "id")
        except Exception as err:  # listing is optional for OpenAI-compatible servers
            log.debug("cannot list files to find the upload of chunk %s: %s", chunk.chunk_id, err)
        return None

    def _find_batch(self, chunk: Chunk) -> Any | None:
        """After a kill during batches.create: the batch it may have made, by metadata (best effort)."""
        try:
            for n, b in enumerate(self.client.batches.list(limit=100)):
                meta = _get(b, "metadata") or {}
                if meta.get("medfilip_chunk") == chunk.chunk_id and _get(b, "input_file_id") == chunk.input_file_id:
                    return b
                if n >= 1000:
                    break
        except Exception as err:
            log.debug("cannot list batches to find the batch of chunk %s: %s", chunk.chunk_id, err)
        return None

    def _update(self, chunk: Chunk, batch: Any) -> bool:
        counts = _get(batch, "request_counts")
        errors = _get(batch, "errors")
        data = _get(errors, "data") if errors is not None else None
        new = {
            "status": _get(batch, "status"),
            "output_file_id": _get(batch, "output_file_id"),
            "error_file_id": _get(batch, "error_file_id"),
            "request_counts": {k: _get(counts, k) for k in ("total", "completed", "failed")} if counts is not None else {},
            "errors": [_error_text(e if isinstance(e, Mapping) else {"code": _get(e, "code"), "message": _get(e, "message")})
                       for e in (data or [])],
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
            log.info("batch %s (chunk %s): %s -> %s %s", chunk.batch_id, chunk.chunk_id, old, chunk.status,
                     chunk.request_counts)
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
            log.warning("batch %s (chunk %s) ended %s %s%s", chunk.batch_id, chunk.chunk_id, chunk.status,
                        chunk.request_counts, f": {'; '.join(chunk.errors)}" if chunk.errors else "")
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
            if line is not None and not _unfinished(line):
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

    def _submit(self, queue: list[str], texts: Mapping[str, str], consulted: dict[str, str | None],
                waiting: dict[str, set[str]]) -> list[str]:
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
            queue = queue[len(take):]
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
            log.info("%d reports are in %d batch chunks already submitted or downloaded: not sent again",
                     reused, len(waiting))
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


class OpenAIBatchBackend(ExtractionBackend):
    """The ``openai`` backend through the Batch API.

    It wraps the sync :class:`~medfilip.extraction.openai_backend.OpenAIBackend` for everything but
    the transport: name, model, version and cache key (so results are interchangeable with sync
    ones), the request body, the reply parsing, the price (times ``batch.discount``) and the key.
    """

    def __init__(
        self,
        sync: Any,
        state_dir: str | Path,
        *,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Hook | None = None,
    ):
        self.sync = sync
        self.name = sync.name
        self.cfg = sync.cfg
        self.batch_cfg: BatchConfig = self.cfg.batch
        self.store = BatchStore(state_dir)
        self.client = client if client is not None else self._make_client()
        self.runner = BatchRunner(
            self.client, self.store, self.batch_cfg,
            endpoint=sync.endpoint,
            model=sync.model,
            url="/chat/completions" if self.cfg.azure_api_version else "/v1/chat/completions",
            request_body=sync.request_for,
            result_of=result_of_line,
            sleep=sleep,
            on_step=on_step,
        )

    @classmethod
    def from_config(cls, cfg: Any, cache_dir: str | Path, **kwargs) -> "OpenAIBatchBackend":
        """From the whole PipelineConfig; chunk states go to ``<cache_dir>/batches``."""
        from medfilip.extraction.openai_backend import OpenAIBackend

        return cls(OpenAIBackend.from_config(cfg), Path(cache_dir) / "batches", **kwargs)

    def __repr__(self) -> str:
        return f"OpenAIBatchBackend(model={self.model!r}, base_url={self.sync.endpoint!r}, state={str(self.store.root)!r})"

    @property
    def model(self) -> str:
        return self.sync.model

    @property
    def version(self) -> str:
        return self.sync.version

    def cache_key(self, text: str) -> str:
        return self.sync.cache_key(text)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of batch requests: the sync price times ``batch.discount``."""
        return self.sync.cost(prompt_tokens, completion_tokens) * self.batch_cfg.discount

    def _make_client(self) -> Any:
        import openai

        from medfilip.extraction.openai_backend import read_api_key

        cfg = self.cfg
        key = getattr(self.sync, "api_key", None) or read_api_key(cfg.api_key_env)
        # the SDK's own retries (429, 5xx, connection errors, with backoff) cover these few calls
        if cfg.azure_api_version:
            return openai.AzureOpenAI(azure_endpoint=cfg.base_url, api_version=cfg.azure_api_version, api_key=key,
                                      timeout=cfg.timeout_s, max_retries=cfg.max_retries)
        return openai.OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=cfg.max_retries)

    def extract(self, reports: Iterable[ReportText]) -> Iterator[ExtractionResult]:
        texts: dict[str, str] = {}
        ids: dict[str, list[str]] = defaultdict(list)
        for r in reports:
            key = self.cache_key(r.text)
            texts[key] = r.text
            ids[key].append(r.report_id)
        if not texts:
            return
        log.info("openai batch: %d reports to %s, model %s, up to %d requests a batch and %d in flight; state in %s",
                 len(texts), self.sync.endpoint, self.model, self.batch_cfg.max_requests_per_batch,
                 self.batch_cfg.max_enqueued_requests, self.store.root)
        try:
            for key, result in self.runner.run(texts):
                for rid in ids[key]:
                    yield dataclasses.replace(result, report_id=rid)
        except Exception as err:
            raise self._aborted(err) from None

    def submit_shards(self, shard_paths: Iterable[str | Path], cache: Any) -> int:
        """Submit the reports of several shards that are missing from ``cache`` at once, without waiting.

        Called before a multi-shard run, so that the shards' batches run side by side instead of one
        shard's after another's; each shard's run then finds its reports already submitted.
        """
        import pyarrow.parquet as pq

        shard_paths = list(shard_paths)
        texts: dict[str, str] = {}
        for path in shard_paths:
            for text in pq.read_table(path, columns=["text"])["text"].to_pylist():
                texts.setdefault(self.cache_key(text), text)
        cached = cache.load(texts)
        missing = {k: t for k, t in texts.items() if k not in cached}
        try:
            n = self.runner.submit(missing)
        except Exception as err:
            raise self._aborted(err) from None
        log.info("openai batch: %d reports of %d shards missing from the cache, %d submitted now",
                 len(missing), len(shard_paths), n)
        return n

    def _aborted(self, err: Exception) -> Exception:
        """An API error that outlived the SDK's retries stops the run; everything done so far is kept."""
        import openai

        from medfilip.extraction.backend import ExtractionAborted
        from medfilip.extraction.openai_backend import redact_secret

        if not isinstance(err, openai.OpenAIError):
            return err
        status = getattr(err, "status_code", None)
        body = getattr(err, "body", None)
        detail = body.get("message") if isinstance(body, Mapping) and body.get("message") else str(err)
        what = f"HTTP {status}: " if status else ""
        msg = redact_secret(f"{self.sync.endpoint}: Batch API call failed ({what}{detail}). Batches already submitted "
                      f"are kept in {self.store.root}; run again to resume.", getattr(self.sync, "api_key", None))
        return ExtractionAborted(msg)


def result_of_line(report_id: str, line: Mapping[str, Any]) -> ExtractionResult:
    """One Batch API output or error line as a result, its reply parsed exactly as a sync reply is."""
    from medfilip.extraction.openai_backend import ReplyError, parse_reply, reply_of

    err = line.get("error")
    if err:
        return ExtractionResult(report_id, "failed", error=f"batch request error {_error_text(err)}")
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body") or {}
    if status != 200:
        msg = _error_text(body.get("error")) if isinstance(body, Mapping) and body.get("error") else "no message"
        return ExtractionResult(report_id, "failed", error=f"HTTP {status}: {msg}")
    try:
        reply = reply_of(body)
    except ReplyError as e:
        return ExtractionResult(report_id, "failed", error=str(e))
    tokens = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
    try:
        triplets, dropped = parse_reply(reply.content, reply.finish_reason, reply.refusal)
    except ReplyError as e:
        return ExtractionResult(report_id, "failed", error=f"unusable reply: {e}", **tokens)
    return ExtractionResult(report_id, "ok", tuple(triplets), dropped_uncategorised=dropped, **tokens)
