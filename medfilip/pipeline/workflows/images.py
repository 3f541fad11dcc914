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


def corpus_findings_inputs(cfg: Any, vocabulary_files: list[str]) -> dict[str, Any]:
    """The files that decide the drawn findings: the extracted entities, or the MeSH mapping + vocabulary."""
    if cfg.images.corpus.findings == "entities":
        return {"entities": paths.ENTITIES}
    return {"mesh_mapping": str(cfg.quality.mesh_mapping), "vocabulary": list(vocabulary_files)}


def corpus_params(cfg: Any) -> dict[str, Any]:
    """The real images' folder (None when the corpus is rendered: another folder re-runs the rule), the
    rendered PNG cache folder and the findings option of the corpus rule."""
    root = corpus_image_root(cfg)
    return {
        "image_root": None if root is None else str(root),
        "png_dir": paths.RENDERED_PNG_DIR.format(source=cfg.reports.source),
        "entities_arg": f"--entities {paths.ENTITIES}" if cfg.images.corpus.findings == "entities" else "",
    }
