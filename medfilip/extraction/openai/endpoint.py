"""Where the reports go: a server on this machine, or an online service (MIMIC-CXR's data use agreement)."""

from __future__ import annotations

import logging
from ipaddress import ip_address
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_ENDPOINT", "is_local_url", "warn_if_mimic_online"]

DEFAULT_ENDPOINT = "https://api.openai.com/v1"  # the SDK's when extraction.openai.base_url is unset

_warned_mimic: set[str] = set()


def is_local_url(base_url: str | None) -> bool:
    """True for a server on this machine (localhost, 127.0.0.0/8, ::1)."""
    if not base_url:
        return False
    host = (urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_mimic_online(report_source: str | None, base_url: str | None) -> bool:
    """Warn, once per process and endpoint, that MIMIC reports are about to go to an online service."""
    if report_source != "mimic_cxr" or is_local_url(base_url):
        return False
    where = base_url or "api.openai.com"
    if where in _warned_mimic:
        return False
    _warned_mimic.add(where)
    log.warning(
        "reports.source is mimic_cxr and extraction.openai.base_url (%s) is an online service: the PhysioNet "
        "credentialed data use agreement restricts sending MIMIC-CXR reports to online services. The usual "
        "answers are Azure OpenAI with human review of prompts opted out, or a local server (vLLM, Ollama) "
        "on localhost.",
        where,
    )
    return True
