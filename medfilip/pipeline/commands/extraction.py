"""``medfilip extract`` (report shards -> triplets through the cache), ``batches`` (the Batch API chunks),
``entities``, ``quality`` (against the IU-Xray MeSH annotations), ``compare`` (two backends' agreement) and
``llm-server start|stop|status|serve`` (a local llama.cpp server, xllamacpp or llama-cpp-python, for the
openai backend)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medfilip.configbase import ConfigError
from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig, load_config


def make_backend(cfg: PipelineConfig):
    if cfg.extraction.backend == "rules":
        from medfilip.extraction.rules import RulesBackend

        return RulesBackend(cfg.extraction.rules.vocabulary_dir)
    if cfg.extraction.backend == "openai":
        from medfilip.extraction.openai.backend import OpenAIBackend

        return OpenAIBackend.from_config(cfg)
    raise ConfigError(f"extraction.backend = {cfg.extraction.backend!r}: not available")


def cmd_extract(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.extraction.cache import ExtractionCache
    from medfilip.extraction.runner import extract_shard
    from medfilip.pipeline.workflow_resources import share_llm_limits

    if len(args.out) != len(args.shards):
        raise ValueError(f"--out: {len(args.out)} files for {len(args.shards)} --shards (one output per shard)")
    # several jobs at once share the account's per-minute limits (the workflow passes its llm_requests)
    cfg = share_llm_limits(cfg, args.llm_jobs)
    backend = make_backend(cfg)
    if backend.name == "openai":
        o = cfg.extraction.openai
        print(
            f"LLM limits of this job: {o.requests_per_minute} requests/min, {o.tokens_per_minute} tokens/min "
            f"(1/{args.llm_jobs} of the run's: {args.llm_jobs} extraction job(s) may run at once)"
        )
    cache = ExtractionCache(args.cache_dir or Path(paths.EXTRACTION_CACHE_DIR.format(backend=backend.name)))
    backend = with_extraction_mode(backend, cfg, cache, args.mode, args.shards)
    for shard, out in zip(args.shards, args.out, strict=True):
        run = extract_shard(
            shard,
            backend,
            cache,
            out,
            runs_dir=args.runs_dir,
            flush_every=cfg.extraction.flush_every,
            retry_failed=args.retry_failed or cfg.extraction.retry_failed,
            progress=not args.no_progress,
            max_failure_share=cfg.extraction.failure_share_limit(),
        )
        spent = f", ${run.cost_usd:.4f}" if run.cost_usd else ""
        print(
            f"shard {run.shard}: {run.n_reports} reports, {run.n_cached} cached, {run.n_extracted} extracted, "
            f"{run.n_failed} failed ({run.n_failed_in_shard} failed in shard), {run.n_triplets} triplets "
            f"in {run.wall_s:.1f}s{spent}"
        )
    return 0


def with_extraction_mode(backend, cfg: PipelineConfig, cache, mode: str | None, shards: list[Path]):
    """The openai backend through the Batch API when extraction.openai.mode (or --mode) is batch.

    Batch chunk states live in ``<cache dir>/batches``. With several shards, every shard's missing
    reports are submitted up front, so their batches run side by side.
    """
    if mode is None:
        mode = cfg.extraction.openai.mode if backend.name == "openai" else "sync"
    if mode != "batch":
        return backend
    if backend.name != "openai":
        raise ConfigError(f"--mode batch needs extraction.backend: openai (it is {backend.name!r})")
    from medfilip.extraction.openai.batch import OpenAIBatchBackend

    batch = OpenAIBatchBackend(backend, cache.root / "batches")
    if len(shards) > 1:
        batch.submit_shards(shards, cache)
    return batch


def cmd_batches(args: argparse.Namespace) -> int:
    from medfilip.extraction.openai.batch_store import batch_summary

    root = (args.cache_dir or Path(paths.EXTRACTION_CACHE_DIR.format(backend="openai"))) / "batches"
    rows = batch_summary(root) if root.exists() else []
    if not rows:
        print(f"no batch chunks in {root}")
        return 0
    print(f"{'chunk':<30} {'batch':<32} {'status':<11} {'requests':>8} {'done':>6} {'failed':>6}  downloaded merged")
    for r in rows:
        print(
            f"{r['chunk']:<30} {r['batch_id'] or '-':<32} {r['status']:<11} {r['requests']:>8} "
            f"{r['completed'] if r['completed'] is not None else '-':>6} {r['failed'] if r['failed'] is not None else '-':>6}  "
            f"{'yes' if r['downloaded'] else 'no':<10} {'yes' if r['merged'] else 'no'}"
            + (f"  {r['errors']}" if r["errors"] else "")
        )
    return 0


def cmd_entities(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.extraction.entities import build_entities
    from medfilip.extraction.vocabulary import configured_vocabulary

    table = build_entities(args.extractions, configured_vocabulary(cfg), args.out)
    print(f"{table.num_rows} entities -> {args.out}")
    return 0


def cmd_quality(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    import pyarrow.parquet as pq

    from medfilip.extraction.quality import (
        MeshMapping,
        read_reports,
        score_extraction,
        write_quality,
    )
    from medfilip.extraction.vocabulary import configured_vocabulary

    mapping = MeshMapping.load(cfg.quality.mesh_mapping, configured_vocabulary(cfg))
    rows, diag = score_extraction(read_reports(args.reports), pq.read_table(args.entities), mapping)
    write_quality(rows, diag, args.out, args.figure)
    micro = next(r for r in rows if r["category"] == "micro-average")
    print(
        f"{diag['n_reports_scored']} annotated reports; micro P={micro['precision']:.3f} "
        f"R={micro['recall']:.3f} F1={micro['f1']:.3f} -> {args.out}"
    )
    return 0


def _extraction_side(values: list[str], results: Path) -> list[Path]:
    """A backend name (``rules``) stands for ``<results>/extraction/<name>``; anything else is a path."""
    out = []
    for v in values:
        p = Path(v)
        if not p.exists() and len(p.parts) == 1 and (results / "extraction" / v).exists():
            p = results / "extraction" / v
        out.append(p)
    return out


def cmd_compare(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.extraction.compare import MICRO, compare_paths
    from medfilip.extraction.vocabulary import configured_vocabulary

    rows, diag = compare_paths(
        _extraction_side(args.a, args.results),
        _extraction_side(args.b, args.results),
        configured_vocabulary(cfg),
        args.out,
    )
    micro = next(r for r in rows if r["category"] == MICRO)
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(
        f"{diag['a']} vs {diag['b']}: {diag['n_compared']} reports compared "
        f"({diag['n_only_in_a']} only in A, {diag['n_only_in_b']} only in B, "
        f"{diag['n_failed_a']} failed in A, {diag['n_failed_b']} failed in B), {diag['n_categories']} categories; "
        f"micro kappa {fmt(micro['kappa'])}, F1 of B against A {fmt(micro['f1_b'])}, "
        f"polarity agreement {fmt(micro['polarity_agreement'])} -> {args.out}"
    )
    return 0


def _settings(args: argparse.Namespace, extraction) -> dict:
    cfg, local = extraction.openai, extraction.local_llm
    from medfilip.extraction import llm_server

    port = args.port if args.port is not None else llm_server.port_of(cfg.base_url)
    model_file = args.model_file or cfg.model_file
    if model_file == llm_server.PACKAGED:
        model_file = f"{llm_server.PACKAGED}:{local.model}"
    return {
        "model_file": model_file,
        "port": port,
        "alias": args.alias or cfg.model,
        "n_ctx": args.n_ctx or local.n_ctx,
        "n_threads": args.threads or local.threads,  # --threads 0 (the default): extraction.local_llm.threads
        "engine": args.engine or local.engine,
        # a key in the configured variable guards the server too; unset: the server takes any key
        "api_key": os.environ.get(cfg.api_key_env, "").strip() or None,
    }


def cmd_llm_server(args: argparse.Namespace) -> int:
    # status and stop read no config (they work whatever the config says)
    from medfilip.extraction import llm_server

    if args.action == "status":
        state, info = llm_server.status(args.state_dir)
        if info is None:
            print("not running")
            return 1
        print(
            f"{state}: pid {info.pid}, {info.base_url}, model {info.model_alias} = {info.model_file} "
            f"(sha256 {str(info.model_sha256)[:12]}), log {info.log}"
        )
        return 0 if state == "running" else 1
    if args.action == "stop":
        info = llm_server.stop(args.state_dir)
        print(f"stopped pid {info.pid} ({info.base_url})" if info else "not running")
        return 0
    settings = _settings(args, load_config(args.config).extraction)
    if args.action == "serve":
        return llm_server.serve(**settings)
    info = llm_server.start(**settings, state_dir=args.state_dir, ready_timeout_s=args.timeout)
    print(
        f"llm server ready: pid {info.pid}, {info.base_url}, model {info.model_alias} = {info.model_file}; "
        f"log {info.log}"
    )
    return 0


def register(sub) -> None:
    s = sub.add_parser("extract", help="extract triplets from report shards through the cache")
    s.add_argument("--shards", type=Path, nargs="+", required=True, help="report shard Parquet files")
    s.add_argument("--out", type=Path, nargs="+", required=True, help="one output Parquet per shard")
    s.add_argument("--cache-dir", type=Path, default=None, help="default results/cache/extraction/<backend>")
    s.add_argument("--runs-dir", type=Path, default=Path(paths.EXTRACTION_RUNS_DIR))
    s.add_argument("--retry-failed", action="store_true", help="extract again the reports whose cached result failed")
    s.add_argument(
        "--llm-jobs",
        type=int,
        default=1,
        help="extraction jobs calling the LLM at once: each paces itself to 1/N of the per-minute limits",
    )
    s.add_argument(
        "--mode",
        choices=["sync", "batch"],
        default=None,
        help="openai only: concurrent requests or the Batch API (default: extraction.openai.mode)",
    )
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("batches", help="list the Batch API chunks of the openai cache (status, counts, merged)")
    s.add_argument("--cache-dir", type=Path, default=None, help="default results/cache/extraction/openai")
    s.set_defaults(func=cmd_batches)

    s = sub.add_parser("entities", help="flatten extraction shards into entities.parquet")
    s.add_argument("extractions", type=Path, nargs="+")
    s.add_argument("--out", type=Path, default=Path(paths.ENTITIES))
    s.set_defaults(func=cmd_entities)

    s = sub.add_parser("quality", help="score entities against the IU-Xray MeSH annotations")
    s.add_argument("--reports", type=Path, nargs="+", required=True)
    s.add_argument("--entities", type=Path, default=Path(paths.ENTITIES))
    s.add_argument("--out", type=Path, default=Path(paths.EXTRACTION_QUALITY_TABLE))
    s.add_argument("--figure", type=Path, default=None, help="bar chart of per-category F1 (PNG)")
    s.set_defaults(func=cmd_quality)

    s = sub.add_parser("compare", help="agreement between two backends' triplets on the same reports (CSV)")
    s.add_argument(
        "--a",
        nargs="+",
        required=True,
        metavar="SIDE",
        help="reference side: extraction shards, their folder, or a backend name (results/extraction/NAME)",
    )
    s.add_argument("--b", nargs="+", required=True, metavar="SIDE", help="compared side, as --a")
    s.add_argument("--out", type=Path, default=Path(paths.EXTRACTION_AGREEMENT_TABLE))
    s.add_argument("--results", type=Path, default=Path(paths.RESULTS), help="results folder (for backend names)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser(
        "llm-server", help="start/stop a local llama.cpp server (xllamacpp or llama-cpp-python) for the openai backend"
    )
    s.add_argument(
        "action",
        choices=["start", "stop", "status", "serve"],
        help="start: in the background, waits until ready; serve: in the foreground",
    )
    s.add_argument("--state-dir", type=Path, default=Path(paths.LLM_SERVER_DIR), help="pid file and log")
    s.add_argument(
        "--port", type=int, default=None, help="default: the port of extraction.openai.base_url; 0 = a free one"
    )
    s.add_argument(
        "--model-file",
        default=None,
        help="a GGUF path, 'packaged' (extraction.local_llm.model) or 'packaged:<name>' "
        "(default: extraction.openai.model_file)",
    )
    s.add_argument(
        "--engine",
        choices=["xllamacpp", "llama-cpp-python"],
        default=None,
        help="default: extraction.local_llm.engine",
    )
    s.add_argument("--alias", default=None, help="served model name (default: extraction.openai.model)")
    s.add_argument(
        "--n-ctx", type=int, default=0, help="context window in tokens (default: extraction.local_llm.n_ctx)"
    )
    s.add_argument("--timeout", type=float, default=180.0, help="seconds to wait until the server answers")
    s.set_defaults(func=cmd_llm_server)
