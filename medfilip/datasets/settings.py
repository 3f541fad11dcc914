"""Config section `datasets:` (imported by medfilip.pipeline.config; keep this module free of heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from medfilip.configbase import RerunKeys, Strict
from medfilip.datasets.catalog import COVID, NIH, RSNA, SIIM, SPECS, VINBIG, DatasetSpec


def _classes_field(spec: DatasetSpec, what: str):
    return Field(
        list(spec.default_classes),
        min_length=1,
        description=f"{what} Allowed: {', '.join(spec.categories)}.",
        json_schema_extra={"uniqueItems": True, "items": {"type": "string", "enum": list(spec.categories)}},
    )


def _train_field(default: int):
    return Field(
        default,
        ge=0,
        le=10_000_000,
        description="Images in the train split (linear probe, segmentation), drawn after validate and test from "
        "the rest, patient-disjoint where the labels give a patient id; more than are left = all of them; 0 = none.",
    )


class DatasetSettings(Strict):
    spec_name: ClassVar[str] = ""

    enabled: bool = Field(True, description="Build/read this dataset and preprocess it into results/images/<name>/.")
    root: Path | None = Field(
        None,
        description="Folder of the real dataset in its published layout; null = build the phantom twin under "
        "results/twins/<name>/ and read that.",
    )
    n_test: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Images in the test split (paper: 1,024; the embedded default takes 512 to fit its 25-minute budget)",
    )
    n_validate: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="Images in the validate split (used to choose thresholds honestly; 0 = none).",
    )

    n_train: int = _train_field(0)

    @field_validator("classes", check_fields=False)
    @classmethod
    def _known_classes(cls, classes: list[str]) -> list[str]:
        spec = SPECS[cls.spec_name]
        unknown = [c for c in classes if c not in spec.categories]
        if unknown:
            raise ValueError(f"unknown {spec.name} class(es) {unknown}; allowed: {list(spec.categories)}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"duplicate class in {classes}")
        if spec.task == "single_label" and len(classes) < 2:
            raise ValueError(f"{spec.name} is single-label: give at least 2 classes")
        return classes


class RsnaSettings(DatasetSettings):
    spec_name: ClassVar[str] = "rsna"
    classes: list[str] = _classes_field(RSNA, "Classes (Target 1 = Lung Opacity -> pneumonia, 0 -> normal).")
    n_train: int = _train_field(1000)


class NihSettings(DatasetSettings):
    spec_name: ClassVar[str] = "nih"
    classes: list[str] = _classes_field(NIH, "ChestX-ray14 Finding Labels evaluated (paper: 10).")


class VinbigSettings(DatasetSettings):
    spec_name: ClassVar[str] = "vinbig"
    classes: list[str] = _classes_field(VINBIG, "VinBigData class_name values evaluated (paper: 8).")
    n_train: int = _train_field(1000)


class SiimSettings(DatasetSettings):
    spec_name: ClassVar[str] = "siim"
    classes: list[str] = _classes_field(SIIM, "Classes (RLE mask given -> pneumothorax, -1 -> normal).")
    n_train: int = _train_field(1000)


class CovidSettings(DatasetSettings):
    spec_name: ClassVar[str] = "covid"
    classes: list[str] = _classes_field(COVID, "COVID-19 Radiography class folders evaluated.")


REAL_ROOT_MARK = "{real_root}"


class DatasetsConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        "dataset_twin": ("render_size", "seed", "{dataset}", "!{dataset}.enabled", "!{dataset}.root"),
        "preprocess_dataset": ("seed", "{dataset}", "!{dataset}.enabled"),
        # workflow/rules/real.smk (the real-image stores read the nih and covid settings)
        "real_store": ("seed", "real_root", "nih", "covid", "!nih.enabled", "!covid.enabled"),
        "real_covid_adult": ("real_root",),
        "real_notes": ("real_root",),
    }

    render_size: int = Field(
        128,
        ge=32,
        le=4096,
        description="Side in pixels of the twin images as written to disk (before preprocessing to images.size).",
    )
    seed: int = Field(0, ge=0, description="Seed of the twins' sampling, rendering and of real datasets' splits.")
    real_root: Path | None = Field(
        None,
        description="Folder of the cxr_real pack of real radiographs (docs/real-images.md): a dataset root "
        "written '{real_root}/<folder>' is read from it, and the real-image rules (workflow/rules/real.smk) "
        "run; null = neither.",
    )
    rsna: RsnaSettings = Field(RsnaSettings(), description="RSNA Pneumonia (DICOM, binary pneumonia vs normal).")
    nih: NihSettings = Field(NihSettings(), description="NIH ChestX-ray14 (PNG, multi-label).")
    vinbig: VinbigSettings = Field(VinbigSettings(), description="VinBigData / VinDr-CXR (DICOM, multi-label).")
    siim: SiimSettings = Field(SiimSettings(), description="SIIM-ACR Pneumothorax (DICOM + RLE masks).")
    covid: CovidSettings = Field(CovidSettings(), description="COVID-19 Radiography Database (PNG class folders).")

    @model_validator(mode="after")
    def _expand_real_root(self) -> DatasetsConfig:
        """``{real_root}`` in a dataset root becomes datasets.real_root (config/real.yaml uses it)."""
        for name in SPECS:
            settings = getattr(self, name)
            if settings.root is not None and REAL_ROOT_MARK in str(settings.root):
                if self.real_root is None:
                    raise ValueError(f"datasets.{name}.root is {settings.root} but datasets.real_root is null")
                root = Path(str(settings.root).replace(REAL_ROOT_MARK, str(self.real_root)))
                object.__setattr__(self, name, settings.model_copy(update={"root": root}))  # frozen model
        return self
