"""The prompt file (``extraction.openai.prompt``, e.g. ``resources/prompts/triplets.yaml``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from medfilip.configbase import ConfigError
from medfilip.extraction.rules import split_sentences
from medfilip.extraction.vocabulary import Vocabulary, VocabularyError

REPORT_PLACEHOLDER = "{report}"
CATEGORIES_PLACEHOLDER = "{categories}"
PROMPT_KEYS = ("version", "system", "user", "categories", "reply")
REPLY_FORMS = ("triplets", "indexed")

__all__ = [
    "CATEGORIES_PLACEHOLDER",
    "PROMPT_KEYS",
    "REPLY_FORMS",
    "REPORT_PLACEHOLDER",
    "Prompt",
    "load_prompt",
    "number_sentences",
    "prompt_categories",
    "report_sentences",
]


def report_sentences(report_text: str) -> list[str]:
    """The sentences of a report as an ``indexed`` prompt numbers them (the rules backend's splitter)."""
    return split_sentences(report_text)


def number_sentences(sentences: list[str]) -> str:
    """``1. First sentence.`` one a line: what ``{report}`` becomes in an ``indexed`` prompt."""
    return "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1))


@dataclass(frozen=True)
class Prompt:
    """A prompt file: ``version``, ``system`` text and ``user`` template (with ``{report}``).

    ``categories: vocabulary`` (optional) makes the categories a closed list: the canonical names of
    the configured vocabulary become an enum in the reply's JSON schema and replace ``{categories}``
    in the system text. Without it the category is free text, normalised later (the paper's form).
    """

    path: Path
    version: str
    system: str
    user: str
    sha256: str  # of the file's bytes: any edit changes the backend version
    closed_categories: bool = False
    reply: str = "triplets"

    @property
    def indexed(self) -> bool:
        return self.reply == "indexed"

    def messages(self, report_text: str, categories: list[str] | None = None) -> list[dict[str, str]]:
        system = self.system.strip()
        if categories:
            system = system.replace(CATEGORIES_PLACEHOLDER, ", ".join(categories))
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": self.user.replace(REPORT_PLACEHOLDER, self.report_block(report_text)).strip()},
        ]

    def report_block(self, report_text: str) -> str:
        """What replaces ``{report}``: the text, or (``indexed``) its numbered sentences."""
        if self.indexed:
            return number_sentences(report_sentences(report_text))
        return report_text.strip()


def load_prompt(path: str | Path) -> Prompt:
    """Read and check a prompt file; a bad one raises ConfigError naming the file and key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: prompt file not found (extraction.openai.prompt)") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: prompt file is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a prompt file is a mapping with keys version, system, user (and categories)")
    for key in ("version", "system", "user"):
        value = data.get(key)
        if not isinstance(value, (str, int, float)) or not str(value).strip():
            raise ConfigError(f"{path}: prompt key {key!r} is missing or empty")
    unknown = sorted(set(data) - set(PROMPT_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown prompt key(s) {', '.join(unknown)} (allowed: {', '.join(PROMPT_KEYS)})")
    if REPORT_PLACEHOLDER not in data["user"]:
        raise ConfigError(f"{path}: the user template has no {REPORT_PLACEHOLDER} placeholder")
    closed = data.get("categories", "open")
    if closed not in ("open", "vocabulary"):
        raise ConfigError(
            f"{path}: prompt key 'categories' is {closed!r}; allowed: open (free text, the default) "
            "or vocabulary (a closed list: the configured vocabulary's canonical names)"
        )
    closed = closed == "vocabulary"
    if closed and CATEGORIES_PLACEHOLDER not in data["system"]:
        raise ConfigError(
            f"{path}: categories: vocabulary needs a {CATEGORIES_PLACEHOLDER} placeholder in the "
            "system text (where the list of allowed categories goes)"
        )
    reply = data.get("reply", "triplets")
    if reply not in REPLY_FORMS:
        raise ConfigError(
            f"{path}: prompt key 'reply' is {reply!r}; allowed: triplets (each triplet copies its sentence, "
            "the default) or indexed (numbered sentences, findings under their sentence's number)"
        )
    if reply == "indexed" and not closed:
        raise ConfigError(f"{path}: reply: indexed needs categories: vocabulary (its schema's category is an enum)")
    return Prompt(
        path,
        str(data["version"]).strip(),
        str(data["system"]),
        str(data["user"]),
        hashlib.sha256(raw).hexdigest(),
        closed,
        reply,
    )


def prompt_categories(prompt: Prompt, vocabulary_dir: str | Path | None) -> list[str] | None:
    """The closed category list of a ``categories: vocabulary`` prompt (None for an open one)."""
    if not prompt.closed_categories:
        return None
    if vocabulary_dir is None:
        raise ConfigError(
            f"{prompt.path}: categories: vocabulary needs the vocabulary folder (extraction.rules.vocabulary_dir)"
        )
    try:
        return list(Vocabulary.load(vocabulary_dir).category_names)
    except VocabularyError as err:
        raise ConfigError(str(err)) from None
