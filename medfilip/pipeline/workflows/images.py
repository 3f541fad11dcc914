"""What the images rules need from the config (imported by workflow/rules/images.smk: keep it light)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfilip.names import ReportSource
from medfilip.pipeline import paths


def corpus_image_root(cfg: Any) -> Path | None:
    """Where real corpus images live: images.corpus.image_root, else for MIMIC-CXR its image root
    (reports.mimic_cxr.image_root, else reports.mimic_cxr.root); None = render phantoms."""
    if cfg.images.corpus.image_root is not None:
        return Path(cfg.images.corpus.image_root)
    if cfg.reports.source == ReportSource.mimic_cxr:
        mimic = cfg.reports.mimic_cxr
        return Path(mimic.image_root or mimic.root)
    return None


def corpus_renders_phantoms(cfg: Any) -> bool:
    return corpus_image_root(cfg) is None


def corpus_findings_inputs(cfg: Any, vocabulary_files: list[str]) -> dict[str, Any]:
    """The files that decide the drawn findings: the extracted entities, or the MeSH mapping + vocabulary."""
    if cfg.images.corpus.findings == "entities":
        return {"entities": paths.ENTITIES}
    return {"mesh_mapping": str(cfg.quality.mesh_mapping), "vocabulary": list(vocabulary_files)}


def corpus_params(cfg: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that change the corpus pixels or index (a change re-runs the rule), and the
    rendered PNG cache folder."""
    rendered = corpus_renders_phantoms(cfg)
    root = corpus_image_root(cfg)
    return {
        "images": settings["images"],
        "phantom": settings["phantom"] if rendered else {},
        "image_root": None if root is None else str(root),
        "png_dir": paths.RENDERED_PNG_DIR.format(source=cfg.reports.source),
        "entities_arg": f"--entities {paths.ENTITIES}" if cfg.images.corpus.findings == "entities" else "",
    }
