"""The base of every config section model (kept apart so stage packages can import it without
importing the whole config, and config.py can import their sections)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable, enums read back as their values."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True, validate_default=True)
