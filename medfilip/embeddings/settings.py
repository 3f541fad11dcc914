"""Config section `embeddings:` (imported by medfilip.config; keep this module free of heavy imports)."""

from __future__ import annotations

from pydantic import Field  # noqa: F401

from medfilip.configbase import Strict


class EmbeddingsConfig(Strict):
    pass
