"""Fields of the Batch API's objects and lines: a batch (an SDK object or a dict), its error entries,
and the lines of its output and error files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["UNFINISHED_CODES", "batch_state", "error_text", "field_of", "never_ran", "status_code_of"]

UNFINISHED_CODES = ("batch_expired",)  # error-file lines of requests an expired batch never ran


def status_code_of(line: Mapping[str, Any]) -> int | None:
    """The HTTP status of an output line's response (None for an error-file line)."""
    return (line.get("response") or {}).get("status_code")


def error_text(err: Any) -> str:
    """``code: message`` of an error entry (a dict), else what there is of it."""
    if isinstance(err, Mapping):
        code, msg = err.get("code"), err.get("message")
        return f"{code}: {msg}" if code and msg else str(msg or code or err)
    return str(err)


def never_ran(line: Mapping[str, Any]) -> bool:
    """An error-file line of a request the batch never ran (expired)."""
    err = line.get("error")
    return isinstance(err, Mapping) and err.get("code") in UNFINISHED_CODES


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """A field of an SDK object or of a dict (servers and tests hand either)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def batch_state(batch: Any) -> dict[str, Any]:
    """The fields of a batch that a chunk's state keeps: status, output and error file ids, request
    counts and the error messages."""
    counts = field_of(batch, "request_counts")
    errors = field_of(batch, "errors")
    data = field_of(errors, "data") if errors is not None else None
    return {
        "status": field_of(batch, "status"),
        "output_file_id": field_of(batch, "output_file_id"),
        "error_file_id": field_of(batch, "error_file_id"),
        "request_counts": {k: field_of(counts, k) for k in ("total", "completed", "failed")}
        if counts is not None
        else {},
        "errors": [
            error_text(
                e if isinstance(e, Mapping) else {"code": field_of(e, "code"), "message": field_of(e, "message")}
            )
            for e in (data or [])
        ],
    }
