"""``OpenAIBackend``: the ``openai`` backend's synchronous mode, one chat completion a report.

Requests go out concurrently (``max_concurrency``) from an event loop in a worker thread, through
one client-side :class:`~medfilip.extraction.ratelimit.RateLimiter`; retryable failures are tried
again (:mod:`.retry`); an unusable reply is asked again once with the error; ``structured_output:
auto`` switches once to llama.cpp's form when the server rejects json_schema. See the package
docstring for the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from medfilip.configbase import ConfigError
from medfilip.extraction.backend import ExtractionAborted, ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.openai.accounting import cost_usd, estimate_tokens, price_of
from medfilip.extraction.openai.api_errors import (
    FormatRejected,
    RequestFailed,
    describe_error,
    error_message,
    is_quota,
    rejects_response_format,
)
from medfilip.extraction.openai.client import async_client
from medfilip.extraction.openai.credentials import read_api_key, redact_secret
from medfilip.extraction.openai.endpoint import DEFAULT_ENDPOINT, warn_if_mimic_online
from medfilip.extraction.openai.prompt import load_prompt, prompt_categories, report_sentences
from medfilip.extraction.openai.reply import Reply, ReplyError, parse_reply
from medfilip.extraction.openai.request import build_request, corrective_request, response_format
from medfilip.extraction.openai.retry import retry_after, retry_wait, retryable
from medfilip.extraction.openai.version import backend_version
from medfilip.extraction.ratelimit import RateLimiter
from medfilip.extraction.settings import ModelPrice, OpenAIBackendConfig

log = logging.getLogger(__name__)

__all__ = ["OpenAIBackend"]


class OpenAIBackend(ExtractionBackend):
    """Triplets from an OpenAI-compatible chat-completions endpoint (see the package docstring).

    ``window_s`` scales the rate-limit minute (tests use a second); ``backoff_s`` and
    ``backoff_max_s`` shape the exponential jitter between retries without a Retry-After.
    """

    name = "openai"

    def __init__(
        self,
        cfg: OpenAIBackendConfig,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        report_source: str | None = None,
        api_key: str | None = None,
        window_s: float = 60.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        vocabulary_dir: str | Path | None = "resources/vocabulary",
    ):
        self.cfg = cfg
        self.prompt = load_prompt(cfg.prompt)
        self.categories = prompt_categories(self.prompt, vocabulary_dir)
        # auto starts with json_schema and switches, once, when the server rejects it (llama.cpp)
        self.structured_output = "json_schema" if cfg.structured_output == "auto" else cfg.structured_output
        self._format_lock = threading.Lock()
        if cfg.azure_api_version and not cfg.base_url:
            raise ConfigError(
                "extraction.openai.azure_api_version is set but base_url is not: set it to your Azure "
                "endpoint, https://<resource>.openai.azure.com"
            )
        self._api_key = api_key if api_key is not None else read_api_key(cfg.api_key_env)
        self.price = price_of(cfg.model, prices or {})
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, window_s=window_s)
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "corrective": 0, "format_switched": 0}
        self._version = backend_version(self.prompt, cfg, self.categories)
        warn_if_mimic_online(report_source, cfg.base_url)

    @classmethod
    def from_config(cls, cfg, **kwargs) -> OpenAIBackend:
        """From the whole PipelineConfig: the openai settings, the prices, the report source and the vocabulary."""
        return cls(
            cfg.extraction.openai,
            prices=cfg.extraction.prices,
            report_source=cfg.reports.source,
            vocabulary_dir=cfg.extraction.rules.vocabulary_dir,
            **kwargs,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.endpoint!r}, version={self.version!r})"

    @property
    def api_key(self) -> str:
        """The key in use (read from the environment); for clients built elsewhere, never for logs."""
        return self._api_key

    def redact(self, text: str) -> str:
        """``text`` with this backend's API key removed."""
        return redact_secret(text, self._api_key)

    @property
    def model(self) -> str:
        return self.cfg.model

    @property
    def version(self) -> str:
        """Prompt version + a hash of the prompt file and of the settings that change a reply
        (the model file's sha256 and the closed category list included)."""
        return self._version

    @property
    def endpoint(self) -> str:
        return self.cfg.base_url or DEFAULT_ENDPOINT

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(prompt_tokens, completion_tokens, self.price)

    def request_for(self, report_text: str) -> dict[str, Any]:
        return build_request(
            self.prompt, report_text, self.cfg, categories=self.categories, structured_output=self.structured_output
        )

    def sentences_of(self, report_text: str) -> list[str] | None:
        """The numbered sentences of an ``indexed`` prompt (what a reply's sentence numbers point to)."""
        return report_sentences(report_text) if self.prompt.indexed else None

    def parse(self, reply: Reply, report_text: str):
        """The triplets of ``reply`` to the request for ``report_text`` (ReplyError if unusable)."""
        return parse_reply(reply.content, reply.finish_reason, reply.refusal, sentences=self.sentences_of(report_text))

    def _format_rejected(
        self, err: FormatRejected, request: dict[str, Any], report_text: str = ""
    ) -> dict[str, Any] | None:
        """After the server rejected ``response_format``: the request again in llama.cpp's form (auto),
        or None (the mode was chosen in the config: the run stops with a clear error)."""
        with self._format_lock:
            if self.cfg.structured_output == "auto" and request["response_format"].get("type") == "json_schema":
                if self.structured_output == "json_schema":
                    self.structured_output = "json_object_schema"
                    self.stats["format_switched"] += 1
                    log.warning(
                        "%s rejected response_format json_schema (%s); structured_output auto switches to "
                        "json_object_schema ({type: json_object, schema}, llama.cpp's form)",
                        self.endpoint,
                        err,
                    )
                sentences = self.sentences_of(report_text)
                fmt = response_format(
                    "json_object_schema",
                    self.categories if self.prompt.closed_categories else None,
                    n_sentences=None if sentences is None else len(sentences),
                )
                return {**request, "response_format": fmt}
        return None

    # -- synchronous face: a generator fed by an event loop in a worker thread ----------------
    def extract(self, reports: Iterable[ReportText]) -> Iterator[ExtractionResult]:
        reports = list(reports)
        if not reports:
            return
        log.info(
            "openai backend: %d reports to %s, model %s, %d in flight, limits %d requests and %d tokens per minute",
            len(reports),
            self.endpoint,
            self.model,
            self.cfg.max_concurrency,
            self.cfg.requests_per_minute,
            self.cfg.tokens_per_minute,
        )
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        done = object()
        holder: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                task = loop.create_task(self._extract_all(reports, out.put, stop))
                holder["loop"], holder["task"] = loop, task
                loop.run_until_complete(task)
            except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
                out.put(_Raised(err))
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()
                    out.put(done)

        thread = threading.Thread(target=run, name="openai-extract", daemon=True)
        thread.start()
        finished = False
        try:
            while True:
                try:
                    item = out.get(timeout=0.25)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    continue
                if item is done:
                    finished = True
                    break
                if isinstance(item, _Raised):
                    if isinstance(item.error, asyncio.CancelledError):
                        continue
                    raise item.error
                yield item
        finally:
            if not finished:  # the consumer stopped early (Ctrl-C, an error): stop the requests in flight
                stop.set()
                loop, task = holder.get("loop"), holder.get("task")
                if loop is not None and task is not None:
                    with contextlib.suppress(RuntimeError):  # the loop already closed
                        loop.call_soon_threadsafe(task.cancel)
                thread.join(timeout=10)
            log.info(
                "openai backend: %d requests, %d retries (%d rate-limited), %d corrective re-asks; %.1fs "
                "waited for the rate limit",
                self.stats["requests"],
                self.stats["retries"],
                self.stats["rate_limited"],
                self.stats["corrective"],
                self.limiter.waited_s,
            )

    # -- async core ----------------------------------------------------------------------------
    def _client(self) -> openai.AsyncOpenAI:
        return async_client(self.cfg, self._api_key)

    async def _extract_all(self, reports: list[ReportText], emit, stop: threading.Event) -> None:
        pending: asyncio.Queue[ReportText] = asyncio.Queue()
        for r in reports:
            pending.put_nowait(r)

        async def worker() -> None:
            while not stop.is_set():
                try:
                    report = pending.get_nowait()
                except asyncio.QueueEmpty:
                    return
                emit(await self._extract_one(client, report))

        async with self._client() as client:
            workers = [asyncio.create_task(worker()) for _ in range(min(self.cfg.max_concurrency, len(reports)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _extract_one(self, client, report: ReportText) -> ExtractionResult:
        t0 = time.perf_counter()
        usage = [0, 0]
        request = self.request_for(report.text)

        def failed(reason: str) -> ExtractionResult:
            reason = redact_secret(reason, self._api_key)
            log.warning("report %s: extraction failed: %s", report.report_id, reason)
            return ExtractionResult(
                report.report_id,
                "failed",
                error=reason,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
                latency_s=time.perf_counter() - t0,
            )

        try:
            try:
                reply = await self._complete(client, request, usage, report.report_id)
            except FormatRejected as err:
                retry = self._format_rejected(err, request, report.text)
                if retry is None:
                    raise ExtractionAborted(self._format_message(err)) from None
                request = retry
                reply = await self._complete(client, request, usage, report.report_id)
            try:
                triplets, dropped = self.parse(reply, report.text)
            except ReplyError as first:
                self.stats["corrective"] += 1
                log.debug("report %s: unusable reply (%s); asking once more", report.report_id, first)
                again = corrective_request(request, reply.content, str(first), indexed=self.prompt.indexed)
                reply = await self._complete(client, again, usage, report.report_id)
                try:
                    triplets, dropped = self.parse(reply, report.text)
                except ReplyError as second:
                    return failed(f"unusable reply after one corrective retry: {second} (first reply: {first})")
        except FormatRejected as err:  # json_object_schema rejected too (auto), on a second try
            raise ExtractionAborted(self._format_message(err)) from None
        except RequestFailed as err:
            return failed(str(err))
        return ExtractionResult(
            report.report_id,
            "ok",
            tuple(triplets),
            dropped_uncategorised=dropped,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            latency_s=time.perf_counter() - t0,
        )

    def _wait(self, retry_state) -> float:
        err = retry_state.outcome.exception() if retry_state.outcome else None
        return retry_wait(err, retry_state.attempt_number, self.backoff_s, self.backoff_max_s)

    async def _complete(self, client, request: dict[str, Any], usage: list[int], report_id: str) -> Reply:
        """One chat completion through the limiter and the retry layer; adds its token usage to ``usage``."""
        estimate = estimate_tokens(request)
        attempts = 0

        def before_sleep(state) -> None:
            self.stats["retries"] += 1
            err = state.outcome.exception()
            log.debug(
                "report %s: attempt %d failed (%s); retrying in %.2fs",
                report_id,
                state.attempt_number,
                redact_secret(describe_error(err, self.cfg.timeout_s), self._api_key),
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    ticket = await self.limiter.acquire(estimate)
                    self.stats["requests"] += 1
                    try:
                        raw = await client.chat.completions.with_raw_response.create(**request)
                    except openai.APIStatusError as err:
                        self.limiter.settle(ticket, 0)  # a refused request uses no tokens
                        if rejects_response_format(err, request):
                            raise FormatRejected(
                                redact_secret(describe_error(err, self.cfg.timeout_s), self._api_key)
                            ) from None
                        if err.status_code == 429 and not is_quota(err):
                            self.stats["rate_limited"] += 1
                            after = retry_after(err)
                            if after:
                                self.limiter.pause(after)  # everyone sharing the limit waits
                        raise
                    except openai.APIConnectionError:
                        raise
                    self.limiter.observe_headers(raw.headers, estimate)
                    completion = raw.parse()
                    u = completion.usage
                    if u is not None:
                        usage[0] += u.prompt_tokens or 0
                        usage[1] += u.completion_tokens or 0
                    self.limiter.settle(ticket, u.total_tokens if u is not None else None)
                    if not completion.choices:
                        raise RequestFailed("the completion has no choices")
                    choice = completion.choices[0]
                    return Reply(
                        choice.message.content,
                        choice.finish_reason,
                        u.prompt_tokens if u else 0,
                        u.completion_tokens if u else 0,
                        getattr(choice.message, "refusal", None),
                    )
        except openai.APIStatusError as err:
            raise self._status_error(err, attempts) from None
        except openai.APIConnectionError as err:
            raise RequestFailed(
                redact_secret(
                    f"{describe_error(err, self.cfg.timeout_s)} (gave up after {attempts} "
                    f"attempt{'s' * (attempts > 1)})",
                    self._api_key,
                )
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _format_message(self, err: FormatRejected) -> str:
        mode = self.structured_output
        hint = {
            "json_schema": "llama.cpp's server (and llama-cpp-python's) takes structured_output: json_object_schema; "
            "auto picks it by itself",
            "json_object_schema": "this form is llama.cpp's; for OpenAI, Azure or vLLM use json_schema, for a server "
            "with neither json_object or none",
        }.get(mode, "try structured_output: json_object or none")
        return (
            f"{self.endpoint}: the server rejected response_format for structured_output {mode!r} ({err}). "
            f"{hint} (extraction.openai.structured_output). Reports finished so far are cached."
        )

    def _status_error(self, err, attempts: int) -> Exception:
        where = self.endpoint
        if is_quota(err):
            return ExtractionAborted(
                f"{where}: insufficient_quota (HTTP 429): the account has no credit left for model {self.model}. "
                "Reports finished so far are cached; add credit (or change extraction.openai) and run again."
            )
        if err.status_code == 401:
            return ExtractionAborted(
                f"{where}: the API key in ${self.cfg.api_key_env} was rejected (HTTP 401); "
                "check the key and that it belongs to this endpoint"
            )
        if err.status_code == 403:
            return ExtractionAborted(
                redact_secret(f"{where}: permission denied (HTTP 403): {error_message(err)}", self._api_key)
            )
        if err.status_code == 404:
            return ExtractionAborted(
                redact_secret(
                    f"{where}: model or deployment {self.model!r} not found (HTTP 404): {error_message(err)}",
                    self._api_key,
                )
            )
        tries = f" (gave up after {attempts} attempt{'s' * (attempts > 1)})" if retryable(err) else ""
        return RequestFailed(redact_secret(describe_error(err, self.cfg.timeout_s) + tries, self._api_key))


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error
