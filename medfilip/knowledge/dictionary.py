"""Load and validate the image-specific knowledge dictionary (IKI) in ``resources/knowledge/``.

Each category has a visual explanation (what it looks like on a chest radiograph), one line of
medical context, and synonyms. The explanation is what the structured labels append after
"..., where {category} is"; synonyms let readers of other datasets' class names
("Pleural_Thickening", "Infiltration", "No Finding") find the canonical category.

Validation reports every problem at once, each naming the file and the category.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medfilip.names import CategoryNames, normalise_name

log = logging.getLogger(__name__)


class KnowledgeError(ValueError):
    """The dictionary is missing, unreadable or invalid; the message names the file and the category."""


def _clean_text(text: str) -> str:
    return " ".join(text.split())


class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    explanation: str = Field(description="What the finding looks like on a frontal chest radiograph")
    context: str = Field(description="One line of medical context")
    synonyms: list[str] = Field(default_factory=list, description="Report phrasings and dataset class names")

    @field_validator("explanation", "context")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = _clean_text(value)
        if not value:
            raise ValueError("is empty")
        return value

    @field_validator("synonyms")
    @classmethod
    def _synonyms_not_blank(cls, values: list[str]) -> list[str]:
        cleaned = [_clean_text(v) for v in values]
        if any(not normalise_name(v) for v in cleaned):
            raise ValueError("has an empty synonym")
        return cleaned


@dataclass(frozen=True)
class KnowledgeEntry:
    category: str
    explanation: str
    context: str
    synonyms: tuple[str, ...]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _describe(err: dict) -> str:
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {field!r} (allowed: explanation, context, synonyms)"
    if err["type"] == "missing":
        return f"field {field!r} is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"field {field!r} {msg}" if msg in ("is empty", "has an empty synonym") else f"field {field!r}: {msg}"


class KnowledgeDictionary:
    """The validated dictionary; build with :func:`load_knowledge`."""

    def __init__(self, path: Path, entries: dict[str, KnowledgeEntry], version: str):
        self.path = path
        self.version = version
        self._entries = entries
        self.names = CategoryNames({name: entry.synonyms for name, entry in entries.items()})

    @property
    def categories(self) -> list[str]:
        """Canonical category names, in file order."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def resolve(self, name: str) -> str | None:
        """The canonical category for a category name or synonym (any case, ``_ / -`` as spaces), else None."""
        return self.names.resolve(name)

    def entry(self, category: str) -> KnowledgeEntry:
        """The entry of a category (its canonical name or any synonym); KeyError names close matches."""
        canonical = self.resolve(category)
        if canonical is None:
            raise KeyError(f"{self.path}: no entry for category {category!r}{self.names.did_you_mean(category)}")
        return self._entries[canonical]

    def explanation(self, category: str) -> str:
        return self.entry(category).explanation

    def synonym_count(self) -> int:
        return sum(len(e.synonyms) for e in self._entries.values())


def load_knowledge(path: str | Path, required: Iterable[str] = ()) -> KnowledgeDictionary:
    """Load and validate the dictionary at ``path``.

    ``required``: category names that must have an entry (the vocabulary's canonical categories).
    Raises :class:`KnowledgeError` listing every problem found, each naming the file and the category.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: knowledge dictionary not found (config key knowledge.path)") from None
    except IsADirectoryError:
        raise KnowledgeError(f"{path}: is a folder, expected the knowledge dictionary YAML file") from None
    version = hashlib.sha256(raw).hexdigest()[:16]
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise KnowledgeError(f"{path}: not UTF-8 text ({err})") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise KnowledgeError(f"{path}: not valid YAML{where}: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise KnowledgeError(f"{path}: not valid YAML: {err}") from None

    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
        raise KnowledgeError(
            f"{path}: expected a top-level mapping 'categories: {{<category>: {{explanation, context, synonyms}}}}'"
        )
    extra = sorted(str(k) for k in data if k != "categories")
    problems = [f"{path}: unknown top-level key {k!r} (only 'categories')" for k in extra]

    entries: dict[str, KnowledgeEntry] = {}
    owner: dict[str, str] = {}  # normalised name or synonym -> the category it belongs to
    for name, spec in data["categories"].items():
        if not isinstance(name, str) or not normalise_name(name):
            problems.append(f"{path}: category name {name!r} must be a non-empty string")
            continue
        key = normalise_name(name)
        if key in owner:
            problems.append(f"{path}: category {name!r} is the same name as category {owner[key]!r}")
            continue
        owner[key] = name
        if not isinstance(spec, dict):
            problems.append(f"{path}: category {name!r}: expected a mapping with explanation, context, synonyms")
            continue
        try:
            model = _EntryModel.model_validate(spec)
        except ValidationError as err:
            problems.extend(f"{path}: category {name!r}: {_describe(e)}" for e in err.errors())
            continue
        entries[name] = KnowledgeEntry(name, model.explanation, model.context, tuple(model.synonyms))

    # Synonyms are checked once every category name is known, so a synonym that names a later
    # category is caught too.
    category_keys = {normalise_name(n): n for n in entries}
    for name, entry in entries.items():
        for synonym in entry.synonyms:
            key = normalise_name(synonym)
            if key == normalise_name(name):
                problems.append(
                    f"{path}: category {name!r}: synonym {synonym!r} is the category's own name "
                    f"(matching already ignores case, '_', '/', '-')"
                )
            elif key in category_keys:
                problems.append(
                    f"{path}: category {name!r}: synonym {synonym!r} is the name of category {category_keys[key]!r}"
                )
            elif key in owner and owner[key] != name:
                problems.append(
                    f"{path}: category {name!r}: synonym {synonym!r} is also a synonym of category {owner[key]!r}"
                )
            elif key in owner:
                problems.append(f"{path}: category {name!r}: synonym {synonym!r} is listed twice")
            else:
                owner[key] = name

    for category in required:
        if category in data["categories"]:
            continue  # valid, or invalid and already reported
        spelled = category_keys.get(normalise_name(category))
        if spelled is not None:
            problems.append(f"{path}: category {spelled!r} must be spelled {category!r} as in the vocabulary")
        else:
            problems.append(f"{path}: no entry for category {category!r} (the vocabulary can emit it)")

    if problems:
        raise KnowledgeError(
            "\n".join(problems)
            if len(problems) == 1
            else f"{path}: {len(problems)} problems\n" + "\n".join(f"  {p}" for p in problems)
        )
    log.debug("%s: %d categories, version %s", path, len(entries), version)
    return KnowledgeDictionary(path, entries, version)
