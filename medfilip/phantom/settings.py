"""Config section `phantom:` (imported by medfilip.pipeline.config; keep this module free of heavy imports).

Appearance knobs of the phantom chest-radiograph simulator only: the image size is set by the
stage that renders (``images.size``, the dataset twins), never here.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medfilip.configbase import RerunKeys, Strict


class PhantomConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        "phantom_gallery": ("*",),
        "dataset_twin": ("*",),
        "corpus_images_part": ("*",),  # when the corpus renders phantoms
        "real_gap": ("*",),  # the phantom anatomy set against the real lung masks
    }

    noise: float = Field(
        0.012,
        ge=0.0,
        le=0.1,
        description="Standard deviation of the per-pixel quantum noise (fraction of full scale, 0 = none)",
    )
    exposure_variation: float = Field(
        0.08, ge=0.0, le=0.5, description="Per-patient spread of exposure (relative change of overall brightness)"
    )
    contrast_variation: float = Field(
        0.08, ge=0.0, le=0.5, description="Per-patient spread of contrast (relative change of the attenuation gain)"
    )
    rotation_degrees: float = Field(
        2.5, ge=0.0, le=15.0, description="Largest in-plane patient rotation in degrees (uniform in +/- this)"
    )
    body_size_variation: float = Field(
        0.05, ge=0.0, le=0.3, description="Per-patient spread of body and thorax width (relative)"
    )
    heart_size_variation: float = Field(
        0.05, ge=0.0, le=0.3, description="Per-patient spread of heart width (relative; the normal CTR stays below 0.5)"
    )
    lung_height_variation: float = Field(
        0.03, ge=0.0, le=0.1, description="Per-patient spread of the diaphragm height (fraction of the image height)"
    )
    air_bronchograms: bool = Field(True, description="Draw air bronchograms inside dense consolidations")
