"""Config section ``labels:`` (imported by medfilip.pipeline.config; keep this module free of heavy imports)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from medfilip.configbase import UNIQUE_ITEMS, RerunKeys, Strict
from medfilip.names import LabelVariant, values

VARIANT_NAMES = values(LabelVariant)


class LabelsConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        "structured_labels": ("*",),
    }

    variants: list[LabelVariant] = Field(
        list(VARIANT_NAMES),
        min_length=1,
        description="Label variants written to labels.parquet (training runs pick one each): category, triplet, "
        "triplet_explanation (the paper's template), report (the report text)",
        json_schema_extra=UNIQUE_ITEMS,
    )
    negated: Literal["drop", "keep"] = Field(
        "drop", description="Negated findings: drop them (as the reference code does) or keep them as 'no {category}'"
    )
    uncertain: Literal["drop", "present"] = Field(
        "present", description="Uncertain findings ('may represent atelectasis'): drop them or count them as present"
    )
    severity_scale: Literal["as_written", "three_level"] = Field(
        "as_written",
        description="Severity words in the labels: as_written (small, minimal, large ... as extracted) or "
        "three_level (mild / moderate / severe, the scale of resources/vocabulary/severity_scale.yaml that the "
        "evaluation's severity set uses); an unstated severity stays unstated either way",
    )
    omit_default_location: bool = Field(
        True,
        description="Leave out a location that is only the category's default (pleural effusion at 'pleura'), "
        "keeping lateralities and lobes",
    )

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"variants listed twice: {sorted({v for v in value if value.count(v) > 1})}")
        return value
