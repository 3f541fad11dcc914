"""What changes a reply besides the report: the backend's version (a part of every cache key) and
the settings a Snakemake param of extraction carries (so a change re-runs extraction).

The endpoint, key, limits and retries change how it is asked, not the answer: they are in neither.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from medfilip.extraction.llm_server import model_file_sha256
from medfilip.extraction.openai.prompt import Prompt
from medfilip.extraction.settings import GENERATION_KEYS, OpenAIBackendConfig

__all__ = ["backend_version", "generation_settings"]


def generation_settings(cfg: OpenAIBackendConfig, categories: list[str] | None = None) -> dict[str, Any]:
    """What changes a reply besides the prompt file: the model (and its file's sha256), the generation
    settings, and the closed category list. In the backend's version (the cache key) and a Snakemake
    param of extraction; the endpoint, key, limits and retries change how it is asked, not the answer.
    """
    # model, temperature, max_output_tokens, structured_output as they are; the two below as they come
    out: dict[str, Any] = {k: getattr(cfg, k) for k in GENERATION_KEYS if k not in ("presence_penalty", "model_file")}
    if cfg.presence_penalty:  # only when set: the versions of earlier runs stay as they were
        out["presence_penalty"] = cfg.presence_penalty
    if cfg.model_file is not None:
        out["model_file_sha256"] = model_file_sha256(cfg.model_file)
    if categories:
        out["categories_sha256"] = hashlib.sha256("\n".join(categories).encode()).hexdigest()[:16]
    return out


def backend_version(prompt: Prompt, cfg: OpenAIBackendConfig, categories: list[str] | None = None) -> str:
    """Prompt version + a hash of the prompt file and of the settings that change a reply
    (the model file's sha256 and the closed category list included); the model name is a cache-key
    part of its own, so it is left out."""
    gen = generation_settings(cfg, categories)
    gen.pop("model")  # the model name is a cache-key part of its own
    settings = json.dumps([gen.pop("structured_output"), gen.pop("temperature"), gen.pop("max_output_tokens")])
    if gen:  # model file hash, closed categories: appended, so versions without them are unchanged
        settings += json.dumps(gen, sort_keys=True)
    return f"{prompt.version}+{hashlib.sha256(prompt.sha256.encode() + settings.encode()).hexdigest()[:12]}"
