"""The chat-completions body of one report (also one Batch API line's ``body``), and its re-ask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medfilip.configbase import ConfigError
from medfilip.extraction.openai.prompt import Prompt, report_sentences
from medfilip.extraction.schema import Polarity, Triplet
from medfilip.extraction.settings import OpenAIBackendConfig

__all__ = [
    "INDEXED_KEYS",
    "TRIPLETS_JSON_SCHEMA",
    "build_request",
    "corrective_request",
    "indexed_json_schema",
    "response_format",
    "triplets_json_schema",
]

MAX_FINDINGS_PER_SENTENCE = 3
# the short keys of an indexed reply's finding, in the order the model writes them
INDEXED_KEYS = {"c": "category", "p": "polarity", "sev": "severity", "loc": "location"}


def _strict(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema node in the subset OpenAI's strict structured outputs accept."""
    if "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = node["description"]
    if "anyOf" in node:  # Optional[X] -> type [X, "null"]
        branches = [_strict(b, defs) for b in node["anyOf"]]
        types = [t for b in branches for t in ([b["type"]] if isinstance(b.get("type"), str) else b.get("type", []))]
        out["type"] = types
        for b in branches:
            if "enum" in b:
                out["enum"] = b["enum"] + ([None] if "null" in types else [])
        return out
    if "enum" in node:
        out["type"] = node.get("type", "string")
        out["enum"] = list(node["enum"])
        return out
    out["type"] = node.get("type", "object")
    if out["type"] == "object":
        props = node.get("properties", {})
        out["properties"] = {k: _strict(v, defs) for k, v in props.items()}
        out["required"] = list(props)  # strict mode: every key present, optional ones nullable
        out["additionalProperties"] = False
    elif out["type"] == "array":
        out["items"] = _strict(node["items"], defs)
    return out


def triplets_json_schema(categories: list[str] | None = None) -> dict[str, Any]:
    """The strict JSON schema of a reply, ``{"triplets": [Triplet, ...]}``, derived from the pydantic model.

    With ``categories`` the category is one of them (an enum: a closed list the server enforces).
    """
    theirs = Triplet.model_json_schema()
    item = _strict(theirs, theirs.get("$defs", {}))
    if categories:
        item["properties"]["category"] = {**item["properties"]["category"], "enum": list(categories)}
    return {
        "type": "object",
        "properties": {"triplets": {"type": "array", "description": "Every finding of the report", "items": item}},
        "required": ["triplets"],
        "additionalProperties": False,
    }


TRIPLETS_JSON_SCHEMA = triplets_json_schema()


def indexed_json_schema(categories: list[str], n_sentences: int, *, strict: bool = True) -> dict[str, Any]:
    """The schema of an ``indexed`` reply: one key per sentence number, in order, each with its findings:
    ``{"1": [{"c": ..., "p": ..., "sev": ..., "loc": ...}], "2": [], ...}``.

    Every sentence number is required once, in order, and holds at most
    :data:`MAX_FINDINGS_PER_SENTENCE` findings: the model goes through the report sentence by
    sentence and cannot loop on one finding to the token cap (greedy decoding of a small model
    does, with a free list). ``c`` is one of ``categories`` (an enum: a grammar cannot emit
    another). ``strict`` (OpenAI's structured outputs) requires every key, the optional ones
    nullable; otherwise (llama.cpp's grammar) ``sev`` and ``loc`` may be left out, which saves
    output tokens on the many findings without them.
    """
    finding = {
        "type": "object",
        "properties": {
            "c": {"type": "string", "enum": list(categories), "description": "category"},
            "p": {"type": "string", "enum": [p.value for p in Polarity], "description": "polarity"},
            "sev": {"type": ["string", "null"], "description": "severity word as written"},
            "loc": {"type": ["string", "null"], "description": "laterality and region as written"},
        },
        "required": list(INDEXED_KEYS) if strict else ["c", "p"],
        "additionalProperties": False,
    }
    numbers = [str(i) for i in range(1, n_sentences + 1)]
    per_sentence = {"type": "array", "items": finding, "maxItems": MAX_FINDINGS_PER_SENTENCE}
    return {
        "type": "object",
        "properties": dict.fromkeys(numbers, per_sentence),
        "required": numbers,
        "additionalProperties": False,
    }


def response_format(
    structured_output: str, categories: list[str] | None = None, *, n_sentences: int | None = None
) -> dict[str, Any] | None:
    """The ``response_format`` of a mode (``auto`` asks json_schema first; see OpenAIBackend).

    ``json_object_schema`` is llama.cpp's form (its server and llama-cpp-python's): ``{"type":
    "json_object", "schema": ...}``, compiled into a grammar, so the reply is schema-valid JSON.
    ``n_sentences`` (an ``indexed`` prompt; ``categories`` then required) asks for the indexed reply.
    """
    if n_sentences is not None:
        schema = indexed_json_schema(categories or [], n_sentences, strict=structured_output != "json_object_schema")
    else:
        schema = TRIPLETS_JSON_SCHEMA if not categories else triplets_json_schema(categories)
    if structured_output in ("json_schema", "auto"):
        return {"type": "json_schema", "json_schema": {"name": "triplets", "strict": True, "schema": schema}}
    if structured_output == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    if structured_output == "json_object":
        return {"type": "json_object"}
    return None


def build_request(
    prompt: Prompt,
    report_text: str,
    cfg: OpenAIBackendConfig,
    *,
    categories: list[str] | None = None,
    structured_output: str | None = None,
) -> dict[str, Any]:
    """The chat-completions body for one report (also one Batch API line's ``body``).

    ``categories``: the closed list of a ``categories: vocabulary`` prompt; ``structured_output``
    overrides the configured mode (``auto`` once it has switched).
    """
    if prompt.closed_categories and not categories:
        raise ConfigError(
            f"{prompt.path}: the prompt asks for a closed list of categories (categories: vocabulary) "
            "but none was given"
        )
    body: dict[str, Any] = {
        "model": cfg.model,
        "messages": prompt.messages(report_text, categories if prompt.closed_categories else None),
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_output_tokens,
    }
    if cfg.presence_penalty:
        body["presence_penalty"] = cfg.presence_penalty
    n_sentences = len(report_sentences(report_text)) if prompt.indexed else None
    fmt = response_format(
        structured_output or cfg.structured_output,
        categories if prompt.closed_categories else None,
        n_sentences=n_sentences,
    )
    if fmt is not None:
        body["response_format"] = fmt
    return body


def corrective_request(
    request: Mapping[str, Any], content: str | None, error: str, *, indexed: bool = False
) -> dict[str, Any]:
    """The request asked again after an unusable reply: the reply and what was wrong with it appended."""
    messages = list(request["messages"])
    messages.append({"role": "assistant", "content": content or ""})
    what = (
        "JSON object described above: each sentence number once, in order, with the list of its findings, "
        "each with c (category), p (present, negated or uncertain) and, when written, sev and loc."
        if indexed
        else 'JSON object {"triplets": [...]} described above, every triplet with severity, location, '
        "category, polarity (present, negated or uncertain) and sentence."
    )
    messages.append(
        {
            "role": "user",
            "content": f"Your reply could not be used: {error}. Reply again for the same report with only the {what}",
        }
    )
    return {**request, "messages": messages}
