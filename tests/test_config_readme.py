"""config/README.md documents every config key the models define, no key they do not, and their defaults.

Its key tables are generated (medfilip/pipeline/config_docs.py; tests/test_config_docs.py checks they are current):
these tests check what the generator writes against the schema and the models.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import yaml

from medfilip.pipeline.config import ROOT, PipelineConfig
from medfilip.pipeline.schema import config_schema

README = ROOT / "config" / "README.md"


def schema_keys(node: dict, path: str = "") -> list[str]:
    """Dotted key paths of every setting (a mapping of names, as training.runs, counts as one key)."""
    out = []
    for key, sub in node.get("properties", {}).items():
        out += schema_keys(sub, f"{path}{key}.") if "properties" in sub else [f"{path}{key}"]
    return out


def documented_keys() -> list[str]:
    """The keys in the first cell of every key table row: `a.b`, `.c` (a sibling of a.b), `x.<name>.y`, `x.*`."""
    keys = []
    for cell in re.findall(r"^\| (`[^|]+`) \|", README.read_text(encoding="utf-8"), re.M):
        names = re.findall(r"`([^`]+)`", cell)
        first = names[0]
        keys.append(first)
        keys += [first.rsplit(".", 1)[0] + name for name in names[1:] if name.startswith(".")]
    return keys


def as_pattern(key: str) -> str:
    return re.sub(r"<[a-z]+>", "*", key)


def covers(documented: str, key: str) -> bool:
    """Whether a documented key (or pattern: x.*, x.<name>.y) documents the setting ``key``."""
    pattern = as_pattern(documented)
    return fnmatchcase(key, pattern) or fnmatchcase(key, pattern.removesuffix(".*") + ".*")


def known(documented: str, keys: list[str]) -> bool:
    """Whether a documented key is a setting, a section holding settings, or lies under a mapping key."""
    pattern = as_pattern(documented).removesuffix(".*")
    return any(
        fnmatchcase(k, pattern) or fnmatchcase(k, pattern + ".*") or fnmatchcase(pattern, k + ".*") for k in keys
    )


def test_every_key_is_documented():
    documented = documented_keys()
    keys = schema_keys(config_schema())
    assert len(keys) > 150
    assert "evaluation.segmentation.lr" in keys and "training.runs" in keys
    missing = [k for k in keys if not any(covers(d, k) for d in documented)]
    assert missing == [], "add these keys to config/README.md"


def test_no_documented_key_is_unknown():
    schema = config_schema()
    keys = schema_keys(schema)
    documented = [d for d in documented_keys() if d.split(".")[0] in schema["properties"]]
    assert len(documented) > 150
    unknown = [d for d in documented if not known(d, keys)]
    assert unknown == [], "config/README.md names keys the config models do not have"


def default_cells() -> list[tuple[str, str]]:
    """(key, default as written) for the rows whose default column (the third) is backticked values."""
    out = []
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) < 4 or not re.fullmatch(r"(`[^`]*`(, )?)+", cells[2]):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        keys = [names[0]] + [names[0].rsplit(".", 1)[0] + n for n in names[1:] if n.startswith(".")]
        values = re.findall(r"`([^`]*)`", cells[2])
        if len(values) == len(keys) and not any("<" in k or "*" in k for k in keys):
            out += [(k, v) for k, v in zip(keys, values, strict=True) if "..." not in v]  # [0.1, ..., 0.9] abbreviates
    return out


def test_documented_defaults_are_the_models_defaults():
    defaults = PipelineConfig().model_dump(mode="json", by_alias=True)

    def default(key: str):
        node = defaults
        for part in key.split("."):
            node = node[part]
        return node

    cells = [(k, v) for k, v in default_cells() if k.split(".")[0] in defaults]
    assert len(cells) > 120
    wrong = {k: (v, default(k)) for k, v in cells if yaml.safe_load(v) != default(k)}
    assert wrong == {}, "config/README.md default column (written, model default)"
