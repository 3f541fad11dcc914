"""Batch API mode of the ``openai`` backend (``extraction.openai.mode: batch``).

For corpus-scale runs at a discount: the reports the runner hands over (those
missing from the extraction cache) are written as JSONL chunks of
chat-completions requests, one line per report with ``custom_id`` = the
report's cache key, uploaded (``files.create(purpose="batch")``) and submitted
(``batches.create``); the batches are polled every ``poll_interval_s``, their
output and error files downloaded, each line parsed with the sync backend's
own :func:`~medfilip.extraction.openai.reply.parse_reply`, and the results
yielded to the runner, which merges them into the same cache as sync mode.

It is an :class:`ExtractionBackend` like any other: same name, model, version
and cache key as the sync backend, so a batch result and a sync result of the
same report are interchangeable, and the runner stays backend-agnostic.
The chunk states live in :mod:`.batch_store`; :mod:`.batch_runner` takes them
through upload, create, poll and download, resumably.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pyarrow.parquet as pq

from medfilip.extraction.backend import ExtractionAborted, ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.openai.batch_lines import error_text
from medfilip.extraction.openai.batch_runner import BatchRunner
from medfilip.extraction.openai.batch_steps import Hook
from medfilip.extraction.openai.batch_store import BatchStore
from medfilip.extraction.openai.client import sync_client
from medfilip.extraction.openai.credentials import read_api_key, redact_secret
from medfilip.extraction.openai.reply import ReplyError, parse_reply, reply_of
from medfilip.extraction.settings import BatchConfig

log = logging.getLogger(__name__)

__all__ = ["OpenAIBatchBackend", "result_of_line"]


class OpenAIBatchBackend(ExtractionBackend):
    """The ``openai`` backend through the Batch API.

    It wraps the sync :class:`~medfilip.extraction.openai.backend.OpenAIBackend` for everything but
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
        self._texts: dict[str, str] = {}  # cache key -> report text (an indexed reply's sentence numbers)
        self.client = client if client is not None else self._make_client()
        self.runner = BatchRunner(
            self.client,
            self.store,
            self.batch_cfg,
            endpoint=sync.endpoint,
            model=sync.model,
            url="/chat/completions" if self.cfg.azure_api_version else "/v1/chat/completions",
            request_body=sync.request_for,
            result_of=self._result_of,
            sleep=sleep,
            on_step=on_step,
        )

    @classmethod
    def from_config(cls, cfg: Any, cache_dir: str | Path, **kwargs) -> OpenAIBatchBackend:
        """From the whole PipelineConfig; chunk states go to ``<cache_dir>/batches``."""
        return cls(OpenAIBackend.from_config(cfg), Path(cache_dir) / "batches", **kwargs)

    def __repr__(self) -> str:
        return (
            f"OpenAIBatchBackend(model={self.model!r}, base_url={self.sync.endpoint!r}, state={str(self.store.root)!r})"
        )

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

    def _result_of(self, key: str, line: Mapping[str, Any]) -> ExtractionResult:
        if not self.sync.prompt.indexed:
            return result_of_line(key, line)
        if key not in self._texts:
            return ExtractionResult(key, "failed", error="indexed reply of a report whose text is not at hand")
        return result_of_line(key, line, sentences=self.sync.sentences_of(self._texts[key]))

    def _make_client(self) -> openai.OpenAI:
        key = getattr(self.sync, "api_key", None) or read_api_key(self.cfg.api_key_env)
        return sync_client(self.cfg, key)  # the SDK's own retries cover these few calls

    def extract(self, reports: Iterable[ReportText]) -> Iterator[ExtractionResult]:
        texts: dict[str, str] = {}
        ids: dict[str, list[str]] = defaultdict(list)
        for r in reports:
            key = self.cache_key(r.text)
            texts[key] = r.text
            ids[key].append(r.report_id)
        self._texts.update(texts)
        if not texts:
            return
        log.info(
            "openai batch: %d reports to %s, model %s, up to %d requests a batch and %d in flight; state in %s",
            len(texts),
            self.sync.endpoint,
            self.model,
            self.batch_cfg.max_requests_per_batch,
            self.batch_cfg.max_enqueued_requests,
            self.store.root,
        )
        try:
            for key, result in self.runner.run(texts):
                for rid in ids[key]:
                    yield dataclasses.replace(result, report_id=rid)
        except Exception as err:  # noqa: BLE001 - any failure stops the stage with its reason (ExtractionAborted)
            raise self._aborted(err) from None

    def submit_shards(self, shard_paths: Iterable[str | Path], cache: Any) -> int:
        """Submit the reports of several shards that are missing from ``cache`` at once, without waiting.

        Called before a multi-shard run, so that the shards' batches run side by side instead of one
        shard's after another's; each shard's run then finds its reports already submitted.
        """
        shard_paths = list(shard_paths)
        texts: dict[str, str] = {}
        for path in shard_paths:
            for text in pq.read_table(path, columns=["text"])["text"].to_pylist():
                texts.setdefault(self.cache_key(text), text)
        cached = cache.load(texts)
        missing = {k: t for k, t in texts.items() if k not in cached}
        try:
            n = self.runner.submit(missing)
        except Exception as err:  # noqa: BLE001 - any failure stops the stage with its reason (ExtractionAborted)
            raise self._aborted(err) from None
        log.info(
            "openai batch: %d reports of %d shards missing from the cache, %d submitted now",
            len(missing),
            len(shard_paths),
            n,
        )
        return n

    def _aborted(self, err: Exception) -> Exception:
        """An API error that outlived the SDK's retries stops the run; everything done so far is kept."""
        if not isinstance(err, openai.OpenAIError):
            return err
        status = getattr(err, "status_code", None)
        body = getattr(err, "body", None)
        detail = body.get("message") if isinstance(body, Mapping) and body.get("message") else str(err)
        what = f"HTTP {status}: " if status else ""
        msg = redact_secret(
            f"{self.sync.endpoint}: Batch API call failed ({what}{detail}). Batches already submitted "
            f"are kept in {self.store.root}; run again to resume.",
            getattr(self.sync, "api_key", None),
        )
        return ExtractionAborted(msg)


def result_of_line(report_id: str, line: Mapping[str, Any], *, sentences: list[str] | None = None) -> ExtractionResult:
    """One Batch API output or error line as a result, its reply parsed exactly as a sync reply is
    (``sentences``: those an ``indexed`` prompt numbered)."""
    err = line.get("error")
    if err:
        return ExtractionResult(report_id, "failed", error=f"batch request error {error_text(err)}")
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body") or {}
    if status != 200:
        msg = error_text(body.get("error")) if isinstance(body, Mapping) and body.get("error") else "no message"
        return ExtractionResult(report_id, "failed", error=f"HTTP {status}: {msg}")
    try:
        reply = reply_of(body)
    except ReplyError as e:
        return ExtractionResult(report_id, "failed", error=str(e))
    tokens = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
    try:
        triplets, dropped = parse_reply(reply.content, reply.finish_reason, reply.refusal, sentences=sentences)
    except ReplyError as e:
        return ExtractionResult(report_id, "failed", error=f"unusable reply: {e}", **tokens)
    return ExtractionResult(report_id, "ok", tuple(triplets), dropped_uncategorised=dropped, **tokens)
