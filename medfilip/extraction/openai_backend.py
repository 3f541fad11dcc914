"""The ``openai`` extraction backend: GPT-IE over any OpenAI-compatible endpoint.

OpenAI, Azure OpenAI (``azure_api_version`` set), vLLM, Ollama or anything that
speaks ``POST /v1/chat/completions``. One report is one chat completion whose
reply is a JSON object ``{"triplets": [...]}`` validated by the pydantic
:class:`~medfilip.extraction.schema.Triplet` schema.

Public pieces, shared with the Batch API mode:

* :func:`load_prompt` reads ``resources/prompts/triplets.yaml``;
* :func:`build_request` makes the chat-completions body for one report;
* :func:`reply_of` takes content, finish reason and usage out of a completion body;
* :func:`parse_reply` turns reply content into triplets or raises :class:`ReplyError`;
* :func:`corrective_request` is the one retry after an unusable reply;
* :func:`price_of` and :func:`cost_usd` do the accounting;
* :func:`generation_settings` is what changes a reply besides the prompt (cache key, Snakemake param).

Structured output (``extraction.openai.structured_output``): ``json_schema`` (OpenAI strict
structured outputs; vLLM), ``json_object_schema`` (``{"type": "json_object", "schema": ...}``,
llama.cpp's form, compiled into a grammar), ``json_object`` (JSON mode), ``none``, or ``auto``:
json_schema until the server rejects it (llama-cpp-python answers a 500 naming it), then
json_object_schema for the rest of the run. A mode the server rejects stops the run with a message
naming the mode to use, rather than failing every report.

Reliability: requests go out through one client-side :class:`RateLimiter`
(requests and tokens per minute, steered by the server's ``x-ratelimit-*``
headers); 429, 5xx, timeouts and connection errors are retried by tenacity
honouring ``Retry-After`` (the SDK's own retries are off); a reply that does not
validate is asked again once with the error, then recorded as failed. An
exhausted quota (429 ``insufficient_quota``), a rejected key or an unknown model
stops the run with :class:`ExtractionAborted`; the runner keeps what finished.
The API key is read from the environment, and is redacted from every message
this module produces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from medfilip.config import ConfigError, ModelPrice, OpenAIBackendConfig
from medfilip.extraction.backend import ExtractionAborted, ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.ratelimit import RateLimiter
from medfilip.extraction.schema import Polarity, Triplet, keep_categorised

log = logging.getLogger(__name__)

REPORT_PLACEHOLDER = "{report}"
CATEGORIES_PLACEHOLDER = "{categories}"
PROMPT_KEYS = ("version", "system", "user", "categories")


class ReplyError(ValueError):
    """A reply that cannot be used: truncated or malformed JSON, or content the schema rejects."""


__all__ = [
    "ExtractionAborted", "OpenAIBackend", "Prompt", "Reply", "ReplyError", "build_request", "corrective_request",
    "cost_usd", "estimate_tokens", "generation_settings", "load_prompt", "parse_reply", "price_of", "prompt_categories",
    "reply_of", "triplets_json_schema",
]


# -- prompt ------------------------------------------------------------------------------------
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
        raise ConfigError(f"{path}: prompt key 'categories' is {closed!r}; allowed: open (free text, the default) "
                          "or vocabulary (a closed list: the configured vocabulary's canonical names)")
    closed = closed == "vocabulary"
    if closed and CATEGORIES_PLACEHOLDER not in data["system"]:
        raise ConfigError(f"{path}: categories: vocabulary needs a {CATEGORIES_PLACEHOLDER} placeholder in the "
                          "system text (where the list of allowed categories goes)")
    return Prompt(path, str(data["version"]).strip(), str(data["system"]), str(data["user"]),
                  hashlib.sha256(raw).hexdigest(), closed)


# -- request ---------------------------------------------------------------------------------
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


def build_request(prompt: Prompt, report_text: str, cfg: OpenAIBackendConfig, *,
                  categories: list[str] | None = None, structured_output: str | None = None) -> dict[str, Any]:
    """The chat-completions body for one report (also one Batch API line's ``body``).

    ``categories``: the closed list of a ``categories: vocabulary`` prompt; ``structured_output``
    overrides the configured mode (``auto`` once it has switched).
    """
    if prompt.closed_categories and not categories:
        raise ConfigError(f"{prompt.path}: the prompt asks for a closed list of categories (categories: vocabulary) "
                          "but none was given")
    body: dict[str, Any] = {
        "model": cfg.model,
        "messages": prompt.messages(report_text, categories if prompt.closed_categories else None),
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_output_tokens,
    }
    fmt = response_format(structured_output or cfg.structured_output,
                          categories if prompt.closed_categories else None)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def generation_settings(cfg: OpenAIBackendConfig, categories: list[str] | None = None) -> dict[str, Any]:
    """What changes a reply besides the prompt file: the model (and its file's sha256), the generation
    settings, and the closed category list. In the backend's version (the cache key) and a Snakemake
    param of extraction; the endpoint, key, limits and retries change how it is asked, not the answer.
    """
    from medfilip.extraction.llm_server import model_file_sha256

    out: dict[str, Any] = {"model": cfg.model, "temperature": cfg.temperature,
                           "max_output_tokens": cfg.max_output_tokens, "structured_output": cfg.structured_output}
    if cfg.model_file is not None:
        out["model_file_sha256"] = model_file_sha256(cfg.model_file)
    if categories:
        out["categories_sha256"] = hashlib.sha256("\n".join(categories).encode()).hexdigest()[:16]
    return out


def prompt_categories(prompt: Prompt, vocabulary_dir: str | Path | None) -> list[str] | None:
    """The closed category list of a ``categories: vocabulary`` prompt (None for an open one)."""
    if not prompt.closed_categories:
        return None
    from medfilip.extraction.vocabulary import Vocabulary, VocabularyError

    if vocabulary_dir is None:
        raise ConfigError(f"{prompt.path}: categories: vocabulary needs the vocabulary folder "
                          "(extraction.rules.vocabulary_dir)")
    try:
        return list(Vocabulary.load(vocabulary_dir).category_names)
    except VocabularyError as err:
        raise ConfigError(str(err)) from None


def corrective_request(request: Mapping[str, Any], content: str | None, error: str) -> dict[str, Any]:
    """The request asked again after an unusable reply: the reply and what was wrong with it appended."""
    messages = list(request["messages"])
    messages.append({"role": "assistant", "content": content or ""})
    messages.append({
        "role": "user",
        "content": f"Your reply could not be used: {error}. Reply again for the same report with only the "
                   'JSON object {"triplets": [...]} described above, every triplet with severity, location, '
                   "category, polarity (present, negated or uncertain) and sentence.",
    })
    return {**request, "messages": messages}


def estimate_tokens(request: Mapping[str, Any]) -> int:
    """Tokens a request may use, before it is sent: ~4 characters a prompt token, plus the completion cap."""
    chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0 for m in request["messages"])
    return math.ceil(chars / 4) + 8 * len(request["messages"]) + int(request.get("max_tokens") or 0)


# -- reply -----------------------------------------------------------------------------------
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```\s*$", re.S)


@dataclass(frozen=True)
class Reply:
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None


def reply_of(completion: Mapping[str, Any]) -> Reply:
    """Content, finish reason and token usage of a chat-completion body (a dict, as in a Batch output line)."""
    usage = completion.get("usage") or {}
    choices = completion.get("choices") or []
    if not choices:
        raise ReplyError("the completion has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    return Reply(message.get("content"), choice.get("finish_reason"), int(usage.get("prompt_tokens") or 0),
                 int(usage.get("completion_tokens") or 0), message.get("refusal"))


def _short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def parse_reply(
    content: str | None, finish_reason: str | None = None, refusal: str | None = None
) -> tuple[list[Triplet], int]:
    """Triplets of a reply and how many were dropped for having no category (paper §III-A).

    Raises ReplyError with the reason for an empty, truncated or malformed reply, a refusal,
    or content the schema rejects (a wrong polarity, a missing ``triplets`` list, extra keys ...).
    """
    if refusal:
        raise ReplyError(f"the model refused: {_short(refusal)}")
    if finish_reason == "length":
        raise ReplyError("truncated reply: the completion hit max_tokens (finish_reason=length)")
    if finish_reason == "content_filter":
        raise ReplyError("the reply was withheld by the content filter (finish_reason=content_filter)")
    text = (content or "").strip()
    if not text:
        raise ReplyError("empty reply")
    fenced = _FENCE.match(text)  # local models often wrap JSON in ``` fences
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated"):
            raise ReplyError(f"truncated JSON: the reply ends inside a value after {len(text)} characters") from None
        # no excerpt of the reply: it may quote the report, and this reason is logged
        raise ReplyError(f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if isinstance(data, list):  # a bare list of triplets: accepted from lenient local models
        data = {"triplets": data}
    if not isinstance(data, dict) or not isinstance(data.get("triplets"), list):
        got = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)}"
        raise ReplyError(f"schema: expected an object with a 'triplets' list, got {got}")
    extra = sorted(set(data) - {"triplets"})
    if extra:
        raise ReplyError(f"schema: unexpected key(s) {', '.join(map(repr, extra))} beside 'triplets'")
    kept: list[Triplet] = []
    dropped = 0
    for i, item in enumerate(data["triplets"]):
        if not isinstance(item, dict):
            raise ReplyError(f"schema: triplet {i} is a {type(item).__name__}, not an object")
        try:
            ok, n = keep_categorised([item])
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "triplet"
            msg = first["msg"]
            if first["type"] == "extra_forbidden":
                msg = "unexpected key"
            elif field == "polarity":
                msg = f"{first.get('input')!r} is not one of {', '.join(p.value for p in Polarity)}"
            raise ReplyError(f"schema: triplet {i} field {field!r}: {msg}") from None
        kept.extend(ok)
        dropped += n
    return kept, dropped


# -- accounting ------------------------------------------------------------------------------
def price_of(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of a model: its own entry, else the longest listed prefix (gpt-4o-mini-2024-07-18 -> gpt-4o-mini)."""
    if model in prices:
        return prices[model]
    matches = [k for k in prices if model.startswith(k)]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(prompt_tokens: int, completion_tokens: int, price: ModelPrice | None, factor: float = 1.0) -> float:
    if price is None:
        return 0.0
    return factor * (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6


# -- endpoint and secrets --------------------------------------------------------------------------
def is_local_url(base_url: str | None) -> bool:
    """True for a server on this machine (localhost, 127.0.0.0/8, ::1)."""
    if not base_url:
        return False
    host = (urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


_warned_mimic: set[str] = set()


def warn_if_mimic_online(report_source: str | None, base_url: str | None) -> bool:
    """Warn, once per process and endpoint, that MIMIC reports are about to go to an online service."""
    if report_source != "mimic_cxr" or is_local_url(base_url):
        return False
    where = base_url or "api.openai.com"
    if where in _warned_mimic:
        return False
    _warned_mimic.add(where)
    log.warning(
        "reports.source is mimic_cxr and extraction.openai.base_url (%s) is an online service: the PhysioNet "
        "credentialed data use agreement restricts sending MIMIC-CXR reports to online services. The usual "
        "answers are Azure OpenAI with human review of prompts opted out, or a local server (vLLM, Ollama) "
        "on localhost.", where)
    return True


def read_api_key(env_name: str) -> str:
    """The API key from the environment; a clear one-line ConfigError naming the variable when it is unset."""
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ConfigError(
            f"extraction.openai: environment variable {env_name} is not set; it must hold the API key "
            f"(export {env_name}=...; a local server without keys takes any value), or set "
            f"extraction.openai.api_key_env to the variable that holds it")
    return key


def redact_secret(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def _retry_after(err: BaseException) -> float | None:
    """Seconds the server asked to wait (retry-after-ms, then retry-after as seconds or an HTTP date)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def _error_code(err: BaseException) -> str | None:
    code = getattr(err, "code", None)
    if code:
        return str(code)
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        return body.get("code") or body.get("type")
    return None


def _is_quota(err: BaseException) -> bool:
    import openai

    if not isinstance(err, openai.RateLimitError):
        return False
    body = getattr(err, "body", None)
    return _error_code(err) == "insufficient_quota" or (isinstance(body, dict) and body.get("type") == "insufficient_quota")


def _retryable(err: BaseException) -> bool:
    import openai

    if isinstance(err, openai.APIConnectionError):  # APITimeoutError included
        return True
    if isinstance(err, openai.RateLimitError):
        return not _is_quota(err)
    return isinstance(err, openai.APIStatusError) and (err.status_code >= 500 or err.status_code in (408, 409))


class _RequestFailed(Exception):
    """One report's request gave up: retries exhausted, or refused for this report alone (a 400)."""


class _FormatRejected(Exception):
    """The server refused the request's ``response_format`` (not this report: every request would fail)."""


def _rejects_response_format(err: BaseException, request: Mapping[str, Any]) -> bool:
    """A 400/422/500 that names the response format of a request that has one.

    llama.cpp's servers answer ``{type: json_schema}`` with a 500 (llama-cpp-python) or a 400
    naming ``response_format``; vLLM and OpenAI answer an unsupported form with a 400 naming it.
    """
    if "response_format" not in request or getattr(err, "status_code", None) not in (400, 422, 500):
        return False
    text = (_message(err) + " " + str(getattr(err, "body", "") or "")).lower()
    return any(word in text for word in ("response_format", "json_schema", "response format", "json_object"))


# -- the backend ---------------------------------------------------------------------------------
class OpenAIBackend(ExtractionBackend):
    """Triplets from an OpenAI-compatible chat-completions endpoint (see the module docstring).

    ``window_s`` scales the rate-limit minute (tests use a second); ``backoff_s`` and
    ``backoff_max_s`` shape the exponential jitter between retries without a Retry-After.
    """

    name = "openai"

    def __init__(
        self,
        cfg: OpenAIBackendConfig,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        report_source: str | None = None,
        api_key: str | None = None,
        window_s: float = 60.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        vocabulary_dir: str | Path | None = "resources/vocabulary",
    ):
        self.cfg = cfg
        self.prompt = load_prompt(cfg.prompt)
        self.categories = prompt_categories(self.prompt, vocabulary_dir)
        # auto starts with json_schema and switches, once, when the server rejects it (llama.cpp)
        self.structured_output = "json_schema" if cfg.structured_output == "auto" else cfg.structured_output
        self._format_lock = threading.Lock()
        if cfg.azure_api_version and not cfg.base_url:
            raise ConfigError("extraction.openai.azure_api_version is set but base_url is not: set it to your Azure "
                              "endpoint, https://<resource>.openai.azure.com")
        self._api_key = api_key if api_key is not None else read_api_key(cfg.api_key_env)
        self.price = price_of(cfg.model, prices or {})
        self.limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, window_s=window_s)
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "corrective": 0, "format_switched": 0}
        gen = generation_settings(cfg, self.categories)
        gen.pop("model")  # the model name is a cache-key part of its own
        settings = json.dumps([gen.pop("structured_output"), gen.pop("temperature"), gen.pop("max_output_tokens")])
        if gen:  # model file hash, closed categories: appended, so versions without them are unchanged
            settings += json.dumps(gen, sort_keys=True)
        self._version = f"{self.prompt.version}+{hashlib.sha256(self.prompt.sha256.encode() + settings.encode()).hexdigest()[:12]}"
        warn_if_mimic_online(report_source, cfg.base_url)

    @classmethod
    def from_config(cls, cfg, **kwargs) -> "OpenAIBackend":
        """From the whole PipelineConfig: the openai settings, the prices, the report source and the vocabulary."""
        return cls(cfg.extraction.openai, prices=cfg.extraction.prices, report_source=cfg.reports.source,
                   vocabulary_dir=cfg.extraction.rules.vocabulary_dir, **kwargs)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.endpoint!r}, version={self.version!r})"

    @property
    def api_key(self) -> str:
        """The key in use (read from the environment); for clients built elsewhere, never for logs."""
        return self._api_key

    def redact(self, text: str) -> str:
        """``text`` with this backend's API key removed."""
        return redact_secret(text, self._api_key)

    @property
    def model(self) -> str:
        return self.cfg.model

    @property
    def version(self) -> str:
        """Prompt version + a hash of the prompt file and of the settings that change a reply
        (the model file's sha256 and the closed category list included)."""
        return self._version

    @property
    def endpoint(self) -> str:
        return self.cfg.base_url or "https://api.openai.com/v1"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(prompt_tokens, completion_tokens, self.price)

    def request_for(self, report_text: str) -> dict[str, Any]:
        return build_request(self.prompt, report_text, self.cfg, categories=self.categories,
                             structured_output=self.structured_output)

    def _format_rejected(self, err: "_FormatRejected", request: dict[str, Any]) -> dict[str, Any] | None:
        """After the server rejected ``response_format``: the request again in llama.cpp's form (auto),
        or None (the mode was chosen in the config: the run stops with a clear error)."""
        with self._format_lock:
            if self.cfg.structured_output == "auto" and request["response_format"].get("type") == "json_schema":
                if self.structured_output == "json_schema":
                    self.structured_output = "json_object_schema"
                    self.stats["format_switched"] += 1
                    log.warning("%s rejected response_format json_schema (%s); structured_output auto switches to "
                                "json_object_schema ({type: json_object, schema}, llama.cpp's form)",
                                self.endpoint, err)
                fmt = response_format("json_object_schema", self.categories if self.prompt.closed_categories else None)
                return {**request, "response_format": fmt}
        return None

    # -- synchronous face: a generator fed by an event loop in a worker thread ----------------
    def extract(self, reports: Iterable[ReportText]) -> Iterator[ExtractionResult]:
        reports = list(reports)
        if not reports:
            return
        log.info("openai backend: %d reports to %s, model %s, %d in flight, limits %d requests and %d tokens "
                 "per minute", len(reports), self.endpoint, self.model, self.cfg.max_concurrency,
                 self.cfg.requests_per_minute, self.cfg.tokens_per_minute)
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        done = object()
        holder: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                task = loop.create_task(self._extract_all(reports, out.put, stop))
                holder["loop"], holder["task"] = loop, task
                loop.run_until_complete(task)
            except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
                out.put(_Raised(err))
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()
                    out.put(done)

        thread = threading.Thread(target=run, name="openai-extract", daemon=True)
        thread.start()
        finished = False
        try:
            while True:
                try:
                    item = out.get(timeout=0.25)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    continue
                if item is done:
                    finished = True
                    break
                if isinstance(item, _Raised):
                    if isinstance(item.error, asyncio.CancelledError):
                        continue
                    raise item.error
                yield item
        finally:
            if not finished:  # the consumer stopped early (Ctrl-C, an error): stop the requests in flight
                stop.set()
                loop, task = holder.get("loop"), holder.get("task")
                if loop is not None and task is not None:
                    try:
                        loop.call_soon_threadsafe(task.cancel)
                    except RuntimeError:  # the loop already closed
                        pass
                thread.join(timeout=10)
            log.info("openai backend: %d requests, %d retries (%d rate-limited), %d corrective re-asks; %.1fs "
                     "waited for the rate limit", self.stats["requests"], self.stats["retries"],
                     self.stats["rate_limited"], self.stats["corrective"], self.limiter.waited_s)

    # -- async core ----------------------------------------------------------------------------
    def _client(self):
        import openai

        if self.cfg.azure_api_version:
            return openai.AsyncAzureOpenAI(azure_endpoint=self.cfg.base_url, api_version=self.cfg.azure_api_version,
                                           api_key=self._api_key, timeout=self.cfg.timeout_s, max_retries=0)
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.cfg.base_url, timeout=self.cfg.timeout_s,
                                  max_retries=0)

    async def _extract_all(self, reports: list[ReportText], emit, stop: threading.Event) -> None:
        pending: asyncio.Queue[ReportText] = asyncio.Queue()
        for r in reports:
            pending.put_nowait(r)

        async def worker() -> None:
            while not stop.is_set():
                try:
                    report = pending.get_nowait()
                except asyncio.QueueEmpty:
                    return
                emit(await self._extract_one(client, report))

        async with self._client() as client:
            workers = [asyncio.create_task(worker()) for _ in range(min(self.cfg.max_concurrency, len(reports)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _extract_one(self, client, report: ReportText) -> ExtractionResult:
        t0 = time.perf_counter()
        usage = [0, 0]
        request = self.request_for(report.text)

        def failed(reason: str) -> ExtractionResult:
            reason = redact_secret(reason, self._api_key)
            log.warning("report %s: extraction failed: %s", report.report_id, reason)
            return ExtractionResult(report.report_id, "failed", error=reason, prompt_tokens=usage[0],
                                    completion_tokens=usage[1], latency_s=time.perf_counter() - t0)

        try:
            try:
                reply = await self._complete(client, request, usage, report.report_id)
            except _FormatRejected as err:
                retry = self._format_rejected(err, request)
                if retry is None:
                    raise ExtractionAborted(self._format_message(err)) from None
                request = retry
                reply = await self._complete(client, request, usage, report.report_id)
            try:
                triplets, dropped = parse_reply(reply.content, reply.finish_reason, reply.refusal)
            except ReplyError as first:
                self.stats["corrective"] += 1
                log.debug("report %s: unusable reply (%s); asking once more", report.report_id, first)
                reply = await self._complete(client, corrective_request(request, reply.content, str(first)), usage,
                                             report.report_id)
                try:
                    triplets, dropped = parse_reply(reply.content, reply.finish_reason, reply.refusal)
                except ReplyError as second:
                    return failed(f"unusable reply after one corrective retry: {second} (first reply: {first})")
        except _FormatRejected as err:  # json_object_schema rejected too (auto), on a second try
            raise ExtractionAborted(self._format_message(err)) from None
        except _RequestFailed as err:
            return failed(str(err))
        return ExtractionResult(report.report_id, "ok", tuple(triplets), dropped_uncategorised=dropped,
                                prompt_tokens=usage[0], completion_tokens=usage[1],
                                latency_s=time.perf_counter() - t0)

    def _wait(self, retry_state) -> float:
        err = retry_state.outcome.exception() if retry_state.outcome else None
        after = _retry_after(err) if err is not None else None
        if after is not None:
            return min(after, 600.0)
        n = retry_state.attempt_number
        return min(self.backoff_max_s, self.backoff_s * 2 ** (n - 1)) + random_jitter(self.backoff_s)

    async def _complete(self, client, request: dict[str, Any], usage: list[int], report_id: str) -> Reply:
        """One chat completion through the limiter and the retry layer; adds its token usage to ``usage``."""
        import openai
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        estimate = estimate_tokens(request)
        attempts = 0

        def before_sleep(state) -> None:
            self.stats["retries"] += 1
            err = state.outcome.exception()
            log.debug("report %s: attempt %d failed (%s); retrying in %.2fs", report_id, state.attempt_number,
                      redact_secret(_describe(err, self.cfg.timeout_s), self._api_key), state.upcoming_sleep)

        retrying = AsyncRetrying(stop=stop_after_attempt(self.cfg.max_retries + 1), wait=self._wait,
                                 retry=retry_if_exception(_retryable), before_sleep=before_sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    ticket = await self.limiter.acquire(estimate)
                    self.stats["requests"] += 1
                    try:
                        raw = await client.chat.completions.with_raw_response.create(**request)
                    except openai.APIStatusError as err:
                        self.limiter.settle(ticket, 0)  # a refused request uses no tokens
                        if _rejects_response_format(err, request):
                            raise _FormatRejected(redact_secret(_describe(err, self.cfg.timeout_s),
                                                                self._api_key)) from None
                        if err.status_code == 429 and not _is_quota(err):
                            self.stats["rate_limited"] += 1
                            after = _retry_after(err)
                            if after:
                                self.limiter.pause(after)  # everyone sharing the limit waits
                        raise
                    except openai.APIConnectionError:
                        raise
                    self.limiter.observe_headers(raw.headers, estimate)
                    completion = raw.parse()
                    u = completion.usage
                    if u is not None:
                        usage[0] += u.prompt_tokens or 0
                        usage[1] += u.completion_tokens or 0
                    self.limiter.settle(ticket, u.total_tokens if u is not None else None)
                    if not completion.choices:
                        raise _RequestFailed("the completion has no choices")
                    choice = completion.choices[0]
                    return Reply(choice.message.content, choice.finish_reason, u.prompt_tokens if u else 0,
                                 u.completion_tokens if u else 0, getattr(choice.message, "refusal", None))
        except openai.APIStatusError as err:
            raise self._status_error(err, attempts) from None
        except openai.APIConnectionError as err:
            raise _RequestFailed(redact_secret(f"{_describe(err, self.cfg.timeout_s)} (gave up after {attempts} "
                                         f"attempt{'s' * (attempts > 1)})", self._api_key)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _format_message(self, err: "_FormatRejected") -> str:
        mode = self.structured_output
        hint = {
            "json_schema": "llama.cpp's server (and llama-cpp-python's) takes structured_output: json_object_schema; "
                           "auto picks it by itself",
            "json_object_schema": "this form is llama.cpp's; for OpenAI, Azure or vLLM use json_schema, for a server "
                                  "with neither json_object or none",
        }.get(mode, "try structured_output: json_object or none")
        return (f"{self.endpoint}: the server rejected response_format for structured_output {mode!r} ({err}). "
                f"{hint} (extraction.openai.structured_output). Reports finished so far are cached.")

    def _status_error(self, err, attempts: int) -> Exception:
        where = self.endpoint
        if _is_quota(err):
            return ExtractionAborted(
                f"{where}: insufficient_quota (HTTP 429): the account has no credit left for model {self.model}. "
                "Reports finished so far are cached; add credit (or change extraction.openai) and run again.")
        if err.status_code == 401:
            return ExtractionAborted(f"{where}: the API key in ${self.cfg.api_key_env} was rejected (HTTP 401); "
                                     "check the key and that it belongs to this endpoint")
        if err.status_code == 403:
            return ExtractionAborted(redact_secret(f"{where}: permission denied (HTTP 403): {_message(err)}", self._api_key))
        if err.status_code == 404:
            return ExtractionAborted(redact_secret(
                f"{where}: model or deployment {self.model!r} not found (HTTP 404): {_message(err)}", self._api_key))
        tries = f" (gave up after {attempts} attempt{'s' * (attempts > 1)})" if _retryable(err) else ""
        return _RequestFailed(redact_secret(_describe(err, self.cfg.timeout_s) + tries, self._api_key))


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def random_jitter(scale: float) -> float:
    import random

    return random.uniform(0, scale)


def _message(err: BaseException) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return _short(str(body["message"]), 200)
    return _short(str(err), 200)


def _describe(err: BaseException | None, timeout_s: float) -> str:
    import openai

    if err is None:
        return "unknown error"
    if isinstance(err, openai.APITimeoutError):
        return f"request timed out after {timeout_s:g}s"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        return f"connection error: {_short(str(cause or err), 200)}"
    if isinstance(err, openai.APIStatusError):
        code = _error_code(err)
        return f"HTTP {err.status_code}{' ' + code if code else ''}: {_message(err)}"
    return _short(f"{type(err).__name__}: {err}", 200)
