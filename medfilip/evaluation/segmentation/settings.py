"""Config section `evaluation.segmentation:` (paper Table IV; imported by medfilip.pipeline.config: keep it light).

A UNet (segmentation-models-pytorch) whose encoder is each run's pretrained image encoder, and one
with a randomly initialised encoder as the baseline, fine-tuned on fractions of the SIIM-ACR
``train`` split and scored by Dice and IoU on ``test``. The checkpoint, the probability threshold
and the minimum predicted area are chosen on ``validate``, never on test.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medfilip.configbase import UNIQUE_ITEMS, Strict, data_fractions
from medfilip.names import Device


class SegmentationSettings(Strict):
    enabled: bool = Field(
        True,
        description="Fine-tune and score the UNets (needs datasets.siim enabled, with train, validate and test "
        "splits); false = no segmentation table",
    )
    fractions: list[float] = Field(
        [0.01, 0.1, 1.0],
        min_length=1,
        description="Fractions of the SIIM train split each UNet is fine-tuned on (paper: 1%, 10%, 100%); "
        "seeded, stratified by pneumothorax / none, each fraction's images contained in the next one's",
        json_schema_extra={**UNIQUE_ITEMS, "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
    )
    image_size: int = Field(
        64,
        ge=32,
        le=1024,
        multiple_of=32,
        description="Side in px the store images and masks are resized to for the UNet (a multiple of 32; "
        "paper scale: 448 or 512)",
    )
    decoder_channels: list[int] = Field(
        [128, 64, 32, 16, 8],
        min_length=5,
        max_length=5,
        description="Channels of the five UNet decoder blocks (smp's default is 256, 128, 64, 32, 16)",
        json_schema_extra={"items": {"type": "integer", "minimum": 1}},
    )
    epochs: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Epochs over a fraction's images; the steps are then clipped to [min_steps, max_steps]",
    )
    min_steps: int = Field(
        16,
        ge=1,
        le=10_000_000,
        description="At least this many optimiser steps per fraction (so 1% of train is not 1 step)",
    )
    max_steps: int | None = Field(
        64,
        ge=1,
        le=10_000_000,
        description="At most this many optimiser steps per fraction (the CPU budget); null = epochs x batches",
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Images per optimiser step")
    positive_share: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of each batch drawn from the images with pneumothorax (Kaggle SIIM solutions oversample "
        "them); null = batches drawn from the subset as it is",
    )
    lr: float = Field(3e-3, gt=0, le=10, description="AdamW learning rate (encoder and decoder), cosine-decayed to 0")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW weight decay")
    checks: int = Field(
        2,
        ge=1,
        le=1000,
        description="Checkpoints per fraction scored on validate, evenly spaced over the steps (the last one is "
        "the end of training); the best one on validate is scored on test",
    )
    thresholds: list[float] = Field(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        min_length=1,
        description="Candidate probability thresholds; the one with the best validate Dice (mean over images) is used",
        json_schema_extra={"items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
    )
    min_area: list[float] = Field(
        [0.0, 0.005],
        min_length=1,
        description="Candidate minimum predicted areas (fraction of the image; a smaller prediction is emptied, as "
        "Kaggle SIIM solutions do); chosen on validate with the threshold",
        json_schema_extra={"items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}},
    )
    examples: int = Field(4, ge=1, le=32, description="Test images shown per run in results/figures/segmentation.png")
    seed: int = Field(
        0, ge=0, description="Seed of the fraction subsets, the decoder init, the baseline encoder and the batch order"
    )
    device: Device = Field(Device.auto, description="cpu, cuda, or auto (cuda when available)")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "auto", description="fp32 | bf16 | auto (bf16 autocast on a GPU that supports it, fp32 on CPU)"
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        return data_fractions(value)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[float]) -> list[float]:
        bad = [t for t in value if not 0 < t < 1]
        if bad:
            raise ValueError(f"thresholds must be in (0, 1), got {bad}")
        return sorted(set(value))

    @field_validator("min_area")
    @classmethod
    def _min_area(cls, value: list[float]) -> list[float]:
        bad = [a for a in value if not 0 <= a < 1]
        if bad:
            raise ValueError(f"min_area values must be in [0, 1), got {bad}")
        return sorted(set(value))

    @field_validator("decoder_channels")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        if any(c < 1 for c in value):
            raise ValueError(f"decoder_channels must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _steps(self) -> SegmentationSettings:
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError(f"max_steps ({self.max_steps}) is below min_steps ({self.min_steps})")
        return self


def fraction_label(fraction: float) -> str:
    """1% -> '1pct', 10% -> '10pct', 0.5% -> '0.5pct' (table column names)."""
    pct = round(fraction * 100, 6)
    return f"{pct:g}pct"
