"""The one triplet schema every extraction backend produces and every consumer reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfilip.names import Choice


class Polarity(Choice):
    present = "present"
    negated = "negated"
    uncertain = "uncertain"


class Triplet(BaseModel):
    """One finding of a report: (severity, location, category) plus polarity and its evidence sentence.

    ``category`` is the extractor's own words (normalised later to the canonical vocabulary);
    uncertainty is a polarity, never a severity word.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: str | None = Field(None, description="Degree word as written: mild, small, moderate, large, severe ...")
    location: str | None = Field(None, description="Anatomical location: laterality and region, e.g. 'left lower lobe'")
    category: str = Field(..., min_length=1, description="The finding, e.g. 'pleural effusion'")
    polarity: Polarity = Field(Polarity.present, description="present, negated or uncertain")
    sentence: str = Field("", description="The sentence of the report that states it")

    @field_validator("severity", "location", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = " ".join(v.split()).lower()
            return v or None
        return v

    @field_validator("category", mode="before")
    @classmethod
    def _normalise_space(cls, v: Any) -> Any:
        return " ".join(v.split()).lower() if isinstance(v, str) else v


def keep_categorised(raw: Iterable[dict[str, Any]]) -> tuple[list[Triplet], int]:
    """Validate raw triplet dicts, dropping those without a category (paper §III-A).

    Returns the triplets and how many were dropped. Other invalid fields raise.
    """
    kept: list[Triplet] = []
    dropped = 0
    for item in raw:
        category = item.get("category")
        if category is None or not str(category).strip():
            dropped += 1
            continue
        kept.append(Triplet.model_validate(item))
    return kept, dropped


TRIPLET_TYPE = pa.struct(
    [
        ("severity", pa.string()),
        ("location", pa.string()),
        ("category", pa.string()),
        ("polarity", pa.string()),
        ("sentence", pa.string()),
    ]
)


def triplet_rows(triplets: Iterable[Triplet]) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json") for t in triplets]
