"""What the training rules need from the config (kept here, where pytest reaches it, not in the .smk)."""

from __future__ import annotations

from typing import Any

from medfilip.names import SSM_TARGETS


def run_names(cfg: Any) -> list[str]:
    return list(cfg.training.runs)


def needs_embeddings(cfg: Any, run: str) -> bool:
    return cfg.training.runs[run].target in SSM_TARGETS


# Input and param functions of the train rule (built here so the .smk holds rules only).
def embeddings_input(cfg: Any, embeddings_path: str):
    """wildcards -> the label vectors for runs whose target is an SSM, nothing for the others."""

    def embeddings(wildcards) -> list[str]:
        return [embeddings_path] if needs_embeddings(cfg, wildcards.run) else []

    return embeddings


def calibration_input(cfg: Any, calibration_path: str):
    """wildcards -> the SSM calibration stored beside the label vectors, for runs with an SSM target."""

    def calibration(wildcards) -> list[str]:
        return [calibration_path] if needs_embeddings(cfg, wildcards.run) else []

    return calibration


def embeddings_option(wildcards, input) -> str:
    """The CLI option for the embeddings input, when the run has one."""
    if not input.embeddings:
        return ""
    return f"--embeddings {input.embeddings} --calibration {input.calibration}"


def embedded_variants(cfg: Any) -> list[str]:
    """Label variants whose strings E_sim must embed: those of the runs trained against an SSM
    (written, as the config check ensures), plus the one the SSM heatmap draws. (Embedding the report
    texts of a ConVIRT-style run, which needs no SSM, would cost most of the embedding time for nothing.)"""
    from medfilip.embeddings.heatmap import preferred_variant

    variants = {cfg.training.runs[run].label_variant for run in cfg.training.runs if needs_embeddings(cfg, run)}
    variants.add(preferred_variant(cfg.labels.variants))
    return sorted(variants)
