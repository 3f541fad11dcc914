"""The ``openai`` extraction backend: GPT-IE over any OpenAI-compatible endpoint, one job a module.

OpenAI, Azure OpenAI (``azure_api_version`` set), vLLM, Ollama or anything that speaks
``POST /v1/chat/completions``. One report is one chat completion whose reply is a JSON object
``{"triplets": [...]}`` validated by the pydantic :class:`~medfilip.extraction.schema.Triplet` schema.

Modules (each imports the others it needs at its top; nothing is imported here, so that
``medfilip.extraction.openai.prompt`` and ``.version`` load without the openai SDK):

* :mod:`.prompt` -- the prompt file: :class:`Prompt`, :func:`load_prompt`, :func:`prompt_categories`;
* :mod:`.request` -- the chat-completions body: :func:`build_request`, :func:`response_format`,
  :func:`triplets_json_schema`, :func:`corrective_request`;
* :mod:`.version` -- what changes a reply: :func:`generation_settings` (a Snakemake param) and
  :func:`backend_version` (the cache key's version part);
* :mod:`.reply` -- a completion's reply: :class:`Reply`, :func:`reply_of`, :func:`parse_reply`,
  :class:`ReplyError`;
* :mod:`.accounting` -- tokens and money: :func:`estimate_tokens`, :class:`Usage`, :func:`price_of`,
  :func:`cost_usd`;
* :mod:`.credentials` -- the API key: :func:`read_api_key`, :func:`redact_secret`;
* :mod:`.endpoint` -- where reports go: :func:`is_local_url`, :func:`warn_if_mimic_online`;
* :mod:`.api_errors` -- what an SDK error means and the message it gives;
* :mod:`.retry` -- which errors are retried and how long to wait;
* :mod:`.client` -- the openai SDK clients (async for sync mode, sync for the Batch API);

the synchronous mode:

* :mod:`.backend` -- :class:`OpenAIBackend`: settings, prompt, version and cache key, request and
  parsing, and ``extract()`` with the run's log lines and request counts (``stats``);
* :mod:`.loop_thread` -- :func:`iterate_in_thread`: the event loop in a worker thread behind ``extract()``;
* :mod:`.report_call` -- :class:`ReportExtractor`: ``max_concurrency`` workers, one report's format
  fallback, corrective re-ask and result;
* :mod:`.completion` -- :class:`ChatCompleter`: one chat completion through the rate limiter and the
  retries, and what its failure means (this report, or the run);
* :mod:`.output_format` -- :class:`OutputFormat`: the structured-output mode, ``auto``'s one switch;

the Batch API mode:

* :mod:`.batch` -- :class:`OpenAIBatchBackend` and :func:`result_of_line`;
* :mod:`.batch_runner` -- :class:`BatchRunner`: schedules chunks (submit, wait, collect, requeue);
* :mod:`.batch_index` -- :class:`ChunkIndex`: the folder's chunks, which holds each key, hand-overs;
* :mod:`.batch_input` -- what goes into a chunk (size caps) and its JSONL request lines;
* :mod:`.batch_steps` -- :class:`ChunkSteps`: a chunk's upload, create, poll and download, resumably;
* :mod:`.batch_server` -- :class:`BatchServer`: the Batch API calls, and finding them again after a kill;
* :mod:`.batch_results` -- a ready chunk's results, and the keys to send again;
* :mod:`.batch_lines` -- fields of the Batch API's objects and lines;
* :mod:`.batch_store` -- the persisted chunk states (:class:`BatchStore`, :func:`batch_summary`).

Structured output (``extraction.openai.structured_output``): ``json_schema`` (OpenAI strict
structured outputs; vLLM), ``json_object_schema`` (``{"type": "json_object", "schema": ...}``,
llama.cpp's form, compiled into a grammar), ``json_object`` (JSON mode), ``none``, or ``auto``:
json_schema until the server rejects it (llama-cpp-python answers a 500 naming it), then
json_object_schema for the rest of the run. A mode the server rejects stops the run with a message
naming the mode to use, rather than failing every report.

Reliability: requests go out through one client-side :class:`~medfilip.extraction.ratelimit.RateLimiter`
(requests and tokens per minute, steered by the server's ``x-ratelimit-*`` headers); 429, 5xx,
timeouts and connection errors are retried by tenacity honouring ``Retry-After`` (the SDK's own
retries are off); a reply that does not validate is asked again once with the error, then recorded
as failed. An exhausted quota (429 ``insufficient_quota``), a rejected key or an unknown model stops
the run with :class:`~medfilip.extraction.backend.ExtractionAborted`; the runner keeps what finished.
The API key is read from the environment, and is redacted from every message this package produces;
no report text is logged at INFO.
"""
