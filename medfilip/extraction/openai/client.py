"""The openai SDK clients of an ``extraction.openai`` configuration (OpenAI-compatible or Azure)."""

from __future__ import annotations

import openai

from medfilip.extraction.settings import OpenAIBackendConfig

__all__ = ["async_client", "sync_client"]


def async_client(cfg: OpenAIBackendConfig, api_key: str) -> openai.AsyncOpenAI:
    """The client of sync mode: the SDK's own retries are off (tenacity retries, through the rate limiter)."""
    if cfg.azure_api_version:
        return openai.AsyncAzureOpenAI(
            azure_endpoint=cfg.base_url,
            api_version=cfg.azure_api_version,
            api_key=api_key,
            timeout=cfg.timeout_s,
            max_retries=0,
        )
    return openai.AsyncOpenAI(api_key=api_key, base_url=cfg.base_url, timeout=cfg.timeout_s, max_retries=0)


def sync_client(cfg: OpenAIBackendConfig, api_key: str) -> openai.OpenAI:
    """The client of the Batch API mode: the SDK's own retries (429, 5xx, connection errors, with
    backoff) cover its few calls."""
    if cfg.azure_api_version:
        return openai.AzureOpenAI(
            azure_endpoint=cfg.base_url,
            api_version=cfg.azure_api_version,
            api_key=api_key,
            timeout=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )
    return openai.OpenAI(base_url=cfg.base_url, api_key=api_key, timeout=cfg.timeout_s, max_retries=cfg.max_retries)
