"""Config sections `extraction:` and `quality:` (imported by medfilip.pipeline.config; keep this module free of heavy
imports)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from medfilip.configbase import RerunKeys, Strict


class RulesBackendConfig(Strict):
    vocabulary_dir: Path = Field(Path("resources/vocabulary"), description="Folder of the rules vocabularies (YAML)")


class ModelPrice(Strict):
    input_per_mtok: float = Field(..., ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(..., ge=0, description="USD per million completion tokens")


class BatchConfig(Strict):
    max_requests_per_batch: int = Field(
        50_000, ge=1, le=50_000, description="Requests per uploaded JSONL (API cap 50,000)"
    )
    max_enqueued_requests: int = Field(
        1_000_000, ge=1, description="Requests in flight across batches at once (your organisation's queue limit)"
    )
    poll_interval_s: float = Field(30.0, gt=0, le=3600, description="Seconds between batch status polls")
    completion_window: Literal["24h"] = Field("24h", description="Batch API completion window")
    discount: float = Field(0.5, ge=0, le=1, description="Price factor of batch requests relative to synchronous ones")


class OpenAIBackendConfig(Strict):
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (vLLM, Ollama, Azure ...); null = api.openai.com"
    )
    model: str = Field("gpt-4o-mini", min_length=1, description="Model (or Azure deployment) name")
    api_key_env: str = Field(
        "OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable that holds the API key"
    )
    azure_api_version: str | None = Field(None, description="Set for Azure OpenAI (e.g. 2024-10-21); null otherwise")
    prompt: Path = Field(
        Path("resources/prompts/triplets.yaml"), description="Prompt file (its version is in the cache key)"
    )
    mode: Literal["sync", "batch"] = Field("sync", description="sync: concurrent requests; batch: the Batch API")
    max_concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once")
    requests_per_minute: int = Field(500, ge=1, description="Client-side request rate limit")
    tokens_per_minute: int = Field(200_000, ge=1, description="Client-side token rate limit")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Timeout of one request")
    max_retries: int = Field(6, ge=0, le=50, description="Retries of one request on 429, 5xx and timeouts")
    max_output_tokens: int = Field(1024, ge=16, le=65_536, description="Completion token cap per report")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 = the most likely reply")
    presence_penalty: float = Field(
        0.0,
        ge=-2,
        le=2,
        description="OpenAI's presence_penalty: > 0 makes a token already in the reply less likely (a small "
        "model then stops copying one finding into every sentence); 0 = not sent",
    )
    structured_output: Literal["json_schema", "json_object_schema", "json_object", "auto", "none"] = Field(
        "json_schema",
        description="How to ask for JSON: json_schema (OpenAI strict structured outputs, vLLM); json_object_schema "
        "({type: json_object, schema}: llama.cpp's server, which turns it into a grammar); json_object "
        "(JSON mode, no schema); auto (json_schema, and json_object_schema from the first time the "
        "server rejects json_schema); none (the prompt alone)",
    )
    model_file: str | None = Field(
        None,
        description="The local model file the server runs (a GGUF): its sha256 joins the cache key, so a new file "
        "re-extracts and an unchanged one never does; 'packaged' = the GGUF of extraction.local_llm.model, "
        "assembled from its PyPI packages (make local-llm); null = the model name alone identifies the model",
    )
    batch: BatchConfig = Field(BatchConfig(), description="Settings of mode batch (the Batch API)")


class LocalLLMConfig(Strict):
    """The local LLM server (``medfilip llm-server``) that ``openai.model_file: packaged`` runs."""

    model: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m"] = Field(
        "qwen2.5-coder-1.5b",
        description="The packaged GGUF: Qwen2.5-Coder-1.5B-Instruct or -0.5B-Instruct (Q4_K_M), or Gemma 3 270M "
        "base (a plumbing check: it does not label)",
    )
    engine: Literal["xllamacpp", "llama-cpp-python"] = Field(
        "xllamacpp",
        description="xllamacpp (a prebuilt wheel: make local-llm) or llama-cpp-python's server (built from "
        "source: make local-llm LLM_ENGINE=llama-cpp-python)",
    )
    threads: int = Field(2, ge=1, le=256, description="CPU threads of the server")
    n_ctx: int = Field(
        2048, ge=512, le=131_072, description="Context window in tokens (the prompt, a long report and the reply)"
    )


# a value, not a default_factory, so that the generated schema states it
DEFAULT_PRICES = {
    "gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
    "gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
    "gpt-4.1-mini": ModelPrice(input_per_mtok=0.40, output_per_mtok=1.60),
    "gpt-3.5-turbo": ModelPrice(input_per_mtok=0.50, output_per_mtok=1.50),
}


# the keys of extraction.openai that change an LLM's reply (besides the prompt file): the backend's
# version (its cache key, medfilip.extraction.openai.version.generation_settings) and extraction's re-runs
GENERATION_KEYS = ("model", "temperature", "max_output_tokens", "presence_penalty", "structured_output", "model_file")


class ExtractionConfig(Strict):
    rerun_keys: ClassVar[RerunKeys] = {
        # openai only (extraction_settings in common.smk); the rules backend's vocabulary is an input;
        # a packaged model file is local_llm.model's
        "extract_triplets": (*(f"openai.{key}" for key in GENERATION_KEYS), "local_llm.model"),
    }

    backend: Literal["rules", "openai"] = Field("rules", description="Extraction backend")
    flush_every: int = Field(200, ge=1, le=1_000_000, description="Reports per cache write (what a kill can lose)")
    max_failure_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of a shard's reports whose extraction may fail before the stage stops; "
        "null = 0 for the openai backend (any failure stops it), 1 for rules",
    )
    retry_failed: bool = Field(False, description="Extract again the reports whose cached result failed")
    rules: RulesBackendConfig = Field(RulesBackendConfig(), description="Settings of the offline rules backend")
    openai: OpenAIBackendConfig = Field(
        OpenAIBackendConfig(),
        description="Settings of the openai backend (OpenAI, Azure OpenAI, vLLM, Ollama ...)",
    )
    prices: dict[str, ModelPrice] = Field(
        DEFAULT_PRICES,
        description="USD prices per model for cost accounting; a model not listed costs 0 (local servers)",
    )
    local_llm: LocalLLMConfig = Field(
        LocalLLMConfig(), description="The local LLM server that openai.model_file: packaged runs (llm-server)"
    )

    @model_validator(mode="before")
    @classmethod
    def _packaged_names_the_model(cls, data):
        """``openai.model_file: packaged`` becomes ``packaged:<local_llm.model>``: the model's sha256
        (the cache key) then follows local_llm.model wherever only the openai section is at hand."""
        if not isinstance(data, dict) or not isinstance(data.get("openai"), dict):
            return data
        if data["openai"].get("model_file") != "packaged":
            return data
        local = data.get("local_llm") or {}
        model = local.model if isinstance(local, LocalLLMConfig) else local.get("model", "qwen2.5-coder-1.5b")
        return {**data, "openai": {**data["openai"], "model_file": f"packaged:{model}"}}

    def failure_share_limit(self) -> float:
        """The share of failed reports a shard may have: max_failure_share, or the backend's default
        (paid LLM calls stop at the first failure; the offline rules backend never stops)."""
        if self.max_failure_share is not None:
            return float(self.max_failure_share)
        return 0.0 if self.backend == "openai" else 1.0


class QualityConfig(Strict):
    mesh_mapping: Path = Field(
        Path("resources/mesh/mesh_to_category.yaml"), description="MeSH term -> canonical category mapping"
    )
