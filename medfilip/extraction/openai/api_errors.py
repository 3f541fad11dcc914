"""What an openai SDK error means (quota, a rejected response format ...) and the short text it gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai

from medfilip.extraction.openai.reply import shorten

__all__ = [
    "FormatRejected",
    "RequestFailed",
    "describe_error",
    "error_code",
    "error_message",
    "is_quota",
    "rejects_response_format",
]


class RequestFailed(Exception):
    """One report's request gave up: retries exhausted, or refused for this report alone (a 400)."""


class FormatRejected(Exception):
    """The server refused the request's ``response_format`` (not this report: every request would fail)."""


def error_message(err: BaseException) -> str:
    """The server's message of an error (its body's ``message``), on one line and at most 200 characters."""
    body = getattr(err, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return shorten(str(body["message"]), 200)
    return shorten(str(err), 200)


def error_code(err: BaseException) -> str | None:
    code = getattr(err, "code", None)
    if code:
        return str(code)
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        return body.get("code") or body.get("type")
    return None


def describe_error(err: BaseException | None, timeout_s: float) -> str:
    """One line about a failed request: a timeout, a connection error, or the HTTP status, code and message."""
    if err is None:
        return "unknown error"
    if isinstance(err, openai.APITimeoutError):
        return f"request timed out after {timeout_s:g}s"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        return f"connection error: {shorten(str(cause or err), 200)}"
    if isinstance(err, openai.APIStatusError):
        code = error_code(err)
        return f"HTTP {err.status_code}{' ' + code if code else ''}: {error_message(err)}"
    return shorten(f"{type(err).__name__}: {err}", 200)


def is_quota(err: BaseException) -> bool:
    """A 429 that is an exhausted quota (``insufficient_quota``), not a rate limit: waiting does not help."""
    if not isinstance(err, openai.RateLimitError):
        return False
    body = getattr(err, "body", None)
    return error_code(err) == "insufficient_quota" or (
        isinstance(body, dict) and body.get("type") == "insufficient_quota"
    )


def rejects_response_format(err: BaseException, request: Mapping[str, Any]) -> bool:
    """A 400/422/500 that names the response format of a request that has one.

    llama.cpp's servers answer ``{type: json_schema}`` with a 500 (llama-cpp-python) or a 400
    naming ``response_format``; vLLM and OpenAI answer an unsupported form with a 400 naming it.
    """
    if "response_format" not in request or getattr(err, "status_code", None) not in (400, 422, 500):
        return False
    text = (error_message(err) + " " + str(getattr(err, "body", "") or "")).lower()
    return any(word in text for word in ("response_format", "json_schema", "response format", "json_object"))
