"""The chat-completions body of one report (also one Batch API line's ``body``), and its re-ask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medfilip.configbase import ConfigError
from medfilip.extraction.openai.prompt import Prompt
from medfilip.extraction.schema import Triplet
from medfilip.extraction.settings import OpenAIBackendConfig

__all__ = ["TRIPLETS_JSON_SCHEMA", "build_request", "corrective_request", "response_format", "triplets_json_schema"]


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


def response_format(structured_output: str, categories: list[str] | None = None) -> dict[str, Any] | None:
    """The ``response_format`` of a mode (``auto`` asks json_schema first; see OpenAIBackend).

    ``json_object_schema`` is llama.cpp's form (its server and llama-cpp-python's): ``{"type":
    "json_object", "schema": ...}``, compiled into a grammar, so the reply is schema-valid JSON.
    """
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
    fmt = response_format(structured_output or cfg.structured_output, categories if prompt.closed_categories else None)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def corrective_request(request: Mapping[str, Any], content: str | None, error: str) -> dict[str, Any]:
    """The request asked again after an unusable reply: the reply and what was wrong with it appended."""
    messages = list(request["messages"])
    messages.append({"role": "assistant", "content": content or ""})
    messages.append(
        {
            "role": "user",
            "content": f"Your reply could not be used: {error}. Reply again for the same report with only the "
            'JSON object {"triplets": [...]} described above, every triplet with severity, location, '
            "category, polarity (present, negated or uncertain) and sentence.",
        }
    )
    return {**request, "messages": messages}
