"""Load and compile the rules vocabularies in ``resources/vocabulary/``.

The vocabulary is data, not code: categories with their synonym patterns,
severity and location lexicons, and negation/uncertainty triggers. Its
content hash is the rules backend's version, so editing any file re-runs
extraction and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from medfilip.io import sha256_files

FILES = ("categories.yaml", "modifiers.yaml", "triggers.yaml")


class VocabularyError(ValueError):
    pass


def _alternation(words: list[str]) -> str:
    # Longest first so "moderate-sized" wins over "moderate".
    return "|".join(sorted(set(words), key=lambda w: (-len(w), w)))


def _bounded(pattern: str) -> str:
    return rf"(?<![\w-])(?:{pattern})(?![\w-])"


@dataclass(frozen=True)
class Category:
    name: str
    group: str | None
    location: str | None
    regex: re.Pattern
    keeps: frozenset[str] = frozenset()  # categories whose mentions inside this one's span also count


@dataclass(frozen=True)
class Severity:
    canonical: str
    level: int


class Vocabulary:
    """Compiled vocabularies; build with :meth:`load`."""

    def __init__(self, root: Path, categories: dict, modifiers: dict, triggers: dict):
        self.root = root
        self._raw_categories = categories
        self._modifiers = modifiers
        self._triggers = triggers
        self.version = sha256_files([root / f for f in FILES])[:16]

        sev = modifiers.get("severity") or {}
        self.severity_of: dict[str, Severity] = {}
        for canonical, spec in sev.items():
            for w in spec["words"]:
                self.severity_of[w.lower()] = Severity(canonical, int(spec["level"]))
        self.severity_levels = {canonical: int(spec["level"]) for canonical, spec in sev.items()}
        self.laterality_of = {w.lower(): canon for canon, ws in (modifiers.get("laterality") or {}).items() for w in ws}
        self.region_patterns = dict((modifiers.get("regions") or {}).items())
        self.compounds = {k.lower(): v for k, v in (modifiers.get("compounds") or {}).items()}
        self.location_regions = {k: frozenset(v) for k, v in (modifiers.get("location_regions") or {}).items()}
        self.location_rewrites = {
            " ".join(k.lower().split()): v for k, v in (modifiers.get("location_rewrites") or {}).items()
        }
        self.implied_regions = frozenset(modifiers.get("implied_regions") or ())
        self.unpaired_regions = frozenset(modifiers.get("unpaired_regions") or ())
        named = {r for rs in self.location_regions.values() for r in rs} | self.implied_regions | self.unpaired_regions
        unknown = sorted(named - set(self.region_patterns))
        if unknown:
            raise VocabularyError(f"{root / 'modifiers.yaml'}: location_regions names unknown regions {unknown}")

        sev_alt = _alternation([re.escape(w) for w in self.severity_of])
        side_alt = _alternation([re.escape(w) for w in self.laterality_of])
        self.categories: list[Category] = []
        seen: set[str] = set()
        for i, entry in enumerate(categories.get("categories") or []):
            where = f"{root / 'categories.yaml'}: categories[{i}]"
            name = entry.get("name")
            if not name or not entry.get("patterns"):
                raise VocabularyError(f"{where}: needs a name and at least one pattern")
            bad = [p for p in entry["patterns"] if not isinstance(p, str)]
            if bad:
                raise VocabularyError(
                    f"{where} ({name}): pattern {bad[0]!r} is not a string; quote it in single quotes"
                )
            if name in seen:
                raise VocabularyError(f"{where}: duplicate category {name!r}")
            seen.add(name)
            pats = [
                p.replace("{sev}", f"(?:{sev_alt})").replace("{side}", f"(?:{side_alt})") for p in entry["patterns"]
            ]
            try:
                regex = re.compile(_bounded("|".join(f"(?:{p})" for p in pats)))
            except re.error as err:
                raise VocabularyError(f"{where} ({name}): bad pattern: {err}") from None
            keeps = frozenset(entry.get("keeps") or ())
            self.categories.append(Category(name, entry.get("group"), entry.get("location"), regex, keeps))
        self.category_names = [c.name for c in self.categories]
        for c in self.categories:
            unknown = c.keeps - set(self.category_names)
            if unknown:
                raise VocabularyError(
                    f"{root / 'categories.yaml'}: {c.name}: keeps unknown categories {sorted(unknown)}"
                )
        self.by_name = {c.name: c for c in self.categories}

        self.severity_regex = re.compile(_bounded(sev_alt))
        self.laterality_regex = re.compile(_bounded(side_alt))
        region_alt = []
        self._region_regexes = []
        for canon, pats in self.region_patterns.items():
            rx = re.compile(_bounded("|".join(pats)))
            self._region_regexes.append((canon, rx))
            region_alt.extend(pats)
        self.compound_regex = (
            re.compile(_bounded(_alternation([re.escape(w) for w in self.compounds]))) if self.compounds else None
        )

        def compile_list(key: str) -> re.Pattern | None:
            items = triggers.get(key) or []
            if not items:
                return None
            try:
                return re.compile(_bounded("|".join(f"(?:{p})" for p in sorted(items, key=len, reverse=True))))
            except re.error as err:
                raise VocabularyError(f"{root / 'triggers.yaml'}: {key}: bad pattern: {err}") from None

        self.trigger_regexes = {
            key: compile_list(key)
            for key in (
                "pseudo",
                "pre_negation",
                "post_negation",
                "pre_uncertain",
                "post_uncertain",
                "alternatives",
                "clause_breaks",
            )
        }

    @classmethod
    def load(cls, root: str | Path) -> Vocabulary:
        root = Path(root)
        data = []
        for f in FILES:
            path = root / f
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except FileNotFoundError:
                raise VocabularyError(f"{path}: vocabulary file not found") from None
            except yaml.YAMLError as err:
                raise VocabularyError(f"{path}: not valid YAML: {err}") from None
            data.append(loaded)
        return cls(root, *data)

    def region_of(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, canonical region) of every region word in ``text``."""
        found = []
        for canon, rx in self._region_regexes:
            found.extend((m.start(), m.end(), canon) for m in rx.finditer(text))
        return found

    def normalise(self, raw: str | None) -> str | None:
        """Canonical category of a raw category string, or None when the vocabulary has no name for it."""
        if not raw:
            return None
        text = " ".join(raw.lower().split())
        if text in self.by_name:  # a canonical name is its own category (a closed-list LLM answers these),
            return text  # even where the name is not among its patterns ("enlarged cardiomediastinum")
        best: tuple[int, int, str] | None = None
        for order, cat in enumerate(self.categories):
            if cat.regex.fullmatch(text):
                return cat.name
            for m in cat.regex.finditer(text):
                cand = (m.end() - m.start(), -order, cat.name)
                if best is None or cand > best:
                    best = cand
        return best[2] if best else None

    def _split_location(self, location: str) -> tuple[str | None, str | None]:
        loc = " ".join(location.lower().split())
        for side in sorted(set(self.laterality_of.values()), key=len, reverse=True):
            if loc == side or loc.startswith(side + " "):
                return side, loc[len(side) :].strip() or None
        return None, loc

    def tidy_location(self, location: str | None, category: str | None) -> str | None:
        """A location that can be right for ``category`` (canonical): ``location_rewrites`` applied,
        and a region of another organ than the category's default replaced by the default (see
        ``location_regions`` in modifiers.yaml). Free-text regions an LLM gives are kept."""
        if not location:
            return location
        loc = " ".join(location.lower().split())
        laterality, region = self._split_location(self.location_rewrites.get(loc, loc))
        entry = self.by_name.get(category) if category else None
        default = entry.location if entry is not None else None
        allowed = self.location_regions.get(default)
        if region and allowed is not None and region in self.region_patterns and region not in allowed:
            region = default
        tidy = " ".join(p for p in (laterality, region) if p) or None
        return self.location_rewrites.get(tidy, tidy) if tidy else None

    def label_location(self, location: str | None, category: str | None) -> str | None:
        """How a (tidy) location reads in a label beside ``category``: a region the category already
        says is left out, laterality kept ("bilateral pleura" + "pleural effusion" -> "bilateral");
        an organ without sides loses its laterality ("left heart" + "cardiomegaly" -> "heart")."""
        if not location:
            return location
        laterality, region = self._split_location(location)
        entry = self.by_name.get(category) if category else None
        default = entry.location if entry is not None else None
        if region is not None and region == default and default in self.unpaired_regions:
            laterality = None
        if region and (
            (region == default and default in self.implied_regions)
            or (category and " " not in region and any(w.startswith(region) for w in category.split()))
        ):
            region = None
        if laterality and not region and default in self.unpaired_regions:
            laterality = None
        return " ".join(p for p in (laterality, region) if p) or None

    @cached_property
    def groups(self) -> dict[str, str | None]:
        return {c.name: c.group for c in self.categories}


def configured_vocabulary(cfg) -> Vocabulary:
    """The canonical vocabulary of a PipelineConfig (``extraction.rules.vocabulary_dir``): every stage
    that names categories uses it, whatever the extraction backend."""
    return Vocabulary.load(cfg.extraction.rules.vocabulary_dir)


# -- one severity scale (resources/vocabulary/severity_scale.yaml) ---------------------------------
SEVERITY_SCALE_FILE = "severity_scale.yaml"
SEVERITY_SCALE = ("mild", "moderate", "severe")


def load_severity_scale(root: str | Path = "resources/vocabulary") -> dict[str, str]:
    """Severity word -> mild | moderate | severe: every canonical severity of ``modifiers.yaml`` and
    each of its words ("trace" -> minimal -> mild, "extensive" -> severe -> severe), from
    ``severity_scale.yaml`` (which must name every canonical severity); lower case."""
    root = Path(root)
    path = root / SEVERITY_SCALE_FILE
    try:
        scale = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("scale") or {}
        modifiers = yaml.safe_load((root / "modifiers.yaml").read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise VocabularyError(f"{err.filename}: vocabulary file not found") from None
    except yaml.YAMLError as err:
        raise VocabularyError(f"{path}: not valid YAML: {err}") from None
    bad = {k: v for k, v in scale.items() if v not in SEVERITY_SCALE}
    if bad:
        raise VocabularyError(f"{path}: scale values must be one of {SEVERITY_SCALE}, got {bad}")
    severities = modifiers.get("severity") or {}
    missing = sorted(set(severities) - set(scale))
    if missing:
        raise VocabularyError(f"{path}: severities of modifiers.yaml with no place on the scale: {missing}")
    out = {w: w for w in SEVERITY_SCALE}
    for canonical, spec in severities.items():
        out[str(canonical).lower()] = scale[canonical]
        for word in spec.get("words") or ():
            out[" ".join(str(word).lower().split())] = scale[canonical]
    return out
