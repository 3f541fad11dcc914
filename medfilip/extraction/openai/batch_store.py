"""The Batch API mode's persisted state: one folder of chunks (one input file, one batch each).

Each chunk has a small JSON state file under ``<cache>/batches/`` (input file id, batch id, status,
request counts, downloaded, merged), written atomically after each step, beside its list of keys,
its input JSONL (until the batch exists), its downloaded output and the keys handed to the runner.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medfilip.extraction.openai.batch_lines import status_code_of
from medfilip.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

__all__ = ["ABANDONED", "ACTIVE", "ENDED", "BatchStore", "Chunk", "batch_summary"]

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")  # the batch exists and may still change
ENDED = ("completed", "failed", "expired", "cancelled")  # final batch statuses
ABANDONED = "abandoned"  # prepared but its input file is gone: its keys are queued again


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
            raise ValueError(
                f"{path}: unreadable batch state ({err}); move it away to submit its reports again"
            ) from None

    def save(self, chunk: Chunk) -> None:
        chunk.updated_at = time.time()
        write_text_atomic(json.dumps(asdict(chunk), indent=1, sort_keys=True), self.path(chunk.chunk_id, "json"))

    def keys(self, chunk_id: str) -> list[str]:
        if chunk_id not in self._keys:  # immutable once written
            self._keys[chunk_id] = self.path(chunk_id, "keys").read_text(encoding="utf-8").split()
        return self._keys[chunk_id]

    def create(self, chunk: Chunk, keys: list[str], lines: list[str]) -> None:
        """Write a new chunk: input and keys first, the state last (a chunk exists once its state does)."""
        with atomic_path(self.path(chunk.chunk_id, "input.jsonl")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
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
            if old is None or (status_code_of(line) == 200 and status_code_of(old) != 200):
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
        rows.append(
            {
                "chunk": cid,
                "batch_id": c.batch_id,
                "status": c.status,
                "requests": c.n_requests,
                "completed": c.request_counts.get("completed"),
                "failed": c.request_counts.get("failed"),
                "downloaded": c.downloaded,
                "merged": c.merged,
                "model": c.model,
                "endpoint": c.endpoint,
                "errors": "; ".join(c.errors),
            }
        )
    return rows
