"""Config section `reports:` (imported by medfilip.pipeline.config; keep this module free of heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from medfilip.configbase import RerunKeys, Strict
from medfilip.names import ReportSource


class SplitFractions(Strict):
    train: float = Field(0.8, ge=0.0, le=1.0, description="Fraction of patients in the train split")
    validate_: float = Field(
        0.1, ge=0.0, le=1.0, alias="validate", description="Fraction of patients in the validate split"
    )
    test: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of patients in the test split")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validate_ + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validate + test must sum to 1, got {total:g}")
        return self


class IUXrayConfig(Strict):
    path: Path | None = Field(
        None,
        description="Folder of OpenI XML files or a .tgz of them; null = the tarball shipped in torchxrayvision",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the patient-level train/validate/test split")
    split_fractions: SplitFractions = Field(
        SplitFractions(), description="Fractions of patients per split; they must sum to 1"
    )


class MimicCxrConfig(Strict):
    root: Path | None = Field(None, description="Folder holding files/pXX/pNNNNNNNN/sNNNNNNNN.txt")
    metadata_csv: Path | None = Field(None, description="mimic-cxr-2.0.0-metadata.csv(.gz)")
    split_csv: Path | None = Field(None, description="mimic-cxr-2.0.0-split.csv(.gz)")
    image_root: Path | None = Field(None, description="MIMIC-CXR-JPG root with files/; null = root")


class ReportsConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        "report_shards": ("*",),
        "corpus_images": ("n_shards",),  # links one part per shard
    }

    source: ReportSource = Field(ReportSource.iu_xray, description="Report corpus to read")
    n_shards: int = Field(
        4, ge=1, le=100_000, description="Number of Parquet shards; a report always lands in the same one"
    )
    limit: int | None = Field(None, ge=1, description="Keep only the first N reports (by id); null = all")
    iu_xray: IUXrayConfig = Field(IUXrayConfig(), description="IU-Xray / OpenI reports (used when source is iu_xray)")
    mimic_cxr: MimicCxrConfig = Field(MimicCxrConfig(), description="MIMIC-CXR reports (used when source is mimic_cxr)")

    # the schema states _mimic_paths too: source mimic_cxr needs mimic_cxr.root and .split_csv
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"source": {"const": "mimic_cxr"}}, "required": ["source"]},
            "then": {
                "properties": {
                    "mimic_cxr": {
                        "required": ["root", "split_csv"],
                        "properties": {"root": {"type": "string"}, "split_csv": {"type": "string"}},
                    }
                }
            },
        }
    )

    @model_validator(mode="after")
    def _mimic_paths(self) -> ReportsConfig:
        if self.source == ReportSource.mimic_cxr.value:
            missing = [k for k in ("root", "split_csv") if getattr(self.mimic_cxr, k) is None]
            if missing:
                raise ValueError("source is mimic_cxr but reports.mimic_cxr." + " and ".join(missing) + " not set")
        return self


def shard_names(n_shards: int) -> list[str]:
    width = max(3, len(str(n_shards - 1)))
    return [f"{i:0{width}d}" for i in range(n_shards)]
