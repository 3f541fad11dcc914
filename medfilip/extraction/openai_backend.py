"""Old import path of the ``openai`` backend, kept for importers not yet moved (the lead removes it at
merge): the code lives in the package :mod:`medfilip.extraction.openai`, one job a module."""

from medfilip.extraction.backend import ExtractionAborted
from medfilip.extraction.openai.accounting import cost_usd, estimate_tokens, price_of
from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.openai.credentials import read_api_key, redact_secret
from medfilip.extraction.openai.endpoint import is_local_url, warn_if_mimic_online
from medfilip.extraction.openai.prompt import (
    CATEGORIES_PLACEHOLDER,
    PROMPT_KEYS,
    REPORT_PLACEHOLDER,
    Prompt,
    load_prompt,
    prompt_categories,
)
from medfilip.extraction.openai.reply import Reply, ReplyError, parse_reply, reply_of
from medfilip.extraction.openai.request import (
    TRIPLETS_JSON_SCHEMA,
    build_request,
    corrective_request,
    response_format,
    triplets_json_schema,
)
from medfilip.extraction.openai.retry import random_jitter
from medfilip.extraction.openai.version import generation_settings

__all__ = [
    "CATEGORIES_PLACEHOLDER",
    "PROMPT_KEYS",
    "REPORT_PLACEHOLDER",
    "TRIPLETS_JSON_SCHEMA",
    "ExtractionAborted",
    "OpenAIBackend",
    "Prompt",
    "Reply",
    "ReplyError",
    "build_request",
    "corrective_request",
    "cost_usd",
    "estimate_tokens",
    "generation_settings",
    "is_local_url",
    "load_prompt",
    "parse_reply",
    "price_of",
    "prompt_categories",
    "random_jitter",
    "read_api_key",
    "redact_secret",
    "reply_of",
    "response_format",
    "triplets_json_schema",
    "warn_if_mimic_online",
]
