"""A real OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks (not a mock).

A ``ThreadingHTTPServer`` in a daemon thread on a free port speaks enough of the
OpenAI REST API for the ``openai`` SDK to talk to it unchanged: chat
completions (OpenAI and Azure paths), files and the Batch API. Replies come
from a *responder* that answers like an LLM would; faults are injected per test.

Usage::

    from openai_server import OpenAIServer   # in tests/extraction/ (pytest puts it on sys.path);
                                             # or use the `openai_server` fixture

    with OpenAIServer(api_key="sk-test") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        server.fail_next("server_error", n=2)      # the next 2 chat requests answer 500
        server.count()                             # chat requests received over HTTP

The fixture ``openai_server`` (tests/extraction/conftest.py) is one server per
session, ``reset()`` before each test; its key is ``openai_server.api_key``.

Addresses
---------
``server.url``       ``http://127.0.0.1:PORT``
``server.base_url``  ``http://127.0.0.1:PORT/v1`` (OpenAI ``base_url``)
``server.azure_endpoint``  ``http://127.0.0.1:PORT`` (``AzureOpenAI(azure_endpoint=...)``)

Endpoints (``/v1/...`` and the Azure ``/openai/...`` forms; Azure requires ``?api-version=``)
------------------------------------------------------------------------------------------
``POST /v1/chat/completions``, ``POST /openai/deployments/{d}/chat/completions``
    A ``chat.completion`` object: ``choices[0].message.content`` is the responder's
    reply (JSON text), ``usage`` counts ~4 characters a token (or ``server.usage``).
``POST /v1/files``  (multipart: ``purpose``, ``file``)  -> a ``file`` object
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``
``POST /v1/batches``  (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``)
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches``

Authentication: ``Authorization: Bearer <api_key>`` or ``api-key: <api_key>``; anything
else is a 401 ``invalid_api_key`` whose message masks the key, as OpenAI does.

Batches
-------
A batch is validated when created (each JSONL line needs a unique ``custom_id``,
``method: POST``, ``url`` equal to the batch's endpoint and a ``body``; a bad file
gives status ``failed`` with ``errors``). Each ``GET /v1/batches/{id}`` is one poll:
the lines are run through the same chat handler as HTTP requests (faults included,
latency and the server's own rate limit excluded) in ``server.batch_polls`` equal
chunks, so with ``batch_polls = 1`` (default) the first poll returns ``completed``,
with 3 the first two return ``in_progress`` with growing ``request_counts``.
Lines answered 200 go to the output file, others to the error file, both in the
Batch API format::

    {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200,
     "request_id": "req_...", "body": {...chat.completion...}}, "error": null}

``output_file_id`` / ``error_file_id`` are set only when the file has lines.
``server.batch_outcome``: ``"completed"`` (default); ``"expired"`` (only the first half
of the lines run; the rest go to the error file with ``"response": null,
"error": {"code": "batch_expired", ...}``; status ``expired``); ``"failed"`` (status
``failed``, ``errors`` set, no output). Cancelling gives ``cancelling`` and, on the
next poll, ``cancelled`` with the output of the lines already run (none for the rest).
Batch lines are recorded too (``via_batch=True``, with their ``custom_id``).

Responders
----------
``server.responder`` is any callable ``(request_body: dict) -> dict | list | str``
(a dict/list is sent as JSON text, a str as is). The default, :class:`RulesResponder`,
runs the rules extractor over ``resources/vocabulary`` on the report found between
``<report>`` and ``</report>`` in the last user message that has them (else the whole
last user message) and answers ``{"triplets": [...]}``. :func:`fixed_responder` answers
the same thing every time.

Faults
------
``server.fail_next(kind, n=1)`` queues ``kind`` for the next ``n`` chat requests (in
order, after what is already queued); ``server.fail_always(kind)`` applies it to every
request once the queue is empty (``None`` stops it). Kinds:

=====================  ==============================================================
``ok``                 no fault (queue ``fail_next("ok", 3)`` before a fault to delay it)
``rate_limit``         429 ``rate_limit_exceeded`` with Retry-After (``retry_after_s``)
``insufficient_quota`` 429 ``insufficient_quota`` (no Retry-After; retrying never helps)
``server_error``       500
``unavailable``        503 with Retry-After
``bad_request``        400 ``invalid_request_error``
``hang``               waits ``hang_s`` (default 5 s) before answering normally
``truncated``          the reply cut in half, ``finish_reason: "length"``
``truncated_stop``     the reply cut in half, ``finish_reason: "stop"``
``malformed``          a reply that is not JSON (single quotes, trailing comma)
``no_category``        a valid reply plus one triplet whose category is null (dropped)
``bad_polarity``       every triplet's polarity is ``"probable"`` (schema-invalid)
``extra_key``          every triplet gets a ``"confidence"`` key (schema-invalid)
``empty``              empty content
``refusal``            content null and ``message.refusal`` set
=====================  ==============================================================

Other knobs (plain attributes; ``reset()`` restores them):

* ``latency_s`` — seconds every chat request takes (HTTP only);
* ``retry_after_s`` (0.1), ``retry_after_header`` (``"both"``: ``retry-after`` in
  seconds and ``retry-after-ms``; or ``"s"``, ``"ms"``, ``"none"``);
* ``rpm_limit`` / ``window_s`` (60) — the server's own limit of chat requests per
  rolling window: beyond it a 429 with Retry-After until the oldest request leaves
  the window. Whatever the limit, ``max_in_window`` is the most requests that ever
  arrived within one rolling ``window_s``, and ``rate_limited`` counts 429s sent;
* ``tpm_limit`` — tokens (prompt estimate + ``max_tokens``) per window, for the headers;
* ``ratelimit_headers`` — when true, chat replies carry ``x-ratelimit-limit-*``,
  ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` (``"1.5s"``, ``"20ms"``,
  ``"6m0s"``) computed from the window; ``extra_headers`` (dict) is added to every
  chat reply and overrides them (e.g. ``{"x-ratelimit-remaining-requests": "0"}``);
* ``usage`` — ``(prompt_tokens, completion_tokens)`` to report on every reply;
* ``hang_s`` — how long ``hang`` waits; ``batch_polls``, ``batch_outcome`` (above);
* ``rejected_response_formats`` — ``response_format`` types answered with the 500 that
  llama-cpp-python's server gives a ``json_schema`` request (``{"json_schema"}`` acts like it).

Records
-------
``server.requests`` lists every request (``Recorded``: ``method``, ``path``, ``query``,
``time`` (``time.monotonic()`` at arrival), ``headers`` (lower-case names), ``body``
(parsed JSON, or for uploads the multipart fields with the file as
``{"filename", "bytes", "content"}``), ``status`` (answered), ``via_batch``,
``custom_id``, ``batch_id``). ``server.chat_requests(via_batch=False)`` and
``server.count(via_batch=False)`` give the chat-completion ones. ``server.files``
and ``server.batches`` hold the stored objects.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

REPO = Path(__file__).resolve().parents[2]
VOCABULARY_DIR = REPO / "resources" / "vocabulary"

FAULT_KINDS = {
    "ok",
    "rate_limit",
    "insufficient_quota",
    "server_error",
    "unavailable",
    "bad_request",
    "hang",
    "truncated",
    "truncated_stop",
    "malformed",
    "no_category",
    "bad_polarity",
    "extra_key",
    "empty",
    "refusal",
}
LLAMA_CPP_FORMAT_ERROR = (  # the message llama-cpp-python 0.3.36's server answers, with its 500
    "1 validation error:\n  {{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
    "\"Input should be 'text' or 'json_object'\", 'input': '{type}', 'ctx': {{'expected': \"'text' or "
    '\'json_object\'"}}}}\n\n  File "llama_cpp/server/app.py", line 376, in create_chat_completion\n'
    "    POST /v1/chat/completions"
)
_REPORT = re.compile(r"<report>\s*(.*?)\s*</report>", re.S)


# -- responders -----------------------------------------------------------------------------------
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def report_text_of(body: dict) -> str:
    """The report a chat request asks about: inside <report>...</report> of the last user message that has it."""
    users = [_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user"]
    for text in reversed(users):
        m = _REPORT.search(text)
        if m:
            return m.group(1)
    return users[-1] if users else ""


class RulesResponder:
    """Answers like an LLM would: the rules extractor's triplets for the report in the request."""

    def __init__(self, vocabulary_dir: str | Path = VOCABULARY_DIR):
        from medfilip.extraction.rules import RulesBackend

        self.extractor = RulesBackend(vocabulary_dir).extractor

    def __call__(self, body: dict) -> dict:
        if is_indexed(body):  # an indexed prompt: numbered sentences in, {"1": [{"c": ...}], "2": []} out
            reply = {}
            for n, sentence in numbered_sentences(body):
                reply[str(n)] = []
                for t in self.extractor.extract_sentence(sentence):
                    f = {"c": t.category, "p": t.polarity.value}
                    f.update({k: v for k, v in (("sev", t.severity), ("loc", t.location)) if v})
                    reply[str(n)].append(f)
            return reply
        triplets = self.extractor.extract_text(report_text_of(body))
        return {"triplets": [t.model_dump(mode="json") for t in triplets]}


_NUMBERED = re.compile(r"^(\d+)\. (.+)$", re.M)


def is_indexed(body: dict) -> bool:
    """The request asks for an indexed reply (its schema's keys are sentence numbers, or its system text
    shows such a reply)."""
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    if "1" in (schema.get("properties") or {}):
        return True
    system = [_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system"]
    return any('{"1":[' in s.replace(" ", "") for s in system)


def numbered_sentences(body: dict) -> list[tuple[int, str]]:
    """The numbered sentences of the first user message of an indexed request."""
    users = [_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user"]
    return [(int(n), s) for n, s in _NUMBERED.findall(users[0] if users else "")]


def fixed_responder(reply: dict | list | str) -> Callable[[dict], Any]:
    """A responder that always answers ``reply``."""
    return lambda body: copy.deepcopy(reply)


_default_responder: RulesResponder | None = None


def default_responder() -> RulesResponder:
    global _default_responder
    if _default_responder is None:
        _default_responder = RulesResponder()
    return _default_responder


# -- records --------------------------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    time: float
    headers: dict[str, str]
    body: Any
    status: int = 0
    via_batch: bool = False
    custom_id: str | None = None
    batch_id: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.path.endswith("/chat/completions")


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.type, self.code, self.headers = status, type_, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": None, "code": self.code}}


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s"


def _now() -> int:
    return int(time.time())


# -- the server -----------------------------------------------------------------------------------
class OpenAIServer:
    def __init__(self, api_key: str = "sk-test-medfilip-0000", host: str = "127.0.0.1"):
        self.api_key = api_key
        self.host = host
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._stop.clear()
        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def azure_endpoint(self) -> str:
        return self.url

    # -- configuration ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget records, stored files and batches, and restore every knob to its default."""
        with self._lock:
            self.requests: list[Recorded] = []
            self.files: dict[str, dict] = {}
            self.file_contents: dict[str, bytes] = {}
            self.batches: dict[str, dict] = {}
            self._batch_state: dict[str, dict] = {}
            self.responder: Callable[[dict], Any] = default_responder()
            self.latency_s = 0.0
            self.retry_after_s: float | None = 0.1
            self.retry_after_header = "both"
            self.hang_s = 5.0
            self.rpm_limit: int | None = None
            self.tpm_limit: int | None = None
            self.window_s = 60.0
            self.ratelimit_headers = False
            self.extra_headers: dict[str, str] = {}
            self.usage: tuple[int, int] | None = None
            self.batch_polls = 1
            self.batch_outcome = "completed"
            self.check_auth = True
            self.rejected_response_formats: set[str] = set()
            self._queue: deque[str] = deque()
            self._always: str | None = None
            self._arrivals: deque[float] = deque()  # every chat arrival in the window
            self._accepted: deque[tuple[float, int]] = deque()  # (time, tokens) of those not refused
            self.max_in_window = 0
            self.rate_limited = 0

    def fail_next(self, kind: str, n: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._queue.extend([kind] * n)

    def fail_always(self, kind: str | None) -> None:
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._always = kind

    # -- records ------------------------------------------------------------------------------
    def chat_requests(self, via_batch: bool | None = False) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.is_chat and (via_batch is None or r.via_batch == via_batch)]

    def count(self, via_batch: bool | None = False) -> int:
        return len(self.chat_requests(via_batch))

    def _record(self, rec: Recorded) -> Recorded:
        with self._lock:
            self.requests.append(rec)
        return rec

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._queue.popleft() if self._queue else self._always

    # -- chat ---------------------------------------------------------------------------------
    def _retry_headers(self, seconds: float | None) -> dict[str, str]:
        if seconds is None or self.retry_after_header == "none":
            return {}
        out = {}
        if self.retry_after_header in ("both", "s"):
            out["retry-after"] = f"{seconds:g}"
        if self.retry_after_header in ("both", "ms"):
            out["retry-after-ms"] = str(int(round(seconds * 1000)))
        return out

    def _window(self, tokens: int) -> dict[str, str]:
        """Count one HTTP chat arrival; refuse it beyond rpm_limit; the x-ratelimit headers."""
        with self._lock:
            now = time.monotonic()
            horizon = now - self.window_s
            while self._arrivals and self._arrivals[0] <= horizon:
                self._arrivals.popleft()
            while self._accepted and self._accepted[0][0] <= horizon:
                self._accepted.popleft()
            self._arrivals.append(now)
            self.max_in_window = max(self.max_in_window, len(self._arrivals))
            if self.rpm_limit is not None and len(self._accepted) >= self.rpm_limit:
                self.rate_limited += 1
                wait = self._accepted[0][0] + self.window_s - now
                raise HTTPError(
                    429,
                    f"Rate limit reached for requests: Limit {self.rpm_limit}, Used "
                    f"{len(self._accepted)}, Requested 1. Please try again in {format_reset(wait)}.",
                    "requests",
                    "rate_limit_exceeded",
                    self._retry_headers(max(wait, 0.001)),
                )
            self._accepted.append((now, tokens))
            headers: dict[str, str] = {}
            if self.ratelimit_headers:
                oldest = self._accepted[0][0]
                reset = max(0.0, oldest + self.window_s - now)
                if self.rpm_limit is not None:
                    headers["x-ratelimit-limit-requests"] = str(self.rpm_limit)
                    headers["x-ratelimit-remaining-requests"] = str(max(0, self.rpm_limit - len(self._accepted)))
                    headers["x-ratelimit-reset-requests"] = format_reset(reset)
                if self.tpm_limit is not None:
                    used = sum(t for _, t in self._accepted)
                    headers["x-ratelimit-limit-tokens"] = str(self.tpm_limit)
                    headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm_limit - used))
                    headers["x-ratelimit-reset-tokens"] = format_reset(reset)
            return headers

    def chat(self, body: Any, deployment: str | None = None, via_batch: bool = False) -> tuple[int, dict, dict]:
        """Answer one chat-completions request: (status, headers, JSON body)."""
        headers: dict[str, str] = {}
        try:
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
                raise HTTPError(400, "'messages' is a required property", code="invalid_request_error")
            model = body.get("model") or deployment
            if not model:
                raise HTTPError(400, "you must provide a model parameter", code="invalid_request_error")
            if not via_batch:
                if self.latency_s:
                    self._stop.wait(self.latency_s)
                chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
                headers.update(self._window(math.ceil(chars / 4) + int(body.get("max_tokens") or 0)))
            fmt = body.get("response_format")
            if isinstance(fmt, dict) and fmt.get("type") in self.rejected_response_formats:
                # what llama-cpp-python's server answers: its request model allows only text and
                # json_object, and its error handler turns the validation error into a 500
                raise HTTPError(500, LLAMA_CPP_FORMAT_ERROR.format(type=fmt.get("type")), "internal_server_error")
            fault = self._next_fault()
            if fault == "rate_limit":
                with self._lock:
                    self.rate_limited += 1
                raise HTTPError(
                    429,
                    "Rate limit reached for requests. Please try again later.",
                    "requests",
                    "rate_limit_exceeded",
                    self._retry_headers(self.retry_after_s),
                )
            if fault == "insufficient_quota":
                raise HTTPError(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota",
                    "insufficient_quota",
                )
            if fault == "server_error":
                raise HTTPError(
                    500, "The server had an error while processing your request. Sorry about that!", "server_error"
                )
            if fault == "unavailable":
                raise HTTPError(
                    503,
                    "The engine is currently overloaded, please try again later.",
                    "server_error",
                    headers=self._retry_headers(self.retry_after_s),
                )
            if fault == "bad_request":
                raise HTTPError(
                    400,
                    "Invalid request: this model's maximum context length was exceeded.",
                    code="context_length_exceeded",
                )
            if fault == "hang" and not via_batch:
                self._stop.wait(self.hang_s)
            reply = self.responder(body)
            content, finish, refusal = self._apply_reply_fault(fault, reply)
            prompt_chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
            if self.usage is not None:
                prompt_tokens, completion_tokens = self.usage
            else:
                prompt_tokens, completion_tokens = math.ceil(prompt_chars / 4), math.ceil(len(content or "") / 4)
            out = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": _now(),
                "model": model,
                "system_fingerprint": "fp_medfilip_test",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": refusal},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
            if not via_batch:
                headers.update(self.extra_headers)
            return 200, headers, out
        except HTTPError as err:
            return err.status, {**headers, **err.headers}, err.body()

    @staticmethod
    def _apply_reply_fault(fault: str | None, reply: Any) -> tuple[str | None, str, str | None]:
        if fault in ("no_category", "bad_polarity", "extra_key") and isinstance(reply, dict):
            reply = copy.deepcopy(reply)
            triplets = reply.setdefault("triplets", [])
            if fault == "no_category":
                triplets.append(
                    {
                        "severity": "mild",
                        "location": "left",
                        "category": None,
                        "polarity": "present",
                        "sentence": "Mild left change.",
                    }
                )
            else:
                if not triplets:
                    triplets.append(
                        {
                            "severity": None,
                            "location": None,
                            "category": "opacity",
                            "polarity": "present",
                            "sentence": "Opacity.",
                        }
                    )
                for t in triplets:
                    if fault == "bad_polarity":
                        t["polarity"] = "probable"
                    else:
                        t["confidence"] = 0.9
        content = reply if isinstance(reply, str) else json.dumps(reply)
        if fault in ("truncated", "truncated_stop"):
            return content[: max(1, len(content) // 2)], "length" if fault == "truncated" else "stop", None
        if fault == "malformed":
            return content.replace('"', "'").rstrip("}") + ",}", "stop", None
        if fault == "empty":
            return "", "stop", None
        if fault == "refusal":
            return None, "stop", "I'm sorry, I can't help with that."
        return content, "stop", None

    # -- files --------------------------------------------------------------------------------
    def add_file(self, content: bytes, filename: str, purpose: str) -> dict:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        obj = {
            "id": fid,
            "object": "file",
            "bytes": len(content),
            "created_at": _now(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        with self._lock:
            self.files[fid] = obj
            self.file_contents[fid] = content
        return obj

    def _file(self, fid: str) -> dict:
        with self._lock:
            if fid not in self.files:
                raise HTTPError(404, f"No such File object: {fid}", code="file_not_found")
            return self.files[fid]

    # -- batches ------------------------------------------------------------------------------
    def create_batch(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise HTTPError(400, "expected a JSON object")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(key):
                raise HTTPError(400, f"Missing required parameter: '{key}'.", code="missing_required_parameter")
        if body["endpoint"] not in ("/v1/chat/completions", "/chat/completions"):
            raise HTTPError(400, f"Invalid endpoint {body['endpoint']!r}: this server batches /v1/chat/completions")
        if body["completion_window"] != "24h":
            raise HTTPError(400, "Invalid completion_window: only '24h' is supported.")
        fobj = self._file(body["input_file_id"])
        if fobj["purpose"] != "batch":
            raise HTTPError(400, f"File {fobj['id']} has purpose {fobj['purpose']!r}, not 'batch'.")
        lines, errors = self._validate_batch_lines(self.file_contents[fobj["id"]], body["endpoint"])
        bid = f"batch_{uuid.uuid4().hex[:24]}"
        now = _now()
        batch = {
            "id": bid,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": fobj["id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 24 * 3600,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        with self._lock:
            if errors:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
                batch["request_counts"]["total"] = 0
            self.batches[bid] = batch
            self._batch_state[bid] = {"pending": deque(lines), "ok": [], "err": [], "polls": 0}
            return copy.deepcopy(batch)

    @staticmethod
    def _validate_batch_lines(content: bytes, endpoint: str) -> tuple[list[dict], list[dict]]:
        lines, errors, seen = [], [], set()
        want = endpoint if endpoint.startswith("/v1") else "/v1" + endpoint
        for i, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                errors.append(
                    {
                        "code": "invalid_json_line",
                        "message": "This line is not parseable as valid JSON.",
                        "param": None,
                        "line": i,
                    }
                )
                continue
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(line, dict) or not isinstance(cid, str) or not isinstance(line.get("body"), dict):
                errors.append(
                    {
                        "code": "invalid_request",
                        "message": "Each line needs custom_id, method, url and body.",
                        "param": None,
                        "line": i,
                    }
                )
                continue
            if cid in seen:
                errors.append(
                    {
                        "code": "duplicate_custom_id",
                        "message": f"The custom_id {cid!r} is not unique.",
                        "param": "custom_id",
                        "line": i,
                    }
                )
                continue
            url = line.get("url", "")
            if line.get("method") != "POST" or (url if url.startswith("/v1") else "/v1" + url) != want:
                errors.append(
                    {
                        "code": "mismatched_endpoint",
                        "message": f"The url {url!r} does not match the batch endpoint {endpoint!r} (method POST).",
                        "param": "url",
                        "line": i,
                    }
                )
                continue
            seen.add(cid)
            lines.append(line)
        if not lines and not errors:
            errors.append(
                {"code": "empty_file", "message": "The input file has no requests.", "param": None, "line": None}
            )
        return lines, errors

    def _run_batch_line(self, bid: str, line: dict) -> None:
        rec = self._record(
            Recorded(
                "POST",
                line.get("url", "/v1/chat/completions"),
                {},
                time.monotonic(),
                {},
                line["body"],
                via_batch=True,
                custom_id=line["custom_id"],
                batch_id=bid,
            )
        )
        status, _headers, body = self.chat(line["body"], via_batch=True)
        rec.status = status
        out = {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": line["custom_id"],
            "response": {"status_code": status, "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": body},
            "error": None,
        }
        state = self._batch_state[bid]
        (state["ok"] if status == 200 else state["err"]).append(out)

    def _finalize_batch(self, bid: str, status: str) -> None:
        batch, state = self.batches[bid], self._batch_state[bid]
        now = _now()
        if state["ok"]:
            batch["output_file_id"] = self.add_file(
                "".join(json.dumps(x) + "\n" for x in state["ok"]).encode(), f"batch_{bid}_output.jsonl", "batch_output"
            )["id"]
        if state["err"]:
            batch["error_file_id"] = self.add_file(
                "".join(json.dumps(x) + "\n" for x in state["err"]).encode(), f"batch_{bid}_error.jsonl", "batch_output"
            )["id"]
        batch["status"] = status
        batch["finalizing_at"] = batch["finalizing_at"] or now
        batch[f"{status}_at"] = now

    def poll_batch(self, bid: str) -> dict:
        with self._lock:
            if bid not in self.batches:
                raise HTTPError(404, f"No batch found with id '{bid}'.", code="batch_not_found")
            batch, state = self.batches[bid], self._batch_state[bid]
            if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                return copy.deepcopy(batch)
            if batch["status"] == "cancelling":
                self._finalize_batch(bid, "cancelled")
                return copy.deepcopy(batch)
            state["polls"] += 1
            if batch["status"] == "validating":
                batch["status"], batch["in_progress_at"] = "in_progress", _now()
            if self.batch_outcome == "failed":
                batch["errors"] = {
                    "object": "list",
                    "data": [
                        {
                            "code": "server_error",
                            "message": "The batch failed on the server.",
                            "param": None,
                            "line": None,
                        }
                    ],
                }
                batch["status"], batch["failed_at"] = "failed", _now()
                return copy.deepcopy(batch)
            total = batch["request_counts"]["total"]
            polls = max(1, int(self.batch_polls))
            target = total if state["polls"] >= polls else math.ceil(total * state["polls"] / polls)
            if self.batch_outcome == "expired":
                target = min(target, total // 2)
            while state["pending"] and total - len(state["pending"]) < target:
                self._run_batch_line(bid, state["pending"].popleft())
            batch["request_counts"].update(completed=len(state["ok"]), failed=len(state["err"]))
            if state["polls"] >= polls:
                if self.batch_outcome == "expired":
                    for line in state["pending"]:
                        state["err"].append(
                            {
                                "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                                "custom_id": line["custom_id"],
                                "response": None,
                                "error": {
                                    "code": "batch_expired",
                                    "message": "This request could "
                                    "not be executed before the completion window expired.",
                                },
                            }
                        )
                    state["pending"].clear()
                    batch["request_counts"].update(failed=len(state["err"]))
                    self._finalize_batch(bid, "expired")
                else:
                    self._finalize_batch(bid, "completed")
            return copy.deepcopy(batch)

    def cancel_batch(self, bid: str) -> dict:
        with self._lock:
            if bid not in self.batches:
                raise HTTPError(404, f"No batch found with id '{bid}'.", code="batch_not_found")
            batch = self.batches[bid]
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"], batch["cancelling_at"] = "cancelling", _now()
            elif batch["status"] != "cancelling":
                raise HTTPError(409, f"Cannot cancel a batch with status {batch['status']!r}.")
            return copy.deepcopy(batch)


# -- HTTP -----------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"
    server_version = "medfilip-openai-test/1.0"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _send(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            self.close_connection = True

    def _read_body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self) -> bool:
        key = self.owner.api_key
        auth = self.headers.get("authorization", "")
        return not self.owner.check_auth or auth == f"Bearer {key}" or self.headers.get("api-key") == key

    def _parse(self, raw: bytes) -> Any:
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"content-type: {ctype}\r\n\r\n".encode() + raw
            )
            fields: dict[str, Any] = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                filename = part.get_filename()
                content = part.get_payload(decode=True) or b""
                fields[name] = (
                    {"filename": filename, "bytes": len(content), "content": content}
                    if filename is not None
                    else content.decode("utf-8", "replace")
                )
            return fields
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise HTTPError(400, "We could not parse the JSON body of your request.") from None

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        raw = self._read_body()
        rec = self.owner._record(
            Recorded(method, parts.path, query, time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, None)
        )
        try:
            rec.body = self._parse(raw)
            if not self._authorised():
                key = self.headers.get("authorization", "").removeprefix("Bearer ") or self.headers.get("api-key") or ""
                masked = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
                raise HTTPError(
                    401,
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
            status, headers, payload, ctype = self._route(method, parts.path, query, rec)
        except HTTPError as err:
            status, headers, payload, ctype = err.status, err.headers, err.body(), "application/json"
        rec.status = status
        self._send(status, payload, headers, ctype)

    def _route(self, method: str, path: str, query: dict, rec: Recorded) -> tuple[int, dict, Any, str]:
        owner = self.owner
        deployment = None
        if path.startswith("/openai/"):
            if "api-version" not in query:
                raise HTTPError(404, "Resource not found: the api-version query parameter is required.", code="404")
            m = re.fullmatch(r"/openai/deployments/([^/]+)(/.*)", path)
            if m:
                deployment, path = m.group(1), m.group(2)
            else:
                path = path.removeprefix("/openai")
        else:
            path = path.removeprefix("/v1")
        js = "application/json"
        if method == "POST" and path == "/chat/completions":
            status, headers, body = owner.chat(rec.body, deployment)
            return status, headers, body, js
        if method == "POST" and path == "/files":
            fields = rec.body if isinstance(rec.body, dict) else {}
            upload = fields.get("file")
            if not isinstance(upload, dict) or not fields.get("purpose"):
                raise HTTPError(400, "Upload needs multipart fields 'file' and 'purpose'.")
            return 200, {}, owner.add_file(upload["content"], upload["filename"] or "upload", fields["purpose"]), js
        m = re.fullmatch(r"/files/([^/]+)(/content)?", path)
        if m and method == "GET":
            fobj = owner._file(m.group(1))
            if m.group(2):
                return 200, {}, owner.file_contents[fobj["id"]], "application/octet-stream"
            return 200, {}, fobj, js
        if m and method == "DELETE" and not m.group(2):
            fobj = owner._file(m.group(1))
            with owner._lock:
                owner.files.pop(fobj["id"], None)
                owner.file_contents.pop(fobj["id"], None)
            return 200, {}, {"id": fobj["id"], "object": "file", "deleted": True}, js
        if method == "POST" and path == "/batches":
            return 200, {}, owner.create_batch(rec.body), js
        if method == "GET" and path == "/batches":
            with owner._lock:
                data = [copy.deepcopy(b) for b in reversed(list(owner.batches.values()))]
            return (
                200,
                {},
                {
                    "object": "list",
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
                js,
            )
        m = re.fullmatch(r"/batches/([^/]+)(/cancel)?", path)
        if m and method == "GET" and not m.group(2):
            return 200, {}, owner.poll_batch(m.group(1)), js
        if m and method == "POST" and m.group(2):
            return 200, {}, owner.cancel_batch(m.group(1)), js
        raise HTTPError(404, f"Invalid URL ({method} {rec.path})", code="unknown_url")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")
