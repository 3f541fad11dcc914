"""One chat completion of sync mode: through the shared rate limiter, retried by tenacity (429, 5xx,
timeouts, connection errors; the server's Retry-After honoured), its failure turned into a
:class:`RequestFailed` (this report) or an :class:`ExtractionAborted` (the run)."""

from __future__ import annotations

import logging
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from medfilip.extraction.backend import ExtractionAborted
from medfilip.extraction.openai.accounting import Usage, estimate_tokens
from medfilip.extraction.openai.api_errors import (
    FormatRejected,
    RequestFailed,
    describe_error,
    error_message,
    is_quota,
    rejects_response_format,
)
from medfilip.extraction.openai.credentials import redact_secret
from medfilip.extraction.openai.reply import Reply
from medfilip.extraction.openai.retry import retry_after, retry_wait, retryable
from medfilip.extraction.ratelimit import RateLimiter
from medfilip.extraction.settings import OpenAIBackendConfig

log = logging.getLogger(__name__)

__all__ = ["ChatCompleter"]


def _gave_up(attempts: int) -> str:
    return f"gave up after {attempts} attempt{'s' * (attempts > 1)}"


class ChatCompleter:
    """Sends one request and returns its :class:`Reply`, counting ``requests``, ``retries`` and
    ``rate_limited`` in ``stats``; ``backoff_s`` and ``backoff_max_s`` shape the exponential jitter
    between retries without a Retry-After."""

    def __init__(
        self,
        cfg: OpenAIBackendConfig,
        api_key: str,
        limiter: RateLimiter,
        stats: dict[str, int],
        *,
        endpoint: str,
        backoff_s: float,
        backoff_max_s: float,
    ):
        self.cfg = cfg
        self._api_key = api_key
        self.limiter = limiter
        self.stats = stats
        self.endpoint = endpoint
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s

    def _describe(self, err: BaseException | None) -> str:
        return redact_secret(describe_error(err, self.cfg.timeout_s), self._api_key)

    def _wait(self, retry_state) -> float:
        err = retry_state.outcome.exception() if retry_state.outcome else None
        return retry_wait(err, retry_state.attempt_number, self.backoff_s, self.backoff_max_s)

    async def complete(self, client: Any, request: dict[str, Any], usage: Usage, report_id: str) -> Reply:
        """One chat completion through the limiter and the retry layer; adds its token usage to ``usage``."""
        estimate = estimate_tokens(request)
        attempts = 0

        def before_sleep(state) -> None:
            self.stats["retries"] += 1
            log.debug(
                "report %s: attempt %d failed (%s); retrying in %.2fs",
                report_id,
                state.attempt_number,
                self._describe(state.outcome.exception()),
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
                    return await self._attempt(client, request, estimate, usage)
        except openai.APIStatusError as err:
            raise self._status_error(err, attempts) from None
        except openai.APIConnectionError as err:
            raise RequestFailed(
                redact_secret(f"{describe_error(err, self.cfg.timeout_s)} ({_gave_up(attempts)})", self._api_key)
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, client: Any, request: dict[str, Any], estimate: int, usage: Usage) -> Reply:
        """One try: a ticket from the limiter, the request, and the limiter told what it used."""
        ticket = await self.limiter.acquire(estimate)
        self.stats["requests"] += 1
        try:
            raw = await client.chat.completions.with_raw_response.create(**request)
        except openai.APIStatusError as err:
            self.limiter.settle(ticket, 0)  # a refused request uses no tokens
            if rejects_response_format(err, request):
                raise FormatRejected(self._describe(err)) from None
            if err.status_code == 429 and not is_quota(err):
                self.stats["rate_limited"] += 1
                after = retry_after(err)
                if after:
                    self.limiter.pause(after)  # everyone sharing the limit waits
            raise
        self.limiter.observe_headers(raw.headers, estimate)
        completion = raw.parse()
        u = completion.usage
        usage.add(u)
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

    def _status_error(self, err: openai.APIStatusError, attempts: int) -> Exception:
        """What an HTTP error that outlived the retries means: the run stops (quota, key, permission,
        model), or this report failed."""
        where, model = self.endpoint, self.cfg.model
        if is_quota(err):
            return ExtractionAborted(
                f"{where}: insufficient_quota (HTTP 429): the account has no credit left for model {model}. "
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
                    f"{where}: model or deployment {model!r} not found (HTTP 404): {error_message(err)}",
                    self._api_key,
                )
            )
        tries = f" ({_gave_up(attempts)})" if retryable(err) else ""
        return RequestFailed(self._describe(err) + tries)
