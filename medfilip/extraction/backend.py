"""The interface every extraction backend implements, and the result it yields.

Backends only turn report texts into triplets; caching, resuming, sharding
and accounting live in :mod:`medfilip.extraction.runner`, shared by all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from medfilip.extraction.schema import Triplet
from medfilip.io import sha256_text


@dataclass(frozen=True)
class ReportText:
    report_id: str
    text: str


@dataclass(frozen=True)
class ExtractionResult:
    report_id: str
    status: str  # "ok" or "failed"
    triplets: tuple[Triplet, ...] = ()
    error: str | None = None
    dropped_uncategorised: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    extra: dict = field(default_factory=dict)


class ExtractionAborted(RuntimeError):
    """The backend cannot go on (an exhausted quota, a rejected key, an unknown model).

    Raised from ``extract()``; the runner keeps the results already yielded, and the
    CLI prints the message (never a traceback) and exits non-zero.
    """


class ExtractionBackend(ABC):
    """Turns reports into triplets. ``name``, ``model`` and ``version`` make the cache key."""

    name: str = ""

    @property
    @abstractmethod
    def model(self) -> str:
        """Model identifier (an LLM name, or the rules engine's own id)."""

    @property
    @abstractmethod
    def version(self) -> str:
        """Prompt or vocabulary version: changing it invalidates cached results."""

    def cache_key(self, text: str) -> str:
        return sha256_text(self.name, self.model, self.version, text)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD spent on a result's tokens (0 for local backends)."""
        return 0.0

    @abstractmethod
    def extract(self, reports: Iterable[ReportText]) -> Iterator[ExtractionResult]:
        """Yield one result per report, in any order; a failure is a result with status 'failed'."""
