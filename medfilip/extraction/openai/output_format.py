"""The structured-output mode a run asks with: the configured one, or ``auto``'s json_schema until the
server rejects it (llama.cpp), then llama.cpp's ``{type: json_object, schema}`` for the rest of the run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from medfilip.extraction.openai.api_errors import FormatRejected
from medfilip.extraction.openai.request import response_format

log = logging.getLogger(__name__)

__all__ = ["OutputFormat"]

_HINTS = {
    "json_schema": "llama.cpp's server (and llama-cpp-python's) takes structured_output: json_object_schema; "
    "auto picks it by itself",
    "json_object_schema": "this form is llama.cpp's; for OpenAI, Azure or vLLM use json_schema, for a server "
    "with neither json_object or none",
}


class OutputFormat:
    """The mode in use (:attr:`mode`), shared by the requests of a run and switched at most once.

    ``closed_categories``: the category list a closed-category prompt constrains the schema to (None
    for an open prompt); ``stats["format_switched"]`` counts the switch.
    """

    def __init__(
        self, configured: str, *, endpoint: str, closed_categories: Sequence[str] | None, stats: dict[str, int]
    ):
        self.configured = configured
        self.mode = "json_schema" if configured == "auto" else configured
        self.endpoint = endpoint
        self.closed_categories = closed_categories
        self.stats = stats
        self._lock = threading.Lock()

    def fallback(self, err: FormatRejected, request: dict[str, Any], n_sentences: int | None) -> dict[str, Any] | None:
        """After the server rejected ``request``'s response_format: the request again in llama.cpp's
        form (auto), or None (the mode was chosen in the config: the run stops with :meth:`rejected`).

        ``n_sentences``: the report's numbered sentences under an ``indexed`` prompt, else None.
        """
        with self._lock:
            if self.configured != "auto" or request["response_format"].get("type") != "json_schema":
                return None
            if self.mode == "json_schema":
                self.mode = "json_object_schema"
                self.stats["format_switched"] += 1
                log.warning(
                    "%s rejected response_format json_schema (%s); structured_output auto switches to "
                    "json_object_schema ({type: json_object, schema}, llama.cpp's form)",
                    self.endpoint,
                    err,
                )
            fmt = response_format("json_object_schema", self.closed_categories, n_sentences=n_sentences)
            return {**request, "response_format": fmt}

    def rejected(self, err: FormatRejected) -> str:
        """The message that stops a run whose response format the server rejects, naming what to use."""
        hint = _HINTS.get(self.mode, "try structured_output: json_object or none")
        return (
            f"{self.endpoint}: the server rejected response_format for structured_output {self.mode!r} ({err}). "
            f"{hint} (extraction.openai.structured_output). Reports finished so far are cached."
        )
