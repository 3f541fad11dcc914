"""The openai backend against a real OpenAI-compatible HTTP server on 127.0.0.1 (openai_server.py).

Latencies, Retry-After and rate-limit windows are scaled down (tens of milliseconds,
one-second windows) so that the whole module runs in well under a minute.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from openai_server import OpenAIServer, RulesResponder, fixed_responder
from workflow_helpers import snakemake

from medfilip.configbase import ConfigError
from medfilip.extraction.backend import ExtractionAborted, ReportText
from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.openai import endpoint
from medfilip.extraction.openai.accounting import price_of
from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.openai.prompt import load_prompt, prompt_categories
from medfilip.extraction.openai.reply import ReplyError, parse_reply, reply_of
from medfilip.extraction.openai.request import build_request, corrective_request
from medfilip.extraction.openai.version import generation_settings
from medfilip.extraction.runner import extract_shard
from medfilip.extraction.settings import ExtractionConfig, ModelPrice, OpenAIBackendConfig
from medfilip.io import write_parquet_atomic
from medfilip.reports.records import Report
from medfilip.reports.shards import reports_table

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ROOT / "resources" / "prompts" / "triplets.yaml"
FINDINGS = [
    "Mild cardiomegaly.",
    "No pleural effusion.",
    "Small left pleural effusion.",
    "Right lower lobe atelectasis.",
    "Possible pneumonia.",
    "Calcified granuloma.",
    "Low lung volumes.",
    "Degenerative changes of the spine.",
]


def write_shard(path: Path, n: int) -> list[str]:
    reports = [
        Report(f"r{i:05d}", "test", f"p{i}", f"s{i}", f"Report {i}. {FINDINGS[i % len(FINDINGS)]}", "", "train")
        for i in range(n)
    ]
    write_parquet_atomic(reports_table(reports), path)
    return [r.report_id for r in reports]


def config(server: OpenAIServer, **kw) -> OpenAIBackendConfig:
    kw.setdefault("base_url", server.base_url)
    kw.setdefault("requests_per_minute", 100_000)
    kw.setdefault("tokens_per_minute", 10**9)
    kw.setdefault("timeout_s", 5.0)
    return OpenAIBackendConfig(**kw)


def backend(server: OpenAIServer, *, window_s: float = 60.0, prices=None, **kw) -> OpenAIBackend:
    return OpenAIBackend(
        config(server, **kw),
        api_key=server.api_key,
        window_s=window_s,
        backoff_s=0.01,
        backoff_max_s=0.05,
        prices=prices,
    )


def reports(n: int, offset: int = 0) -> list[ReportText]:
    return [ReportText(f"r{i}", f"Report {i}. {FINDINGS[i % len(FINDINGS)]}") for i in range(offset, offset + n)]


def one(b: OpenAIBackend, text: str = "Small left pleural effusion. No pneumothorax."):
    (result,) = list(b.extract([ReportText("r0", text)]))
    return result


# -- request and reply ---------------------------------------------------------------------------
def test_build_request_asks_for_a_strict_json_schema():
    prompt = load_prompt(PROMPT)
    body = build_request(prompt, "Mild cardiomegaly.", OpenAIBackendConfig(temperature=0.0, max_output_tokens=512))
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.0 and body["max_tokens"] == 512
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "<report>\nMild cardiomegaly.\n</report>" in body["messages"][1]["content"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    item = schema["properties"]["triplets"]["items"]
    assert schema["required"] == ["triplets"] and schema["additionalProperties"] is False
    assert item["additionalProperties"] is False
    assert (
        set(item["required"]) == set(item["properties"]) == {"severity", "location", "category", "polarity", "sentence"}
    )
    assert item["properties"]["polarity"]["enum"] == ["present", "negated", "uncertain"]
    assert item["properties"]["severity"]["type"] == ["string", "null"]
    assert item["properties"]["category"]["type"] == "string"
    json.dumps(body)  # plain data, ready for a Batch API line

    assert build_request(prompt, "x", OpenAIBackendConfig(structured_output="json_object"))["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in build_request(prompt, "x", OpenAIBackendConfig(structured_output="none"))


def test_parse_reply_accepts_valid_replies_and_drops_uncategorised():
    content = json.dumps(
        {
            "triplets": [
                {
                    "severity": "Small",
                    "location": "left",
                    "category": "Pleural Effusion",
                    "polarity": "present",
                    "sentence": "Small left pleural effusion.",
                },
                {"severity": None, "location": None, "category": None, "polarity": "negated", "sentence": "No x."},
                {
                    "severity": None,
                    "location": None,
                    "category": "pneumothorax",
                    "polarity": "negated",
                    "sentence": "No pneumothorax.",
                },
            ]
        }
    )
    triplets, dropped = parse_reply(content, "stop")
    assert dropped == 1
    assert [(t.severity, t.category, t.polarity.value) for t in triplets] == [
        ("small", "pleural effusion", "present"),
        (None, "pneumothorax", "negated"),
    ]
    # fenced JSON and a bare list, as local models write them
    assert parse_reply("```json\n" + content + "\n```")[1] == 1
    assert len(parse_reply(json.dumps([{"category": "opacity"}]))[0]) == 1
    assert parse_reply('{"triplets": []}') == ([], 0)


@pytest.mark.parametrize(
    "content, finish, reason",
    [
        ('{"triplets": [{"category": "opacity", "polarity": "pres', "stop", "truncated JSON"),
        ('{"triplets": [{"category": "opacity"}]}', "length", "truncated reply"),
        ("{'triplets': []}", "stop", "malformed JSON"),
        ('{"triplets": [{"category": "opacity"},]}', "stop", "malformed JSON"),
        ('{"findings": []}', "stop", "'triplets' list"),
        ('{"triplets": [{"category": "opacity", "polarity": "probable"}]}', "stop", "'probable' is not one of"),
        ('{"triplets": [{"category": "opacity", "confidence": 0.9}]}', "stop", "'confidence': unexpected key"),
        ('{"triplets": ["opacity"]}', "stop", "triplet 0 is a str"),
        ("", "stop", "empty reply"),
    ],
)
def test_parse_reply_gives_a_clear_reason(content, finish, reason):
    with pytest.raises(ReplyError, match=reason):
        parse_reply(content, finish)


def test_reply_of_reads_a_completion_body():
    body = {
        "choices": [{"message": {"content": '{"triplets": []}', "refusal": None}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 700, "completion_tokens": 20},
    }
    reply = reply_of(body)
    assert (reply.content, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens) == (
        '{"triplets": []}',
        "stop",
        700,
        20,
    )
    with pytest.raises(ReplyError, match="refused"):
        parse_reply(None, "stop", "I can't help with that")


def test_corrective_request_appends_the_reply_and_the_error():
    body = build_request(load_prompt(PROMPT), "Mild cardiomegaly.", OpenAIBackendConfig())
    again = corrective_request(body, '{"triplets": [', "truncated JSON")
    assert again["messages"][:2] == body["messages"] and len(body["messages"]) == 2
    assert again["messages"][2] == {"role": "assistant", "content": '{"triplets": ['}
    assert again["messages"][3]["role"] == "user" and "truncated JSON" in again["messages"][3]["content"]
    assert {k: v for k, v in again.items() if k != "messages"} == {k: v for k, v in body.items() if k != "messages"}


def test_prompt_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nsystem: s\nuser: no placeholder\n")
    with pytest.raises(ConfigError, match=r"p.yaml: the user template has no \{report\}"):
        load_prompt(bad)
    bad.write_text("system: s\nuser: '{report}'\n")
    with pytest.raises(ConfigError, match="'version' is missing"):
        load_prompt(bad)
    bad.write_text("version: 1\nsystem: s\nuser: '{report}'\nexamples: []\n")
    with pytest.raises(ConfigError, match="unknown prompt key"):
        load_prompt(bad)
    with pytest.raises(ConfigError, match="prompt file not found"):
        load_prompt(tmp_path / "missing.yaml")


def test_version_follows_the_prompt_and_generation_settings_only(openai_server, tmp_path):
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text(PROMPT.read_text())
    base = backend(openai_server, prompt=prompt)
    assert base.version.startswith("triplets-v1+") and base.model == "gpt-4o-mini"
    assert (
        backend(openai_server, prompt=prompt, base_url="http://127.0.0.1:1/v1", max_concurrency=3).version
        == base.version
    )
    assert backend(openai_server, prompt=prompt, temperature=0.5).version != base.version
    with open(prompt, "a") as fh:
        fh.write("# edited\n")
    assert backend(openai_server, prompt=prompt).version != base.version
    assert "sk-" not in repr(base)


# -- the backend through the runner -----------------------------------------------------------------
def test_extracts_through_the_runner_and_a_rerun_makes_no_request(openai_server, tmp_path):
    ids = write_shard(tmp_path / "000.parquet", 24)
    cache = ExtractionCache(tmp_path / "cache")
    b = backend(openai_server, max_concurrency=4)
    openai_server.latency_s = 0.01
    run = extract_shard(
        tmp_path / "000.parquet",
        b,
        cache,
        tmp_path / "out.parquet",
        runs_dir=tmp_path / "runs",
        flush_every=5,
        progress=False,
    )
    assert openai_server.count() == 24 and run.n_extracted == 24 and run.n_failed == 0
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["report_id"] for r in table] == ids
    assert {r["backend"] for r in table} == {"openai"} and {r["model"] for r in table} == {"gpt-4o-mini"}
    # the replies are what the rules extractor finds in each report
    rules = RulesResponder()
    for row in table:
        text = f"Report {int(row['report_id'][1:])}. {FINDINGS[int(row['report_id'][1:]) % len(FINDINGS)]}"
        expected = rules({"messages": [{"role": "user", "content": f"<report>{text}</report>"}]})["triplets"]
        assert [(t["category"], t["polarity"]) for t in row["triplets"]] == [
            (e["category"].lower(), e["polarity"]) for e in expected
        ]
    assert run.prompt_tokens == sum(r["prompt_tokens"] for r in table) > 24 * 500
    assert run.completion_tokens == sum(r["completion_tokens"] for r in table) > 0

    run2 = extract_shard(
        tmp_path / "000.parquet",
        backend(openai_server),
        cache,
        tmp_path / "out.parquet",
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    assert openai_server.count() == 24, "a re-run sends no request"
    assert run2.n_cached == 24 and run2.n_extracted == 0 and run2.cost_usd == 0


def test_cost_accounting(openai_server, tmp_path):
    write_shard(tmp_path / "000.parquet", 5)
    openai_server.usage = (1000, 200)
    prices = {"gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60)}
    run = extract_shard(
        tmp_path / "000.parquet",
        backend(openai_server, prices=prices),
        ExtractionCache(tmp_path / "c"),
        tmp_path / "out.parquet",
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    assert (run.prompt_tokens, run.completion_tokens) == (5000, 1000)
    assert run.cost_usd == pytest.approx(5 * (1000 * 0.15 + 200 * 0.60) / 1e6)
    recorded = pq.read_table(tmp_path / "runs").to_pylist()[0]
    assert recorded["cost_usd"] == pytest.approx(run.cost_usd) and recorded["prompt_tokens"] == 5000
    # a dated model takes its family's price; an unknown (local) model costs nothing
    defaults = ExtractionConfig().prices
    assert price_of("gpt-4o-mini-2024-07-18", defaults) == defaults["gpt-4o-mini"]
    assert price_of("gpt-4o-2024-08-06", defaults) == defaults["gpt-4o"]
    assert price_of("llama3.1:8b", defaults) is None
    assert backend(openai_server, model="llama3.1:8b", prices=defaults).cost(10**6, 10**6) == 0


def test_azure_path_and_header(openai_server):
    b = OpenAIBackend(
        config(
            openai_server,
            base_url=openai_server.azure_endpoint,
            azure_api_version="2024-10-21",
            model="triplets-deployment",
            api_key_env="AZURE_OPENAI_API_KEY",
        ),
        api_key=openai_server.api_key,
    )
    assert one(b).status == "ok"
    (req,) = openai_server.chat_requests()
    assert req.path == "/openai/deployments/triplets-deployment/chat/completions"
    assert req.query == {"api-version": "2024-10-21"}
    assert req.headers["api-key"] == openai_server.api_key and "authorization" not in req.headers


# -- retries --------------------------------------------------------------------------------------
def test_server_errors_are_retried_until_success(openai_server):
    openai_server.fail_next("server_error", 2)
    openai_server.fail_next("unavailable")
    result = one(backend(openai_server, max_retries=6))
    assert result.status == "ok" and openai_server.count() == 4
    assert [r.status for r in openai_server.chat_requests()] == [500, 500, 503, 200]


def test_retries_are_capped_and_the_report_fails_without_crashing(openai_server, tmp_path):
    openai_server.fail_always("server_error")
    write_shard(tmp_path / "000.parquet", 3)
    run = extract_shard(
        tmp_path / "000.parquet",
        backend(openai_server, max_retries=2),
        ExtractionCache(tmp_path / "c"),
        tmp_path / "out.parquet",
        progress=False,
    )
    assert run.n_failed == 3 and openai_server.count() == 3 * 3
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"failed"}
    assert all(r["error"].startswith("HTTP 500") and "gave up after 3 attempts" in r["error"] for r in rows)


@pytest.mark.parametrize("header", ["both", "ms", "s"])
def test_retry_after_is_honoured(openai_server, header):
    openai_server.retry_after_s = 0.3
    openai_server.retry_after_header = header
    openai_server.fail_next("rate_limit")
    assert one(backend(openai_server)).status == "ok"
    first, second = openai_server.chat_requests()
    assert first.status == 429 and second.status == 200
    assert 0.3 <= second.time - first.time < 1.0


def test_timeouts_and_connection_errors_are_retried(openai_server):
    openai_server.hang_s = 2.0
    openai_server.fail_next("hang")
    assert one(backend(openai_server, timeout_s=0.3)).status == "ok"
    assert openai_server.count() == 2
    openai_server.fail_always("hang")
    result = one(backend(openai_server, timeout_s=0.2, max_retries=1))
    assert result.status == "failed" and result.error == "request timed out after 0.2s (gave up after 2 attempts)"
    openai_server.fail_always(None)
    closed = one(backend(openai_server, base_url="http://127.0.0.1:9/v1", max_retries=1))
    assert closed.status == "failed" and closed.error.startswith("connection error")


def test_insufficient_quota_stops_the_run_after_one_request(openai_server, tmp_path):
    write_shard(tmp_path / "000.parquet", 10)
    openai_server.fail_next("ok", 3)
    openai_server.fail_always("insufficient_quota")
    cache = ExtractionCache(tmp_path / "c")
    with pytest.raises(ExtractionAborted, match="insufficient_quota .*no credit left"):
        extract_shard(
            tmp_path / "000.parquet",
            backend(openai_server, max_concurrency=1, max_retries=6),
            cache,
            tmp_path / "out.parquet",
            flush_every=1,
            progress=False,
        )
    assert openai_server.count() == 4, "the quota error is not retried"
    assert len(cache.load()) == 3, "what finished before is kept"
    assert not (tmp_path / "out.parquet").exists()


def test_a_rejected_key_stops_the_run(openai_server):
    b = OpenAIBackend(config(openai_server), api_key="sk-wrong-key-123456789")
    with pytest.raises(ExtractionAborted, match=r"API key in \$OPENAI_API_KEY was rejected") as err:
        one(b)
    assert "sk-wrong" not in str(err.value) and "6789" not in str(err.value)


# -- invalid replies ----------------------------------------------------------------------------
def test_invalid_reply_fails_after_exactly_one_corrective_retry(openai_server):
    openai_server.fail_always("bad_polarity")
    result = one(backend(openai_server))
    assert result.status == "failed"
    assert result.error.startswith("unusable reply after one corrective retry: schema: triplet 0 field 'polarity'")
    assert openai_server.count() == 2
    retry = openai_server.chat_requests()[1].body["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert "probable" in retry[2]["content"] and "'probable' is not one of" in retry[3]["content"]
    assert result.prompt_tokens > 0 and result.completion_tokens > 0  # both calls are paid for


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("truncated", "truncated reply"),
        ("truncated_stop", "truncated JSON"),
        ("malformed", "malformed JSON"),
        ("extra_key", "unexpected key"),
        ("empty", "empty reply"),
        ("refusal", "refused"),
    ],
)
def test_one_bad_reply_is_corrected(openai_server, fault, reason):
    openai_server.fail_next(fault)
    result = one(backend(openai_server))
    assert result.status == "ok" and len(result.triplets) == 2
    assert openai_server.count() == 2
    assert reason in openai_server.chat_requests()[1].body["messages"][-1]["content"]


def test_uncategorised_triplets_are_dropped_not_retried(openai_server):
    openai_server.fail_next("no_category")
    result = one(backend(openai_server))
    assert (result.status, len(result.triplets), result.dropped_uncategorised) == ("ok", 2, 1)
    assert openai_server.count() == 1


def test_structured_output_modes_reach_the_server(openai_server):
    openai_server.responder = fixed_responder({"triplets": [{"category": "opacity", "polarity": "uncertain"}]})
    for mode in ("json_object", "none"):
        assert one(backend(openai_server, structured_output=mode)).triplets[0].polarity.value == "uncertain"
    bodies = [r.body for r in openai_server.chat_requests()]
    assert bodies[0]["response_format"] == {"type": "json_object"} and "response_format" not in bodies[1]


CLOSED = ROOT / "resources" / "prompts" / "triplets_closed.yaml"
VOCAB = ROOT / "resources" / "vocabulary"


def test_closed_prompt_lists_the_vocabulary_numbers_the_sentences_and_makes_category_and_index_enums():
    from medfilip.extraction.vocabulary import Vocabulary

    names = Vocabulary.load(VOCAB).category_names
    prompt = load_prompt(CLOSED)
    categories = prompt_categories(prompt, VOCAB)
    assert prompt.closed_categories and prompt.indexed and categories == names and len(names) > 20
    text = "Mild cardiomegaly. Small left pleural effusion.  No pneumothorax."
    body = build_request(
        prompt, text, OpenAIBackendConfig(structured_output="json_object_schema"), categories=categories
    )
    system = body["messages"][0]["content"]
    assert "{categories}" not in system and ", ".join(names) in system
    # the report's sentences, numbered; the system text is the same for every report (the server's prompt cache)
    assert body["messages"][1]["content"] == (
        "1. Mild cardiomegaly.\n2. Small left pleural effusion.\n3. No pneumothorax.\nReply:"
    )
    other = build_request(prompt, "Heart size normal.", OpenAIBackendConfig(), categories=categories)
    assert other["messages"][0] == body["messages"][0]
    # llama.cpp's form: json_object with the schema beside it; every sentence number once, in order, with
    # at most 3 findings; the category is an enum, the keys short, severity/location may be left out
    fmt = body["response_format"]
    assert fmt["type"] == "json_object" and set(fmt) == {"type", "schema"}
    schema = fmt["schema"]
    assert list(schema["properties"]) == schema["required"] == ["1", "2", "3"]
    assert schema["additionalProperties"] is False and schema["properties"]["2"]["maxItems"] == 3
    item = schema["properties"]["1"]["items"]
    assert list(item["properties"]) == ["c", "p", "sev", "loc"]
    assert item["properties"]["c"]["enum"] == names
    assert item["properties"]["p"]["enum"] == ["present", "negated", "uncertain"]
    assert item["required"] == ["c", "p"] and item["additionalProperties"] is False
    # OpenAI's strict structured outputs: every key required, the optional ones nullable
    strict = build_request(prompt, text, OpenAIBackendConfig(), categories=categories)["response_format"]
    strict_item = strict["json_schema"]["schema"]["properties"]["3"]["items"]
    assert strict["json_schema"]["strict"] is True and strict_item["required"] == ["c", "p", "sev", "loc"]
    assert strict_item["properties"]["sev"]["type"] == ["string", "null"]
    # the open prompt keeps free-text categories and copied sentences, whatever list is passed
    open_body = build_request(
        load_prompt(PROMPT), "x", OpenAIBackendConfig(structured_output="json_object_schema"), categories=names
    )
    open_item = open_body["response_format"]["schema"]["properties"]["triplets"]["items"]
    assert "enum" not in open_item["properties"]["category"] and "sentence" in open_item["required"]
    assert "<report>\nx\n</report>" in open_body["messages"][1]["content"]
    with pytest.raises(ConfigError, match="closed list of categories"):
        build_request(prompt, "x", OpenAIBackendConfig())


def test_indexed_reply_puts_each_sentence_back_from_its_number():
    sentences = ["Mild cardiomegaly.", "Small left pleural effusion.", "No pneumothorax.", "Lungs are clear."]
    content = json.dumps(
        {
            "1": [{"c": "cardiomegaly", "p": "present", "sev": "mild"}],
            "2": [{"c": "pleural effusion", "p": "present", "sev": "small", "loc": "left"}],
            "3": [{"c": "pneumothorax", "p": "negated", "sev": "none", "loc": None}, {"c": "", "p": "negated"}],
            "4": [],
        }
    )  # a finding without a category is dropped and counted; "none" is no severity
    triplets, dropped = parse_reply(content, "stop", sentences=sentences)
    assert dropped == 1
    assert [(t.category, t.polarity.value, t.severity, t.location, t.sentence) for t in triplets] == [
        ("cardiomegaly", "present", "mild", None, "Mild cardiomegaly."),
        ("pleural effusion", "present", "small", "left", "Small left pleural effusion."),
        ("pneumothorax", "negated", None, None, "No pneumothorax."),
    ]
    assert parse_reply('{"1": [], "2": []}', "stop", sentences=["a.", "b."]) == ([], 0)
    assert parse_reply("{}", "stop", sentences=[]) == ([], 0)


@pytest.mark.parametrize(
    "content, reason",
    [
        ('{"4": [{"c": "mass", "p": "present"}]}', "sentence 4 does not exist; the report has 3"),
        ('{"0": []}', "sentence 0 does not exist"),
        ('{"one": []}', "key 'one' is not a sentence number"),
        ('{"1": {"c": "mass"}}', "sentence 1: its findings are a dict, not a list"),
        ('{"2": [{"c": "mass", "p": "absent"}]}', "sentence 2 finding 0 field 'polarity': 'absent' is not one of"),
        ('{"1": [{"c": "mass", "sentence": "x"}]}', "sentence 1 finding 0 has unexpected key(s) 'sentence'"),
        ('{"3": [1]}', "sentence 3 finding 0 is a int, not an object"),
        ("[]", "expected an object keyed by sentence number, got list"),
    ],
)
def test_indexed_reply_errors_name_the_sentence_finding_and_field(content, reason):
    with pytest.raises(ReplyError, match=__import__("re").escape(reason)):
        parse_reply(content, "stop", sentences=["a.", "b.", "c."])


def test_indexed_prompt_end_to_end_and_a_bad_sentence_number_is_asked_again(openai_server):
    # the fake server answers like an LLM (the rules extractor) in the indexed form
    b = backend(openai_server, prompt=CLOSED, structured_output="json_object_schema", max_concurrency=1)
    (r,) = list(b.extract([ReportText("r0", "Small left pleural effusion. No pneumothorax.")]))
    assert r.status == "ok"
    got = sorted((t.category, t.polarity.value, t.sentence) for t in r.triplets)
    assert got == [
        ("pleural effusion", "present", "Small left pleural effusion."),
        ("pneumothorax", "negated", "No pneumothorax."),
    ]
    assert r.triplets[0].location  # the short key "loc" read back
    # a sentence number the report does not have: asked once more with the reason, then failed
    openai_server.reset()
    openai_server.responder = fixed_responder({"9": [{"c": "mass", "p": "present"}]})
    (r,) = list(b.extract([ReportText("r1", "Mass. Nodule.")]))
    assert r.status == "failed" and "sentence 9 does not exist; the report has 2" in r.error
    bodies = [x.body for x in openai_server.chat_requests()]
    assert len(bodies) == 2 and "each sentence number once" in bodies[1]["messages"][-1]["content"]
    assert "sentence 9 does not exist" in bodies[1]["messages"][-1]["content"]


def test_closed_prompt_file_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("version: v\ncategories: some\nsystem: s {categories}\nuser: '{report}'\n")
    with pytest.raises(ConfigError, match="prompt key 'categories' is 'some'"):
        load_prompt(bad)
    bad.write_text("version: v\ncategories: vocabulary\nsystem: no list\nuser: '{report}'\n")
    with pytest.raises(ConfigError, match="needs a \\{categories\\} placeholder"):
        load_prompt(bad)
    bad.write_text("version: v\nreply: short\nsystem: s\nuser: '{report}'\n")
    with pytest.raises(ConfigError, match="prompt key 'reply' is 'short'"):
        load_prompt(bad)
    bad.write_text("version: v\nreply: indexed\nsystem: s\nuser: '{report}'\n")
    with pytest.raises(ConfigError, match="reply: indexed needs categories: vocabulary"):
        load_prompt(bad)


def test_version_follows_the_model_file_content_and_the_category_list(openai_server, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(1000))
    base = backend(openai_server, prompt=CLOSED, model_file=str(gguf))
    assert base.version.startswith("triplets-closed-v3+")
    assert backend(openai_server, prompt=CLOSED).version != base.version  # the file counts
    os.utime(gguf, ns=(1, 1))  # touched, same bytes: same key (extracted reports stay cached)
    assert backend(openai_server, prompt=CLOSED, model_file=str(gguf)).version == base.version
    gguf.write_bytes(b"GGUF" + bytes(999) + b"\x01")  # a new model: every report again
    assert backend(openai_server, prompt=CLOSED, model_file=str(gguf)).version != base.version
    settings = generation_settings(OpenAIBackendConfig(model_file=str(gguf)), ["a", "b"])
    assert settings["model_file_sha256"] == __import__("hashlib").sha256(gguf.read_bytes()).hexdigest()
    assert generation_settings(OpenAIBackendConfig(), ["a", "c"])["categories_sha256"] != settings["categories_sha256"]
    # a vocabulary with other category names changes the closed prompt's version
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    for f in ("categories.yaml", "modifiers.yaml", "triggers.yaml"):
        (vocab / f).write_text((VOCAB / f).read_text())
    (vocab / "categories.yaml").write_text(
        (VOCAB / "categories.yaml").read_text().replace("name: cardiomegaly", "name: big heart")
    )
    other = OpenAIBackend(
        config(openai_server, prompt=CLOSED, model_file=str(gguf)), api_key=openai_server.api_key, vocabulary_dir=vocab
    )
    assert other.version != backend(openai_server, prompt=CLOSED, model_file=str(gguf)).version
    with pytest.raises(ConfigError, match="no such file"):
        backend(openai_server, prompt=CLOSED, model_file=str(tmp_path / "missing.gguf"))


def test_auto_switches_to_llama_cpp_form_once_the_server_rejects_json_schema(openai_server, caplog):
    openai_server.rejected_response_formats = {"json_schema"}  # as llama-cpp-python's server
    b = backend(openai_server, prompt=CLOSED, structured_output="auto", max_concurrency=1)
    with caplog.at_level(logging.WARNING, logger="medfilip.extraction.openai.output_format"):
        results = list(b.extract(reports(5)))
    assert [r.status for r in results] == ["ok"] * 5 and sum(len(r.triplets) for r in results) > 0
    sent = [r.body["response_format"]["type"] for r in openai_server.chat_requests()]
    assert sent == ["json_schema"] + ["json_object"] * 5  # one rejection, then llama.cpp's form, no retries
    assert b.stats["format_switched"] == 1 and b.stats["retries"] == 0
    assert "switches to json_object_schema" in caplog.text
    assert all(r.latency_s > 0 and r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)


def test_a_rejected_structured_output_mode_stops_with_the_mode_to_use(openai_server):
    openai_server.rejected_response_formats = {"json_schema"}
    with pytest.raises(ExtractionAborted, match="structured_output 'json_schema'.*json_object_schema"):
        list(backend(openai_server, structured_output="json_schema").extract(reports(3)))
    assert openai_server.count() <= 3  # not retried as a server error
    openai_server.reset()
    openai_server.rejected_response_formats = {"json_object"}  # a server without llama.cpp's form
    with pytest.raises(ExtractionAborted, match="structured_output 'json_object_schema'.*use json_schema"):
        list(backend(openai_server, structured_output="json_object_schema").extract(reports(1)))


# -- rate limits --------------------------------------------------------------------------------
def test_the_server_rate_limit_is_never_exceeded(openai_server):
    openai_server.rpm_limit, openai_server.window_s = 20, 1.0  # 20 requests a second, scaled down from a minute
    openai_server.ratelimit_headers = True
    openai_server.latency_s = 0.02
    b = backend(openai_server, requests_per_minute=20, max_concurrency=8, window_s=1.0)
    results = list(b.extract(reports(45)))
    assert len(results) == 45 and all(r.status == "ok" for r in results)
    assert openai_server.rate_limited == 0 and openai_server.count() == 45
    assert openai_server.max_in_window <= 20
    # (how close to the limit the client runs is a speed figure: benchmarks/extraction.py, not a timed test)


def test_the_server_headers_slow_the_client_down(openai_server):
    openai_server.extra_headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "150ms"}
    t0 = time.monotonic()
    assert all(r.status == "ok" for r in backend(openai_server, max_concurrency=1).extract(reports(4)))
    assert time.monotonic() - t0 >= 3 * 0.15
    times = [r.time for r in openai_server.chat_requests()]
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.14


def test_a_429_beyond_the_server_limit_is_waited_out(openai_server):
    # the client thinks it may send 1,000 a second; the server allows 5: its 429s and Retry-After pace the run
    openai_server.rpm_limit, openai_server.window_s = 5, 0.5
    results = list(backend(openai_server, max_concurrency=4, max_retries=20).extract(reports(12)))
    assert all(r.status == "ok" for r in results)
    assert openai_server.rate_limited > 0 and openai_server.count(None) == 12 + openai_server.rate_limited


# -- stopping ---------------------------------------------------------------------------------
def test_closing_the_generator_stops_the_requests(openai_server):
    openai_server.latency_s = 0.05
    gen = backend(openai_server, max_concurrency=2).extract(reports(40))
    got = [next(gen), next(gen)]
    gen.close()  # what Ctrl-C in the runner does
    time.sleep(0.2)
    sent = openai_server.count()
    time.sleep(0.2)
    assert len(got) == 2 and openai_server.count() == sent < 10


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from medfilip.extraction.settings import OpenAIBackendConfig
    from medfilip.extraction.cache import ExtractionCache
    from medfilip.extraction.openai.backend import OpenAIBackend
    from medfilip.extraction.runner import extract_shard

    shard, cache_dir, out, base_url, key = sys.argv[1:6]
    cfg = OpenAIBackendConfig(base_url=base_url, max_concurrency=2, requests_per_minute=100000)
    run = extract_shard(shard, OpenAIBackend(cfg, api_key=key), ExtractionCache(cache_dir), out, flush_every=5,
                        progress=False)
    print("extracted", run.n_extracted)
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_repeating_finished_reports(openai_server, tmp_path, repo):
    ids = write_shard(tmp_path / "000.parquet", 80)
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    cache_dir, out = tmp_path / "cache", tmp_path / "out.parquet"
    openai_server.latency_s = 0.03
    env = {**os.environ, "PYTHONPATH": str(repo)}
    args = [
        sys.executable,
        str(script),
        str(tmp_path / "000.parquet"),
        str(cache_dir),
        str(out),
        openai_server.base_url,
        openai_server.api_key,
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and len(list(cache_dir.glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    done = ExtractionCache(cache_dir).load()
    assert 15 <= len(done) < 80

    before = openai_server.count()
    run = extract_shard(
        tmp_path / "000.parquet", backend(openai_server), ExtractionCache(cache_dir), out, progress=False
    )
    assert run.n_extracted == openai_server.count() - before == 80 - len(done)
    table = pq.read_table(out)
    assert table["report_id"].to_pylist() == ids and set(table["status"].to_pylist()) == {"ok"}


@pytest.mark.slow
def test_ctrl_c_stops_the_cli_at_once_keeping_finished_reports(openai_server, tmp_path, repo):
    write_shard(tmp_path / "000.parquet", 120)
    openai_server.latency_s = 0.05
    cfg = {
        "extraction": {
            "backend": "openai",
            "flush_every": 5,
            "openai": {
                "base_url": openai_server.base_url,
                "api_key_env": "MEDFILIP_TEST_OPENAI_KEY",
                "max_concurrency": 4,
                "requests_per_minute": 100000,
                "tokens_per_minute": 10**9,
                "prompt": str(PROMPT),
            },
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(repo), "MEDFILIP_TEST_OPENAI_KEY": openai_server.api_key}
    cmd = [
        sys.executable,
        "-m",
        "medfilip",
        "-c",
        "config.yaml",
        "extract",
        "--shards",
        "000.parquet",
        "--out",
        "out.parquet",
        "--cache-dir",
        "cache",
        "--no-progress",
    ]
    # a child of a background shell ignores SIGINT; give it the default, as in a terminal
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 30
    while time.time() < deadline and len(list((tmp_path / "cache").glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 3
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    sent = openai_server.count()
    time.sleep(0.2)
    assert openai_server.count() == sent, "no request goes out after the exit"
    done = len(ExtractionCache(tmp_path / "cache").load())
    assert done >= 15
    resumed = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert openai_server.count() - sent == 120 - done


# -- secrets, warnings, CLI ----------------------------------------------------------------------
def test_missing_api_key_is_a_one_line_error(monkeypatch, openai_server):
    monkeypatch.delenv("MEDFILIP_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable MEDFILIP_NO_SUCH_KEY is not set") as err:
        OpenAIBackend(config(openai_server, api_key_env="MEDFILIP_NO_SUCH_KEY"))
    assert "\n" not in str(err.value)


def test_mimic_reports_to_an_online_service_warn_once(monkeypatch, caplog, openai_server):
    monkeypatch.setattr(endpoint, "_warned_mimic", set())
    caplog.set_level(logging.WARNING, logger="medfilip.extraction.openai.endpoint")
    for _ in range(2):
        backend_for = OpenAIBackend(config(openai_server, base_url=None), api_key="k", report_source="mimic_cxr")
    warnings = [r.getMessage() for r in caplog.records if "PhysioNet" in r.getMessage()]
    assert len(warnings) == 1 and "api.openai.com" in warnings[0] and backend_for.model
    assert "Azure OpenAI" in warnings[0] and "local server" in warnings[0]
    caplog.clear()
    for url in (
        "http://localhost:11434/v1",
        "http://127.0.0.1:8000/v1",
        "http://[::1]:8000/v1",
        openai_server.base_url,
    ):
        OpenAIBackend(config(openai_server, base_url=url), api_key="k", report_source="mimic_cxr")
    OpenAIBackend(config(openai_server, base_url="https://example.org/v1"), api_key="k", report_source="iu_xray")
    assert not [r for r in caplog.records if "PhysioNet" in r.getMessage()]
    assert endpoint.is_local_url("http://127.1.2.3:80") and not endpoint.is_local_url("https://my.openai.azure.com")


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medfilip", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_never_writes_or_logs_the_key(openai_server, tmp_path, repo):
    key = "sk-medfilip-SECRET-7f3a9c41e2b8d605"
    openai_server.api_key = key
    write_shard(tmp_path / "000.parquet", 6)
    # failures are tolerated here (max_failure_share 1): the test is about the key, not about stopping
    cfg = {
        "extraction": {
            "backend": "openai",
            "flush_every": 2,
            "max_failure_share": 1.0,
            "openai": {
                "base_url": openai_server.base_url,
                "api_key_env": "MEDFILIP_TEST_OPENAI_KEY",
                "max_retries": 1,
                "max_concurrency": 1,
                "prompt": str(PROMPT),
            },
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(repo), "MEDFILIP_TEST_OPENAI_KEY": key}
    common = [
        "-c",
        "config.yaml",
        "-vv",
        "extract",
        "--shards",
        "000.parquet",
        "--out",
        "out/000.parquet",
        "--cache-dir",
        "cache",
        "--runs-dir",
        "runs",
    ]
    # failures and retries on the way (one report fails each way): their messages must not carry the key
    openai_server.fail_next("server_error", 2)
    openai_server.fail_next("bad_polarity", 2)
    proc = _cli(common, env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" in proc.stderr and "2 failed" in proc.stdout
    report_words = "Degenerative changes of the spine"
    assert report_words not in "\n".join(line for line in proc.stderr.splitlines() if " INFO " in line)
    # a wrong key: a clear error, no traceback, no key
    env_wrong = {**env, "MEDFILIP_TEST_OPENAI_KEY": "sk-medfilip-WRONG-0c1d2e3f4a5b6c7d"}
    wrong = _cli(common + ["--retry-failed"], env_wrong, tmp_path)
    assert wrong.returncode == 3 and "Traceback" not in wrong.stderr
    assert "was rejected (HTTP 401)" in wrong.stderr.splitlines()[-1]
    # no key in any output, log or written file
    for text in (proc.stdout, proc.stderr, wrong.stdout, wrong.stderr):
        assert key not in text and "SECRET" not in text and "WRONG" not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written)
    for path in written:
        data = path.read_bytes()
        assert key.encode() not in data and b"SECRET-7f3a" not in data, path
    # a missing key: one line naming the variable
    env_missing = {k: v for k, v in env.items() if k != "MEDFILIP_TEST_OPENAI_KEY"}
    missing = _cli(common, env_missing, tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        line for line in missing.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    assert "MEDFILIP_TEST_OPENAI_KEY is not set" in missing.stderr


def test_cli_stops_cleanly_on_an_exhausted_quota(openai_server, tmp_path, repo):
    write_shard(tmp_path / "000.parquet", 4)
    cfg = {
        "extraction": {
            "backend": "openai",
            "openai": {
                "base_url": openai_server.base_url,
                "prompt": str(PROMPT),
                "api_key_env": "MEDFILIP_TEST_OPENAI_KEY",
            },
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(repo), "MEDFILIP_TEST_OPENAI_KEY": openai_server.api_key}
    openai_server.fail_always("insufficient_quota")
    proc = _cli(
        [
            "-c",
            "config.yaml",
            "extract",
            "--shards",
            "000.parquet",
            "--out",
            "o.parquet",
            "--cache-dir",
            "c",
            "--no-progress",
        ],
        env,
        tmp_path,
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "insufficient_quota" in proc.stderr


# -- the workflow ---------------------------------------------------------------------------------
SNAKEFILE = ROOT / "workflow" / "Snakefile"
SMK_REPORTS = [
    ("CXR1", "The heart is mildly enlarged. No pleural effusion or pneumothorax.", "Mild cardiomegaly."),
    (
        "CXR2",
        "There is a small right pleural effusion. The lungs are otherwise clear.",
        "Small right pleural effusion.",
    ),
    ("CXR3", "Left basilar atelectasis. Calcified granuloma in the right upper lobe.", "Left basilar atelectasis."),
    ("CXR4", "Moderate right-sided pneumothorax.", "Moderate right pneumothorax."),
    ("CXR5", "Degenerative changes of the thoracic spine. No focal consolidation.", "No acute process."),
]


def _openi(rid: str, findings: str, impression: str) -> str:
    n = rid.removeprefix("CXR")
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{rid}"/><pmcId id="{n}"/>'
        f'<MedlineCitation><Article><Abstract><AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article></MedlineCitation>'
        f'<MeSH><major>normal</major></MeSH><parentImage id="{rid}_IM-000{n}-1001"/></eCitation>'
    )


def _snakemake(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return snakemake(workdir, *args, configfile=workdir / "config.yaml", env=env, timeout=300)


def _jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    text = proc.stdout + proc.stderr
    start = text.find("Job stats:")
    counts = {}
    for line in text[start:].splitlines()[3:] if start >= 0 else []:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.slow
def test_snakemake_with_the_openai_backend(openai_server, tmp_path):
    key = "sk-medfilip-SMK-91e0c7d25a3b"
    openai_server.api_key = key
    corpus = tmp_path / "iu_reports"
    corpus.mkdir()
    for rid, findings, impression in SMK_REPORTS:
        (corpus / f"{rid[3:]}.xml").write_text(_openi(rid, findings, impression), encoding="utf-8")
    (tmp_path / "prompt.yaml").write_text(PROMPT.read_text())
    config = {
        "reports": {"source": "iu_xray", "n_shards": 2, "iu_xray": {"path": "iu_reports"}},
        "extraction": {
            "backend": "openai",
            "flush_every": 2,
            "openai": {
                "base_url": openai_server.base_url,
                "api_key_env": "MEDFILIP_SMK_KEY",
                "prompt": "prompt.yaml",
                "max_concurrency": 2,
            },
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "MEDFILIP_SMK_KEY": key}

    proc = _snakemake(tmp_path, env, "--cores", "2", "results/entities.parquet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _jobs(proc) == {"report_shards": 1, "extract_triplets": 2, "entities": 1}
    assert openai_server.count() == len(SMK_REPORTS)
    entities = pq.read_table(tmp_path / "results" / "entities.parquet").to_pylist()
    present = {e["category"] for e in entities if e["polarity"] == "present"}
    assert {"cardiomegaly", "pleural effusion", "atelectasis", "pneumothorax"} <= present
    assert {e["backend"] for e in entities} == {"openai"}
    runs = pq.read_table(tmp_path / "results" / "extraction" / "runs").to_pylist()
    assert sum(r["n_extracted"] for r in runs) == len(SMK_REPORTS) and sum(r["cost_usd"] for r in runs) > 0

    proc = _snakemake(tmp_path, env, "--cores", "2", "results/entities.parquet")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    assert openai_server.count() == len(SMK_REPORTS)

    # a prompt edit re-runs extraction (every report asked again) and what follows, never the reports
    with open(tmp_path / "prompt.yaml", "a", encoding="utf-8") as fh:
        fh.write("# edited by the test\n")
    proc = _snakemake(tmp_path, env, "--cores", "2", "results/entities.parquet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _jobs(proc) == {"extract_triplets": 2, "entities": 1}
    assert openai_server.count() == 2 * len(SMK_REPORTS)

    # a new model re-runs extraction; the endpoint or the limits re-run nothing
    for change, expected in (
        ({"model": "gpt-4o"}, {"extract_triplets": 2, "entities": 1}),
        ({"requests_per_minute": 50, "base_url": "http://127.0.0.1:9/v1"}, {}),
    ):
        changed = yaml.safe_load((tmp_path / "config.yaml").read_text())
        changed["extraction"]["openai"].update(change)
        (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
        dry = snakemake(
            tmp_path, "-n", "results/entities.parquet", configfile=tmp_path / "changed.yaml", env=env, timeout=300
        )
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert _jobs(dry) == expected, (change, dry.stdout)

    # the key's variable unset: snakemake stops before any job, naming it
    proc = _snakemake(
        tmp_path,
        {k: v for k, v in env.items() if k != "MEDFILIP_SMK_KEY"},
        "--cores",
        "2",
        "-F",
        "results/entities.parquet",
    )
    assert proc.returncode != 0 and "MEDFILIP_SMK_KEY" in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout + proc.stderr

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_a_batch_line_with_an_indexed_reply_gets_its_sentences():
    from medfilip.extraction.openai.batch import result_of_line

    body = {
        "choices": [{"message": {"content": '{"1": [], "2": [{"c": "pneumothorax", "p": "negated"}]}'}}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 20},
    }
    line = {"response": {"status_code": 200, "body": body}}
    r = result_of_line("k", line, sentences=["Heart normal.", "No pneumothorax."])
    assert r.status == "ok" and [(t.category, t.sentence) for t in r.triplets] == [("pneumothorax", "No pneumothorax.")]
    assert result_of_line("k", line).status == "failed"  # read as the triplets form: a schema error
