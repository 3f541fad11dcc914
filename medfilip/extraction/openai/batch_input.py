"""What goes into a chunk: which queued keys fit (the requests cap and the input file's size cap), and
their JSONL request lines (``custom_id`` = the report's cache key)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

__all__ = ["MAX_INPUT_BYTES", "request_lines", "take"]

MAX_INPUT_BYTES = 190 * 1024 * 1024  # the API takes input files up to 200 MB


def take(queue: list[str], n: int, texts: Mapping[str, str]) -> list[str]:
    """Up to n keys from the front of the queue, within the input file size cap."""
    taken, size = [], 0
    for key in queue[:n]:
        size += len(texts[key].encode("utf-8")) * 2 + 4096  # generous: prompt + JSON framing
        if taken and size > MAX_INPUT_BYTES:
            break
        taken.append(key)
    return taken


def request_lines(
    keys: list[str], texts: Mapping[str, str], url: str, request_body: Callable[[str], dict]
) -> list[str]:
    """One Batch API input line per key: a POST of ``request_body(text)`` to ``url``."""
    return [
        json.dumps(
            {"custom_id": k, "method": "POST", "url": url, "body": request_body(texts[k])},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for k in keys
    ]
