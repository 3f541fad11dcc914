"""A completion's reply: content, finish reason and usage, and the triplets it holds (or why not)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from medfilip.extraction.schema import Polarity, Triplet, keep_categorised

__all__ = ["Reply", "ReplyError", "parse_reply", "reply_of", "shorten"]

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```\s*$", re.S)


class ReplyError(ValueError):
    """A reply that cannot be used: truncated or malformed JSON, or content the schema rejects."""


@dataclass(frozen=True)
class Reply:
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None


def reply_of(completion: Mapping[str, Any]) -> Reply:
    """Content, finish reason and token usage of a chat-completion body (a dict, as in a Batch output line)."""
    usage = completion.get("usage") or {}
    choices = completion.get("choices") or []
    if not choices:
        raise ReplyError("the completion has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    return Reply(
        message.get("content"),
        choice.get("finish_reason"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        message.get("refusal"),
    )


def shorten(text: str, n: int = 80) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis (for messages)."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def parse_reply(
    content: str | None,
    finish_reason: str | None = None,
    refusal: str | None = None,
    *,
    sentences: list[str] | None = None,
) -> tuple[list[Triplet], int]:
    """Triplets of a reply and how many were dropped for having no category (paper §III-A).

    ``sentences`` (the numbered sentences of an ``indexed`` prompt) reads the indexed reply,
    ``{"1": [{"c": ..., "p": ..., "sev": ..., "loc": ...}], "2": [], ...}``: each finding's
    ``sentence`` is the report's sentence of that number.

    Raises ReplyError with the reason for an empty, truncated or malformed reply, a refusal,
    or content the schema rejects (a wrong polarity, a missing ``triplets`` list, extra keys,
    a sentence number the report does not have ...).
    """
    if refusal:
        raise ReplyError(f"the model refused: {shorten(refusal)}")
    if finish_reason == "length":
        raise ReplyError("truncated reply: the completion hit max_tokens (finish_reason=length)")
    if finish_reason == "content_filter":
        raise ReplyError("the reply was withheld by the content filter (finish_reason=content_filter)")
    text = (content or "").strip()
    if not text:
        raise ReplyError("empty reply")
    fenced = _FENCE.match(text)  # local models often wrap JSON in ``` fences
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated"):
            raise ReplyError(f"truncated JSON: the reply ends inside a value after {len(text)} characters") from None
        # no excerpt of the reply: it may quote the report, and this reason is logged
        raise ReplyError(f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if sentences is not None:
        return _indexed(data, sentences)
    if isinstance(data, list):  # a bare list of triplets: accepted from lenient local models
        data = {"triplets": data}
    if not isinstance(data, dict) or not isinstance(data.get("triplets"), list):
        got = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)}"
        raise ReplyError(f"schema: expected an object with a 'triplets' list, got {got}")
    extra = sorted(set(data) - {"triplets"})
    if extra:
        raise ReplyError(f"schema: unexpected key(s) {', '.join(map(repr, extra))} beside 'triplets'")
    return _validated(data["triplets"])


_SHORT = {"c": "category", "p": "polarity", "sev": "severity", "loc": "location"}
_NONE_WORDS = {"none", "null", "n/a", "na", "-", ""}


def _indexed(data: Any, sentences: list[str]) -> tuple[list[Triplet], int]:
    """The triplets of an indexed reply (sentence number -> its findings), each with its sentence's text."""
    if not isinstance(data, dict):
        raise ReplyError(f"schema: expected an object keyed by sentence number, got {type(data).__name__}")
    items = []
    for key, findings in data.items():
        if not str(key).isdigit():
            raise ReplyError(f"schema: key {key!r} is not a sentence number")
        i = int(key)
        if not 1 <= i <= len(sentences):
            raise ReplyError(f"schema: sentence {i} does not exist; the report has {len(sentences)} (numbered from 1)")
        if not isinstance(findings, list):
            raise ReplyError(f"schema: sentence {i}: its findings are a {type(findings).__name__}, not a list")
        for k, item in enumerate(findings):
            if not isinstance(item, dict):
                raise ReplyError(f"schema: sentence {i} finding {k} is a {type(item).__name__}, not an object")
            unknown = sorted(set(item) - set(_SHORT))
            if unknown:
                raise ReplyError(
                    f"schema: sentence {i} finding {k} has unexpected key(s) {', '.join(map(repr, unknown))}"
                )
            triplet = {long: item.get(short) for short, long in _SHORT.items() if short in item}
            for field in ("severity", "location"):  # "none" written where the value is to be left out
                if isinstance(triplet.get(field), str) and triplet[field].strip().lower() in _NONE_WORDS:
                    triplet[field] = None
            items.append((f"sentence {i} finding {k}", {**triplet, "sentence": sentences[i - 1]}))
    kept: list[Triplet] = []
    dropped = 0
    for what, item in items:
        ok, n = _validated([item], what)
        kept.extend(ok)
        dropped += n
    return kept, dropped


def _validated(items: list[Any], what: str = "triplet") -> tuple[list[Triplet], int]:
    """Triplets of ``items`` (dicts), those without a category dropped; ``what`` names an item in errors
    ("triplet" numbers them; anything else is the name of a single item)."""
    kept: list[Triplet] = []
    dropped = 0
    for i, item in enumerate(items):
        name = f"{what} {i}" if what == "triplet" else what
        if not isinstance(item, dict):
            raise ReplyError(f"schema: {name} is a {type(item).__name__}, not an object")
        try:
            ok, n = keep_categorised([item])
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "triplet"
            msg = first["msg"]
            if first["type"] == "extra_forbidden":
                msg = "unexpected key"
            elif field == "polarity":
                msg = f"{first.get('input')!r} is not one of {', '.join(p.value for p in Polarity)}"
            raise ReplyError(f"schema: {name} field {field!r}: {msg}") from None
        kept.extend(ok)
        dropped += n
    return kept, dropped
