"""``OpenAIBackend``: the ``openai`` backend's synchronous mode, one chat completion a report.

Requests go out concurrently (``max_concurrency``) from an event loop in a worker thread, through
one client-side :class:`~medfilip.extraction.ratelimit.RateLimiter`; retryable failures are tried
again (:mod:`.retry`); an unusable reply is asked again once with the error; ``structured_output:
auto`` switches once to llama.cpp's form when the server rejects json_schema. See the package
docstring for the whole picture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medfilip.configbase import ConfigError
from medfilip.extraction.backend import ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.openai.accounting import cost_usd, price_of
from medfilip.extraction.openai.completion import ChatCompleter
from medfilip.extraction.openai.credentials import read_api_key, redact_secret
from medfilip.extraction.openai.endpoint import DEFAULT_ENDPOINT, warn_if_mimic_online
from medfilip.extraction.openai.loop_thread import iterate_in_thread
from medfilip.extraction.openai.output_format import OutputFormat
from medfilip.extraction.openai.prompt import load_prompt, prompt_categories, report_sentences
from medfilip.extraction.openai.reply import Reply, parse_reply
from medfilip.extraction.openai.report_call import ReportExtractor
from medfilip.extraction.openai.request import build_request
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
        if cfg.azure_api_version and not cfg.base_url:
            raise ConfigError(
                "extraction.openai.azure_api_version is set but base_url is not: set it to your Azure "
                "endpoint, https://<resource>.openai.azure.com"
            )
        self._api_key = api_key if api_key is not None else read_api_key(cfg.api_key_env)
        self.price = price_of(cfg.model, prices or {})
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, window_s=window_s)
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "corrective": 0, "format_switched": 0}
        self.output_format = OutputFormat(
            cfg.structured_output,
            endpoint=self.endpoint,
            closed_categories=self.categories if self.prompt.closed_categories else None,
            stats=self.stats,
        )
        completer = ChatCompleter(
            cfg,
            self._api_key,
            self.limiter,
            self.stats,
            endpoint=self.endpoint,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        )
        self.extractor = ReportExtractor(self, completer)
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

    @property
    def structured_output(self) -> str:
        """The structured-output mode requests are built with now (``auto`` resolved; see :mod:`.output_format`)."""
        return self.output_format.mode

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

    # -- a generator fed by the event loop of a worker thread (:mod:`.loop_thread`)------------
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
        produce = self.extractor.extract_all
        try:
            yield from iterate_in_thread(lambda emit, stop: produce(reports, emit, stop), name="openai-extract")
        finally:
            log.info(
                "openai backend: %d requests, %d retries (%d rate-limited), %d corrective re-asks; %.1fs "
                "waited for the rate limit",
                self.stats["requests"],
                self.stats["retries"],
                self.stats["rate_limited"],
                self.stats["corrective"],
                self.limiter.waited_s,
            )
