"""Tokens and money: a request's token estimate before it is sent (for the rate limiter), the tokens a
report's requests used, and the price of a model's tokens."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medfilip.extraction.settings import ModelPrice

__all__ = ["Usage", "cost_usd", "estimate_tokens", "price_of"]


def estimate_tokens(request: Mapping[str, Any]) -> int:
    """Tokens a request may use, before it is sent: ~4 characters a prompt token, plus the completion cap."""
    chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0 for m in request["messages"])
    return math.ceil(chars / 4) + 8 * len(request["messages"]) + int(request.get("max_tokens") or 0)


@dataclass
class Usage:
    """The tokens one report's requests used, summed over its attempts and its corrective re-ask."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: Any) -> None:
        """Add a completion's ``usage`` (the SDK's CompletionUsage; None when the server sent none)."""
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens or 0
            self.completion_tokens += usage.completion_tokens or 0


def price_of(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of a model: its own entry, else the longest listed prefix (gpt-4o-mini-2024-07-18 -> gpt-4o-mini)."""
    if model in prices:
        return prices[model]
    matches = [k for k in prices if model.startswith(k)]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(prompt_tokens: int, completion_tokens: int, price: ModelPrice | None, factor: float = 1.0) -> float:
    if price is None:
        return 0.0
    return factor * (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6
