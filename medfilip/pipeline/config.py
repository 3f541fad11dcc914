"""Typed pipeline configuration.

The same pydantic models back the CLI and the Snakemake workflow, so a wrong
value gives one message everywhere: the key path, the value and what is allowed.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from medfilip.configbase import ConfigError, reruns
from medfilip.configbase import Strict as _Strict
from medfilip.datasets.settings import DatasetsConfig
from medfilip.embeddings.settings import EmbeddingsConfig
from medfilip.evaluation.settings import EvaluationConfig
from medfilip.extraction.settings import ExtractionConfig, QualityConfig
from medfilip.images.settings import ImagesConfig
from medfilip.knowledge.settings import KnowledgeConfig
from medfilip.labels.settings import LabelsConfig
from medfilip.phantom.settings import PhantomConfig
from medfilip.reports.settings import ReportsConfig, shard_names
from medfilip.training.settings import TrainingConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


class PipelineConfig(_Strict):
    """MedFILIP pipeline configuration (config/README.md explains every key)."""

    reports: ReportsConfig = Field(ReportsConfig(), description="Which report corpus to read and how to shard it")
    extraction: ExtractionConfig = Field(
        ExtractionConfig(), description="How reports become (severity, location, category) triplets"
    )
    quality: QualityConfig = Field(
        QualityConfig(), description="Scoring of the extraction against the IU-Xray MeSH annotations"
    )
    knowledge: KnowledgeConfig = Field(
        KnowledgeConfig(),
        description="The image-specific knowledge dictionary (IKI), visual explanations per category",
    )
    labels: LabelsConfig = Field(
        LabelsConfig(), description="Structured labels built from entities (template, ablation variants, negations)"
    )
    embeddings: EmbeddingsConfig = Field(
        EmbeddingsConfig(), description="E_sim, the text model that embeds each unique label once for the SSM targets"
    )
    phantom: PhantomConfig = Field(
        PhantomConfig(), description="The phantom chest-radiograph simulator (anatomy and finding appearance)"
    )
    images: ImagesConfig = Field(
        ImagesConfig(), description="Image preprocessing (uint8 array shards) and the rendered pretraining corpus"
    )
    datasets: DatasetsConfig = Field(
        DatasetsConfig(),
        description="Downstream evaluation datasets, phantom twins or real folders, and their readers",
    )
    training: TrainingConfig = Field(
        TrainingConfig(),
        description="Pretraining of the dual encoder (model, loss, optimiser and the runs to train)",
    )
    evaluation: EvaluationConfig = Field(
        EvaluationConfig(), description="Zero-shot evaluation of sets, class texts, thresholds and the table"
    )

    @model_validator(mode="after")
    def _runs_use_written_labels(self) -> PipelineConfig:
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


def rerun_patterns(rule: str) -> tuple[str, ...]:
    """The key patterns (full dotted paths) whose change re-runs ``rule``: every section's ``rerun_keys``."""
    patterns: list[str] = []
    for name, field in PipelineConfig.model_fields.items():
        for pattern in field.annotation.rerun_keys.get(rule, ()):
            bang = "!" if pattern.startswith("!") else ""
            patterns.append(f"{bang}{field.alias or name}.{pattern.lstrip('!')}")
    return tuple(patterns)


def rerun_rules() -> set[str]:
    """Every rule some section declares keys for."""
    return {rule for field in PipelineConfig.model_fields.values() for rule in field.annotation.rerun_keys}


def key_reruns(rule: str, path: str, **wildcards: str) -> bool:
    """Whether changing the config key at ``path`` (dotted, e.g. training.runs.medfilip.loss) re-runs ``rule``."""
    return reruns(rerun_patterns(rule), path, **wildcards)


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """(dotted key path, value) of every value that is not a non-empty mapping (a list is one value)."""
    if isinstance(node, dict) and node:
        return [leaf for key, sub in node.items() for leaf in _leaves(sub, (*path, str(key)))]
    return [(".".join(path), node)]


def rule_settings(settings: dict[str, Any], rule: str, **wildcards: str) -> dict[str, Any]:
    """The values of the effective config (``settings``, plain data) whose keys re-run ``rule``, by dotted
    key path: exactly the keys its sections' ``rerun_keys`` declare (with ``wildcards``, e.g. run="a",
    filling ``{run}``). The rule's ``settings`` param, so a change of a declared key re-runs it, and
    nothing else does."""
    patterns = rerun_patterns(rule)
    return {path: value for path, value in _leaves(settings) if reruns(patterns, path, **wildcards)}


def settings_param(settings: dict[str, Any], rule: str):
    """The ``settings`` param of ``rule``: :func:`rule_settings`, or for a rule whose patterns name a
    wildcard (``runs.{run}``), a function of the job's wildcards."""
    names = sorted({f for p in rerun_patterns(rule) for _, f, _, _ in string.Formatter().parse(p) if f})
    if not names:
        return rule_settings(settings, rule)

    def of_job(wildcards) -> dict[str, Any]:
        return rule_settings(settings, rule, **{n: getattr(wildcards, n) for n in names})

    return of_job


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
