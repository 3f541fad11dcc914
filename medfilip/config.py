"""Typed pipeline configuration.

The same pydantic models back the CLI and the Snakemake workflow, so a wrong
value gives one message everywhere: the key path, the value and what is allowed.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class ReportSource(str, Enum):
    iu_xray = "iu_xray"
    mimic_cxr = "mimic_cxr"


class SplitFractions(_Strict):
    train: float = Field(0.8, ge=0.0, le=1.0)
    validate_: float = Field(0.1, ge=0.0, le=1.0, alias="validate")
    test: float = Field(0.1, ge=0.0, le=1.0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitFractions":
        total = self.train + self.validate_ + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validate + test must sum to 1, got {total:g}")
        return self


class IUXrayConfig(_Strict):
    path: Path | None = Field(
        None,
        description="Folder of OpenI XML files or a .tgz of them; null = the tarball shipped in torchxrayvision",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the patient-level train/validate/test split")
    split_fractions: SplitFractions = SplitFractions()


class MimicCxrConfig(_Strict):
    root: Path | None = Field(None, description="Folder holding files/pXX/pNNNNNNNN/sNNNNNNNN.txt")
    metadata_csv: Path | None = Field(None, description="mimic-cxr-2.0.0-metadata.csv(.gz)")
    split_csv: Path | None = Field(None, description="mimic-cxr-2.0.0-split.csv(.gz)")
    image_root: Path | None = Field(None, description="MIMIC-CXR-JPG root with files/; null = root")


class ReportsConfig(_Strict):
    source: ReportSource = ReportSource.iu_xray
    n_shards: int = Field(4, ge=1, le=100_000, description="Number of Parquet shards; a report always lands in the same one")
    limit: int | None = Field(None, ge=1, description="Keep only the first N reports (by id); null = all")
    iu_xray: IUXrayConfig = IUXrayConfig()
    mimic_cxr: MimicCxrConfig = MimicCxrConfig()

    @model_validator(mode="after")
    def _mimic_paths(self) -> "ReportsConfig":
        if self.source == ReportSource.mimic_cxr.value:
            missing = [k for k in ("root", "split_csv") if getattr(self.mimic_cxr, k) is None]
            if missing:
                raise ValueError(
                    "source is mimic_cxr but reports.mimic_cxr." + " and ".join(missing) + " not set"
                )
        return self


class RulesBackendConfig(_Strict):
    vocabulary_dir: Path = Field(Path("resources/vocabulary"), description="Folder of the rules vocabularies (YAML)")


class ExtractionConfig(_Strict):
    backend: Literal["rules"] = Field("rules", description="Extraction backend")
    flush_every: int = Field(200, ge=1, le=1_000_000, description="Reports per cache write (what a kill can lose)")
    rules: RulesBackendConfig = RulesBackendConfig()


class QualityConfig(_Strict):
    mesh_mapping: Path = Field(
        Path("resources/mesh/mesh_to_category.yaml"), description="MeSH term -> canonical category mapping"
    )


class PipelineConfig(_Strict):
    reports: ReportsConfig = ReportsConfig()
    extraction: ExtractionConfig = ExtractionConfig()
    quality: QualityConfig = QualityConfig()

    def shard_names(self) -> list[str]:
        return shard_names(self.reports.n_shards)


def shard_names(n_shards: int) -> list[str]:
    width = max(3, len(str(n_shards - 1)))
    return [f"{i:0{width}d}" for i in range(n_shards)]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({err.error_count()} error{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if p != "validate_") or "<root>"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config/README.md)"
        lines.append(f"  {path}{shown}: {msg}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any] | None, source: str = "<config>") -> PipelineConfig:
    """Validate a config mapping; raises ConfigError naming each bad key path and value."""
    try:
        return PipelineConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None) -> PipelineConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return validate_config(data, str(path))

