"""The API key: read from the environment, and kept out of every message."""

from __future__ import annotations

import os

from medfilip.configbase import ConfigError

__all__ = ["read_api_key", "redact_secret"]


def read_api_key(env_name: str) -> str:
    """The API key from the environment; a clear one-line ConfigError naming the variable when it is unset."""
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ConfigError(
            f"extraction.openai: environment variable {env_name} is not set; it must hold the API key "
            f"(export {env_name}=...; a local server without keys takes any value), or set "
            f"extraction.openai.api_key_env to the variable that holds it"
        )
    return key


def redact_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` replaced by ``***`` (secrets under 4 characters are left alone)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text
