"""The key tables of ``config/README.md``, generated from the pydantic models' ``Field`` descriptions.

Each table sits between two markers in ``config/README.md``; everything outside them is written by hand::

    <!-- BEGIN GENERATED extraction.openai -->
    ...
    <!-- END GENERATED extraction.openai -->

A marker names a section by its dotted key path. Its table has one row per key under that section (key,
type, default, description), leaving out the keys of any section with a marker of its own; a section nested
in it gets a row of its own before its keys, and a mapping of sections (``training.runs``) gets rows for the
keys of one entry, written ``training.runs.<name>.loss``. Every top-level section needs a marker, and every
key a description: a model without one is an error, so a new key is documented where it is defined.

    python -m medfilip.pipeline.config_docs --write    # rewrite the tables of config/README.md
    python -m medfilip.pipeline.config_docs --check    # exit 1 when a table is not what the models give
    python -m medfilip.pipeline.config_docs            # print the file as it would be written

The defaults are the models' own: what a key left out of a config file takes. ``config/config.yaml`` sets
some keys to other values for the embedded default run; its comments say which.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

# the root pydantic model of the pipeline config: the one import to re-point when it moves
from medfilip.pipeline.config import ROOT
from medfilip.pipeline.config import PipelineConfig as ROOT_MODEL

README_PATH = ROOT / "config" / "README.md"
COMMAND = "python -m medfilip.pipeline.config_docs --write"
MARKERS = re.compile(
    r"^<!-- BEGIN GENERATED (?P<section>[A-Za-z0-9_.]+) -->\n(?P<body>.*?)^<!-- END GENERATED (?P=section) -->$",
    re.M | re.S,
)
HEADER = "| key | type | default | description |\n| --- | --- | --- | --- |"
# a mapping default longer than this is summarised by its keys
MAX_DEFAULT = 90


class ConfigDocsError(ValueError):
    """config/README.md or a model cannot give the tables (a missing marker or description)."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a ``$ref`` replaced by its definition (the node's own keys win), recursively."""
    while "$ref" in node:
        target = defs[node["$ref"].removeprefix("#/$defs/")]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _nullable(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema of a value and whether null is allowed (``anyOf: [X, {type: null}]``)."""
    branches = node.get("anyOf")
    if not branches:
        return node, False
    kept = [_resolve(b, defs) for b in branches if b.get("type") != "null"]
    if len(kept) == 1 and len(kept) < len(branches):
        extra = {k: v for k, v in node.items() if k != "anyOf"}
        return {**kept[0], **extra}, True
    return node, False


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)


def _range(node: dict[str, Any]) -> str:
    """' 1 to 100', ' ≥ 0', ' > 0, ≤ 3600' ... from the numeric bounds of a schema node."""
    low = ("≥", node["minimum"]) if "minimum" in node else ("≥", None)
    if "exclusiveMinimum" in node:
        low = (">", node["exclusiveMinimum"])
    high = ("≤", node["maximum"]) if "maximum" in node else ("≤", None)
    if "exclusiveMaximum" in node:
        high = ("<", node["exclusiveMaximum"])
    if low[1] is not None and high[1] is not None:
        if low[0] == "≥" and high[0] == "≤":
            return f" {_number(low[1])} to {_number(high[1])}"
        return f" {low[0]} {_number(low[1])}, {high[0]} {_number(high[1])}"
    if low[1] is not None:
        return f" {low[0]} {_number(low[1])}"
    if high[1] is not None:
        return f" {high[0]} {_number(high[1])}"
    return ""


def type_text(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short human reading of a value's schema: ``integer 1 to 100``, ```a`, `b` or null``, ``list of path``."""
    node, nullable = _nullable(_resolve(node, defs), defs)
    if "enum" in node:
        text = ", ".join(f"`{_scalar(v)}`" for v in node["enum"])
    elif "const" in node:
        text = f"`{_scalar(node['const'])}`"
    elif "anyOf" in node:
        text = " or ".join(type_text(b, defs) for b in node["anyOf"])
    else:
        kind = node.get("type", "any")
        if isinstance(kind, list):
            text = " or ".join(kind)
        elif kind in ("integer", "number"):
            text = kind + _range(node)
        elif kind == "string":
            text = "path" if node.get("format") == "path" else "string"
        elif kind == "array":
            items = type_text(node.get("items", {}), defs)
            text = f"list of {items}"
            notes = []
            if node.get("minItems"):
                notes.append(f"at least {node['minItems']}")
            if node.get("maxItems") is not None:
                notes.append(f"at most {node['maxItems']}")
            if node.get("uniqueItems"):
                notes.append("no repeats")
            if notes:
                text += f" ({', '.join(notes)})"
        elif kind == "object":
            value = node.get("additionalProperties")
            if isinstance(value, dict):
                value = _resolve(value, defs)
                text = "mapping name → " + ("section" if "properties" in value else type_text(value, defs))
            else:
                text = "section"
        else:
            text = kind
    return f"{text} or null" if nullable else text


def _scalar(value: Any) -> str:
    """A YAML scalar as it would be written in the config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return _flow(value)


def _flow(value: Any) -> str:
    """``value`` in YAML flow style on one line, as a config would write it."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=math.inf, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def default_text(node: dict[str, Any]) -> str:
    """The default as a YAML value in backticks; a section's is its keys' (written '—')."""
    if "default" not in node:
        return "—"
    value = node["default"]
    if "properties" in node or (isinstance(value, dict) and value == {} and node.get("type") == "object"):
        return "—" if "properties" in node else "`{}`"
    text = _flow(value)
    if isinstance(value, dict) and len(text) > MAX_DEFAULT:
        return "entries " + ", ".join(f"`{_flow(k)}`" for k in value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def rows(node: dict[str, Any], path: str, defs: dict[str, Any], skip: set[str]) -> Iterator[tuple[str, ...]]:
    """(key, type, default, description) of every key under a section, depth first, skipping marked sections."""
    for name, raw in node.get("properties", {}).items():
        key = f"{path}.{name}"
        if key in skip:
            continue
        sub = _resolve(raw, defs)
        value, _ = _nullable(sub, defs)
        description = sub.get("description") or value.get("description")
        if not description:
            raise ConfigDocsError(f"{key}: the model's Field has no description (the table needs one)")
        yield key, type_text(sub, defs), default_text(sub), description
        if "properties" in value:
            yield from rows(value, key, defs, skip)
        entry = value.get("additionalProperties")
        if isinstance(entry, dict) and "properties" in _resolve(entry, defs):
            yield from rows(_resolve(entry, defs), f"{key}.<name>", defs, skip)


def section_node(schema: dict[str, Any], section: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema node of a dotted section path, or an error naming it."""
    node = schema
    for part in section.split("."):
        props = _nullable(_resolve(node, defs), defs)[0].get("properties", {})
        if part not in props:
            raise ConfigDocsError(f"a table is marked for {section!r}, which is no config section")
        node = props[part]
    node = _nullable(_resolve(node, defs), defs)[0]
    if "properties" not in node:
        raise ConfigDocsError(f"a table is marked for {section!r}, which is a key, not a section")
    return node


def _table(schema: dict[str, Any], section: str, sections: list[str]) -> str:
    defs = schema.get("$defs", {})
    node = section_node(schema, section, defs)
    skip = {s for s in sections if s != section}
    lines = [HEADER]
    for key, kind, default, description in rows(node, section, defs, skip):
        lines.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(lines)


def table(section: str, sections: list[str], model: type[BaseModel] = ROOT_MODEL) -> str:
    """The markdown table of one marked section: its keys but those of the other marked sections."""
    return _table(model.model_json_schema(by_alias=True), section, sections)


def generate(text: str, model: type[BaseModel] = ROOT_MODEL) -> str:
    """``text`` (config/README.md) with every marked table replaced by the one the models give."""
    schema = model.model_json_schema(by_alias=True)
    sections = [m.group("section") for m in MARKERS.finditer(text)]
    for section in sections:
        section_node(schema, section, schema.get("$defs", {}))
    missing = [s for s in schema.get("properties", {}) if s not in sections]
    if missing:
        raise ConfigDocsError(
            f"no table for the config section(s) {', '.join(missing)}; add "
            f"'<!-- BEGIN GENERATED name -->' and '<!-- END GENERATED name -->' lines for each"
        )
    repeated = sorted({s for s in sections if sections.count(s) > 1})
    if repeated:
        raise ConfigDocsError(f"more than one table for {', '.join(repeated)}")

    def fill(match: re.Match[str]) -> str:
        section = match.group("section")
        return (
            f"<!-- BEGIN GENERATED {section} -->\n{_table(schema, section, sections)}\n<!-- END GENERATED {section} -->"
        )

    return MARKERS.sub(fill, text)


def stale_sections(text: str, model: type[BaseModel] = ROOT_MODEL) -> list[str]:
    """The marked sections whose table in ``text`` differs from the generated one."""
    fresh = {m.group("section"): m.group(0) for m in MARKERS.finditer(generate(text, model))}
    return [m.group("section") for m in MARKERS.finditer(text) if fresh[m.group("section")] != m.group(0)]


def main(argv: list[str] | None = None, model: type[BaseModel] = ROOT_MODEL) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medfilip.pipeline.config_docs",
        description="The key tables of config/README.md, generated from the pydantic Field descriptions.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in the file")
    mode.add_argument("--check", action="store_true", help="exit 1 when a table is not the generated one")
    parser.add_argument("--path", type=Path, default=README_PATH, help="the file (default: config/README.md)")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    try:
        fresh = generate(text, model)
        stale = stale_sections(text, model) if args.check else []
    except ConfigDocsError as err:
        print(f"{args.path}: {err}", file=sys.stderr)
        return 1
    if args.write:
        if fresh != text:
            args.path.write_text(fresh, encoding="utf-8")
        return 0
    if args.check:
        if stale or fresh != text:
            print(
                f"{args.path}: the tables of {', '.join(stale)} are not what the config models give; run {COMMAND}",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
