"""The prompt file (``extraction.openai.prompt``, e.g. ``resources/prompts/triplets.yaml``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from medfilip.configbase import ConfigError
from medfilip.extraction.vocabulary import Vocabulary, VocabularyError

REPORT_PLACEHOLDER = "{report}"
CATEGORIES_PLACEHOLDER = "{categories}"
PROMPT_KEYS = ("version", "system", "user", "categories")

__all__ = ["CATEGORIES_PLACEHOLDER", "PROMPT_KEYS", "REPORT_PLACEHOLDER", "Prompt", "load_prompt", "prompt_categories"]


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

    @property
    def full_version(self) -> str:
        return f"{self.version}+{self.sha256[:12]}"

    def messages(self, report_text: str, categories: list[str] | None = None) -> list[dict[str, str]]:
        system = self.system.strip()
        if categories:
            system = system.replace(CATEGORIES_PLACEHOLDER, ", ".join(categories))
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": self.user.replace(REPORT_PLACEHOLDER, report_text.strip()).strip()},
        ]


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
    return Prompt(
        path,
        str(data["version"]).strip(),
        str(data["system"]),
        str(data["user"]),
        hashlib.sha256(raw).hexdigest(),
        closed,
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
