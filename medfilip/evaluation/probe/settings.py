"""Config section ``evaluation.linear_probe`` (imported by medfilip.evaluation.settings: keep it light).

The linear probe of the paper's Table II: a logistic regression on each pretrained run's frozen
image features (cached once per run, dataset and split), trained on 1 / 10 / 100 % of the train
split, plus baselines fine-tuned end to end on the same subsets.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from medfilip.configbase import Strict, data_fractions
from medfilip.names import Device


class ProbeBaselineSettings(Strict):
    enabled: bool = Field(
        True,
        description="Train the Table II baselines on the same train subsets: a ResNet (training.model.image_arch) "
        "from random init, the same ResNet from ImageNet weights (when imagenet_weights or training.model."
        "image_weights names a local file; else a 'skipped: no weights configured' row) and ConvNeXt-Tiny from "
        "random init, all fully fine-tuned",
    )
    convnext: bool = Field(True, description="Include the ConvNeXt-Tiny (torchvision, random init) baseline")
    imagenet_weights: Path | None = Field(
        None,
        description="Local torchvision ImageNet state dict of training.model.image_arch for the ImageNet-initialised "
        "baseline; null = training.model.image_weights (if set), else that row is skipped",
    )
    image_size: int = Field(
        32,
        ge=32,
        le=1024,
        description="Side in px the baselines see (the store images resized once; ConvNeXt needs 32 or more); sized "
        "for 2 CPU cores (paper: the dataset's full size)",
    )
    epochs: int = Field(1, ge=1, le=1000, description="Epochs over the train subset (the same for every fraction)")
    batch_size: int = Field(64, ge=1, le=4096, description="Images per optimiser step")
    lr: float = Field(0.001, gt=0, le=10.0, description="AdamW learning rate")
    weight_decay: float = Field(0.0001, ge=0, le=1.0, description="AdamW weight decay")
    seeds: int = Field(
        1,
        ge=1,
        le=20,
        description="Seeds (train subsets) per fraction below 100 % for the baselines: the first `seeds` of the "
        "probe's subsets (the probe's own seeds: linear_probe.seeds)",
    )


class LinearProbeSettings(Strict):
    enabled: bool = Field(True, description="Build the linear-probe table (results/tables/linear_probe.csv)")
    datasets: list[str] = Field(
        ["rsna", "vinbig"],
        description="Downstream stores probed (paper: RSNA single-label, VinBigData 8 classes multi-label); each "
        "needs datasets.<name>.n_train > 0",
    )
    fractions: list[float] = Field(
        [0.01, 0.1, 1.0],
        min_length=1,
        description="Fractions of the train split the classifier is trained on (stratified, seeded)",
    )
    seeds: int = Field(3, ge=1, le=100, description="Subsets (seeds) per fraction below 1; 100 % is one fit")
    c_grid: list[float] = Field(
        [0.001, 0.01, 0.1, 1.0, 10.0],
        min_length=1,
        description="Inverse L2 strengths tried; the one with the best validate AUC is kept (per class for "
        "multi-label sets); never chosen on test",
    )
    max_iter: int = Field(2000, ge=10, le=1_000_000, description="lbfgs iterations per logistic-regression fit")
    batch_size: int = Field(128, ge=1, le=65536, description="Images per forward pass of the feature extraction")
    device: Device = Field(Device.auto, description="Feature extraction and baselines: cpu, cuda or auto")
    baselines: ProbeBaselineSettings = Field(
        ProbeBaselineSettings(),
        description="The Table II baselines, fine-tuned end to end on the probe's train subsets: the ResNet of "
        "training.model.image_arch from random init and from local ImageNet weights, ConvNeXt-Tiny from random init",
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        return data_fractions(value)

    @field_validator("c_grid")
    @classmethod
    def _c_grid(cls, value: list[float]) -> list[float]:
        if any(c <= 0 for c in value):
            raise ValueError(f"c_grid values must be > 0, got {value}")
        return sorted(set(value))

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"dataset listed twice in {value}")
        return value
