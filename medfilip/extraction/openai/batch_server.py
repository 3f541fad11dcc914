"""The Batch API calls of a chunk: upload its input, create its batch (never twice), look them up after
a kill, poll the batch and fetch its files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from medfilip.extraction.openai.batch_lines import field_of
from medfilip.extraction.openai.batch_store import Chunk
from medfilip.extraction.settings import BatchConfig

log = logging.getLogger(__name__)

__all__ = ["BatchServer"]


class BatchServer:
    """The openai SDK ``client`` (sync) as a chunk sees it: ``url`` is the endpoint its requests go to;
    a create that may have made a batch is looked up before it is tried again (``create_retries``
    times, ``sleep`` between)."""

    def __init__(
        self,
        client: Any,
        cfg: BatchConfig,
        *,
        url: str,
        sleep: Callable[[float], None] = time.sleep,
        create_retries: int = 4,
    ):
        self.client = client
        self.cfg = cfg
        self.url = url
        self.sleep = sleep
        self.create_retries = create_retries

    def upload(self, chunk: Chunk, path: Path) -> str:
        """The id of the chunk's input file once uploaded (named ``<chunk id>.jsonl``)."""
        with open(path, "rb") as fh:
            uploaded = self.client.files.create(
                file=(f"{chunk.chunk_id}.jsonl", fh, "application/jsonl"), purpose="batch"
            )
        return uploaded.id

    def find_upload(self, chunk: Chunk) -> str | None:
        """After a kill during files.create: the file it may have made, by name (best effort)."""
        try:
            for f in self.client.files.list(purpose="batch"):
                if field_of(f, "filename") == f"{chunk.chunk_id}.jsonl":
                    return field_of(f, "id")
        except Exception as err:  # noqa: BLE001 - listing is optional for OpenAI-compatible servers
            log.debug("cannot list files to find the upload of chunk %s: %s", chunk.chunk_id, err)
        return None

    def create_batch(self, chunk: Chunk) -> Any:
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
                found = self.find_batch(chunk)
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

    def find_batch(self, chunk: Chunk) -> Any | None:
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

    def retrieve(self, batch_id: str) -> Any:
        return self.client.batches.retrieve(batch_id)

    def results_text(self, chunk: Chunk) -> str:
        """The chunk's output file and error file, one after the other, each ending with a newline."""
        parts = []
        for fid in (chunk.output_file_id, chunk.error_file_id):
            if fid:
                text = self.client.files.content(fid).text
                parts.append(text if text.endswith("\n") or not text else text + "\n")
        return "".join(parts)
