"""The base of every config section model (kept apart so stage packages can import it without
importing the whole config, and config.py can import their sections)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A config file that cannot be used; the message names every bad key."""


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable, enums read back as their values."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True, validate_default=True)


# json_schema_extra of a list whose validator refuses repeated items (the generated schema says so too)
UNIQUE_ITEMS = {"uniqueItems": True}


def data_fractions(value: list[float]) -> list[float]:
    """A list of training-data fractions (linear probe, segmentation): each in (0, 1], none twice; sorted."""
    bad = [f for f in value if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"fractions must be in (0, 1], got {bad}")
    if len(set(value)) != len(value):
        raise ValueError(f"a fraction is listed twice: {value}")
    return sorted(value)
