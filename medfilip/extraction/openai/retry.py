"""Which failed requests are tried again, and how long to wait first (the server's Retry-After, else
exponential backoff with jitter)."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

import openai

from medfilip.extraction.openai.api_errors import is_quota

__all__ = ["MAX_RETRY_AFTER_S", "random_jitter", "retry_after", "retry_wait", "retryable"]

MAX_RETRY_AFTER_S = 600.0  # a longer Retry-After is capped


def retryable(err: BaseException) -> bool:
    """Connection errors and timeouts, rate limits (not an exhausted quota), 408, 409 and 5xx."""
    if isinstance(err, openai.APIConnectionError):  # APITimeoutError included
        return True
    if isinstance(err, openai.RateLimitError):
        return not is_quota(err)
    return isinstance(err, openai.APIStatusError) and (err.status_code >= 500 or err.status_code in (408, 409))


def retry_after(err: BaseException) -> float | None:
    """Seconds the server asked to wait (retry-after-ms, then retry-after as seconds or an HTTP date)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def random_jitter(scale: float) -> float:
    return random.uniform(0, scale)


def retry_wait(err: BaseException | None, attempt: int, backoff_s: float, backoff_max_s: float) -> float:
    """Seconds before attempt ``attempt + 1``: the server's Retry-After (at most 600 s), else
    ``backoff_s * 2**(attempt-1)`` capped at ``backoff_max_s``, plus up to ``backoff_s`` of jitter."""
    after = retry_after(err) if err is not None else None
    if after is not None:
        return min(after, MAX_RETRY_AFTER_S)
    return min(backoff_max_s, backoff_s * 2 ** (attempt - 1)) + random_jitter(backoff_s)
