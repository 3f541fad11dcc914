"""Config section `images:` (imported by medfilip.pipeline.config; keep this module free of heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from medfilip.configbase import RerunKeys, Strict


class CorpusImagesConfig(Strict):
    findings: Literal["mesh", "entities"] = Field(
        "mesh",
        description=(
            "What a rendered corpus image shows: mesh = the report's human MeSH annotations (IU-Xray), "
            "entities = the extracted entities with polarity present"
        ),
    )
    second_view: bool = Field(
        False, description="Also render a lateral view for reports that list one (same findings, view LATERAL)"
    )
    image_root: Path | None = Field(
        None,
        description=(
            "Folder of real corpus images (IU-Xray PNGs, or MIMIC-CXR-JPG root with files/); "
            "null = render phantoms (IU-Xray) or reports.mimic_cxr.image_root / root (MIMIC-CXR)"
        ),
    )
    seed: int = Field(0, ge=0, description="Mixed into each image's seed (a stable hash of its image id)")


class ImagesConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        "corpus_images_part": ("*",),
        "preprocess_dataset": ("size", "shard_size"),
        "real_store": ("size", "shard_size"),  # the real-image stores (workflow/rules/real.smk)
    }

    size: int = Field(128, ge=32, le=2048, description="Side of the square uint8 images in every store (paper: 448)")
    shard_size: int = Field(2048, ge=1, le=1_000_000, description="Images per memory-mapped array shard")
    corpus: CorpusImagesConfig = Field(
        CorpusImagesConfig(), description="The pretraining corpus images: rendered phantoms or real files"
    )
