"""Config section `knowledge:` (imported by medfilip.pipeline.config; keep this module free of heavy imports)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from medfilip.configbase import Strict


class KnowledgeConfig(Strict):
    path: Path = Field(
        Path("resources/knowledge/dictionary.yaml"),
        description="The IKI dictionary (YAML): a visual explanation, context and synonyms per category",
    )
