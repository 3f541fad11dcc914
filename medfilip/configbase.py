"""The base of every config section model (kept apart so stage packages can import it without
importing the whole config, and config.py can import their sections)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

# rule -> the keys of a section (dotted, relative to it) whose change re-runs the rule: its params.
# Patterns, the last match wins: "*" = every key; "corpus" = corpus and every key under it; "!key"
# excludes; "{run}" / "{dataset}" stand for the rule's wildcard (runs.{run} re-runs that run only).
# Files the rule reads are inputs, not params: their keys (paths) re-run it through the file's time.
RerunKeys = dict[str, tuple[str, ...]]


def key_matches(pattern: str, path: str) -> bool:
    """Whether a dotted key path is the pattern's key or under it (fnmatch, '*' crosses dots)."""
    return fnmatchcase(path, pattern) or fnmatchcase(path, pattern + ".*")


class _AnyValue(dict):
    """Wildcard values; a wildcard not given matches any value (e.g. every run)."""

    def __missing__(self, key: str) -> str:
        return "*"


def reruns(patterns: tuple[str, ...], path: str, **wildcards: str) -> bool:
    """Whether changing the key at ``path`` re-runs a rule whose section patterns are ``patterns``."""
    values = _AnyValue(wildcards)
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if key_matches(pattern.lstrip("!").format_map(values), path):
            verdict = not negated
    return verdict


class ConfigError(ValueError):
    """A config file that cannot be used; the message names every bad key."""


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable, enums read back as their values."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True, validate_default=True)

    # which keys of this section re-run which rule (see RerunKeys); sections nested in a section are
    # covered by its patterns
    rerun_keys: ClassVar[RerunKeys] = {}


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
