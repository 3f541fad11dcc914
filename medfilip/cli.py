"""``medfilip``: one sub-command per pipeline stage (Snakemake rules call these), plus ``predict`` and ``export``
for a trained model. Common options (-c/--config, -v, -q, --no-progress, --workers, --threads) go before or
after the command: ``medfilip -c X train ...`` = ``medfilip train -c X ...``."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from pathlib import Path

from medfilip.config import ConfigError, PipelineConfig, load_config
from medfilip.names import ReportSource

log = logging.getLogger("medfilip")

STAGE_PACKAGES = (
    "extraction",
    "knowledge",
    "labels",
    "embeddings",
    "phantom",
    "images",
    "datasets",
    "training",
    "evaluation",
    "evaluation.segmentation",
    "evaluation.probe",
    "worlds",
    "evaluation.real",
)
# Commands of a trained model (medfilip.predict owns their arguments): (name, add arguments, run, help).
LIBRARY_COMMANDS = (
    (
        "medfilip.predict",
        "predict",
        "add_predict_arguments",
        "run_predict",
        "zero-shot scores of images (PNG, JPEG, DICOM) under a trained model, per class",
    ),
    (
        "medfilip.predict",
        "export",
        "add_export_arguments",
        "run_export",
        "write a pipeline run folder as a self-contained model folder (config, safetensors weights, text encoder)",
    ),
    (
        "medfilip.schema",
        "schema",
        "add_schema_arguments",
        "run_schema",
        "print the config's JSON schema, generated from the pydantic models (--write, --check)",
    ),
)
# What a command sees when a common option is not given (anywhere).
COMMON_DEFAULTS = {"config": None, "verbose": 0, "quiet": False, "no_progress": False, "workers": 0, "threads": 0}


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose < 2:  # one line per HTTP request (and the SDK's request dumps) only with -vv
        for name in ("httpx", "httpx2", "httpcore", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config)


# -- sub-commands -------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    from medfilip.config_checks import check_paths

    cfg = _config(args)
    check_paths(cfg, str(args.config or "config/config.yaml"))  # what the workflow checks before any job
    if args.show:
        import json

        print(json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2))
    else:
        print(
            f"{args.config or 'config/config.yaml'}: OK ({cfg.reports.n_shards} shards, source {cfg.reports.source}, backend {cfg.extraction.backend})"
        )
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    from medfilip.reports.readers import read_configured_reports
    from medfilip.reports.shards import write_report_shards

    cfg = _config(args)
    summary = write_report_shards(
        read_configured_reports(cfg.reports),
        args.out_dir,
        cfg.reports.n_shards,
        args.rejects,
        limit=cfg.reports.limit,
        source=_corpus_description(cfg),
    )
    print(
        f"{summary.n_reports} reports in {len(summary.per_shard)} shards, {summary.n_rejects} rejected; splits {summary.per_split}"
    )
    return 0


def _corpus_description(cfg: PipelineConfig) -> str:
    """The configured corpus, as its key path and path (for error messages)."""
    r = cfg.reports
    if r.source == ReportSource.iu_xray:
        return (
            f"reports.iu_xray.path = {str(r.iu_xray.path) if r.iu_xray.path else 'null (the shipped IU-Xray tarball)'}"
        )
    return f"reports.mimic_cxr.root = {r.mimic_cxr.root}"


def make_backend(cfg: PipelineConfig):
    if cfg.extraction.backend == "rules":
        from medfilip.extraction.rules import RulesBackend

        return RulesBackend(cfg.extraction.rules.vocabulary_dir)
    if cfg.extraction.backend == "openai":
        from medfilip.extraction.openai.backend import OpenAIBackend

        return OpenAIBackend.from_config(cfg)
    raise ConfigError(f"extraction.backend = {cfg.extraction.backend!r}: not available")


def cmd_extract(args: argparse.Namespace) -> int:
    from medfilip.extraction.cache import ExtractionCache
    from medfilip.extraction.runner import extract_shard
    from medfilip.workflow_resources import share_llm_limits

    if len(args.out) != len(args.shards):
        raise ValueError(f"--out: {len(args.out)} files for {len(args.shards)} --shards (one output per shard)")
    # several jobs at once share the account's per-minute limits (the workflow passes its llm_requests)
    cfg = share_llm_limits(_config(args), args.llm_jobs)
    backend = make_backend(cfg)
    if backend.name == "openai":
        o = cfg.extraction.openai
        print(
            f"LLM limits of this job: {o.requests_per_minute} requests/min, {o.tokens_per_minute} tokens/min "
            f"(1/{args.llm_jobs} of the run's: {args.llm_jobs} extraction job(s) may run at once)"
        )
    cache = ExtractionCache(args.cache_dir or Path("results/cache/extraction") / backend.name)
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

    root = (args.cache_dir or Path("results/cache/extraction/openai")) / "batches"
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


def cmd_entities(args: argparse.Namespace) -> int:
    from medfilip.extraction.entities import build_entities
    from medfilip.extraction.vocabulary import configured_vocabulary

    table = build_entities(args.extractions, configured_vocabulary(_config(args)), args.out)
    print(f"{table.num_rows} entities -> {args.out}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from medfilip.extraction.quality import (
        MeshMapping,
        read_reports,
        score_extraction,
        write_quality,
    )
    from medfilip.extraction.vocabulary import configured_vocabulary

    cfg = _config(args)
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


def cmd_compare(args: argparse.Namespace) -> int:
    from medfilip.extraction.compare import MICRO, compare_paths
    from medfilip.extraction.vocabulary import configured_vocabulary

    rows, diag = compare_paths(
        _extraction_side(args.a, args.results),
        _extraction_side(args.b, args.results),
        configured_vocabulary(_config(args)),
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


def cmd_query(args: argparse.Namespace) -> int:
    from medfilip.query import check_read_only, connect, format_result

    con = connect(args.results)
    try:
        check_read_only(con, args.sql)
        result = con.execute(args.sql)
    except Exception as err:  # noqa: BLE001 - duckdb raises many error types; show the message, not a traceback
        print(f"query failed: {err}", file=sys.stderr)
        return 2
    print(format_result(result, args.format, args.max_rows))
    return 0


# -- parser -----------------------------------------------------------------------------
def common_options(*, defaults: bool) -> argparse.ArgumentParser:
    """The parent parser of the options every command accepts (argparse ``parents=``).

    The top-level parser takes it with ``defaults=True`` (COMMON_DEFAULTS); every sub-command with
    ``defaults=False``: an option the command line does not give after the command then leaves the
    value given before it (``medfilip -c X train``) in place instead of resetting it to the default.
    Commands that have no use for an option (``--workers`` of ``query``) accept and ignore it.
    """
    parent = argparse.ArgumentParser(add_help=False, argument_default=None if defaults else argparse.SUPPRESS)
    g = parent.add_argument_group("common options (before or after the command)")
    g.add_argument("-c", "--config", type=Path, metavar="YAML", help="config YAML (default: config/config.yaml)")
    g.add_argument("-v", "--verbose", action="count", help="more logging (-vv for debug)")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (for rules: their logs)")
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes of the commands that render or decode images (0, the default: every available core)",
    )
    g.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of torch, or of the llama.cpp server for llm-server (0, the default: torch's "
        "default; probe commands: every available core; llm-server: all cores, at most 8)",
    )
    if defaults:
        parent.set_defaults(**COMMON_DEFAULTS)
    return parent


def _register_library_commands(sub) -> None:
    """``predict``, ``export`` (medfilip.predict) and ``schema`` (medfilip.schema): their module adds their
    arguments and runs them.

    The modules are imported here, to build the parser, so their top level stays light (no torch or
    pyarrow); the model loads inside run_predict / run_export.
    """
    for module_name, name, add_arguments, run, helptext in LIBRARY_COMMANDS:
        module = importlib.import_module(module_name)
        s = sub.add_parser(name, help=helptext, description=helptext)
        getattr(module, add_arguments)(s)
        s.set_defaults(func=getattr(module, run))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medfilip", description=__doc__, parents=[common_options(defaults=True)])
    # every sub-command gets the common options (the stage modules' register(sub) call sub.add_parser as usual)
    shared = common_options(defaults=False)
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=functools.partial(argparse.ArgumentParser, parents=[shared]),
    )

    s = sub.add_parser(
        "config", help="validate the config (values, and the paths and models it names) and print a summary"
    )
    s.add_argument("--show", action="store_true", help="print the full config with defaults filled in")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("reports", help="read the report corpus into Parquet shards")
    s.add_argument("--out-dir", type=Path, default=Path("results/reports/shards"))
    s.add_argument("--rejects", type=Path, default=Path("results/reports/rejects.parquet"))
    s.set_defaults(func=cmd_reports)

    s = sub.add_parser("extract", help="extract triplets from report shards through the cache")
    s.add_argument("--shards", type=Path, nargs="+", required=True, help="report shard Parquet files")
    s.add_argument("--out", type=Path, nargs="+", required=True, help="one output Parquet per shard")
    s.add_argument("--cache-dir", type=Path, default=None, help="default results/cache/extraction/<backend>")
    s.add_argument("--runs-dir", type=Path, default=Path("results/extraction/runs"))
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
    s.add_argument("--out", type=Path, default=Path("results/entities.parquet"))
    s.set_defaults(func=cmd_entities)

    s = sub.add_parser("quality", help="score entities against the IU-Xray MeSH annotations")
    s.add_argument("--reports", type=Path, nargs="+", required=True)
    s.add_argument("--entities", type=Path, default=Path("results/entities.parquet"))
    s.add_argument("--out", type=Path, default=Path("results/tables/extraction_quality.csv"))
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
    s.add_argument("--out", type=Path, default=Path("results/tables/extraction_agreement.csv"))
    s.add_argument("--results", type=Path, default=Path("results"), help="results folder (for backend names)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("query", help="run SQL over reports, entities and extraction_runs (DuckDB, read-only)")
    s.add_argument("sql", help="SELECT statements only (COPY, CREATE, ATTACH, SET ... are refused)")
    s.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--max-rows", type=int, default=50)
    s.set_defaults(func=cmd_query)

    # Later stages register their own sub-commands (medfilip/<stage>/cli.py: register(sub)); each gets the common
    # options from the parent parser (defining one of them again is an argparse conflict error at build time).
    for stage in STAGE_PACKAGES:
        try:
            module = importlib.import_module(f"medfilip.{stage}.cli")
        except ModuleNotFoundError as err:
            if err.name != f"medfilip.{stage}.cli":
                raise
            continue
        module.register(sub)
    _register_library_commands(sub)
    return p


def _extraction_aborted(err: BaseException) -> bool:
    """An ExtractionAborted (checked without importing the extraction stage, which pulls in pyarrow:
    when it was raised, its module is loaded)."""
    backend = sys.modules.get("medfilip.extraction.backend")
    return backend is not None and isinstance(err, backend.ExtractionAborted)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        rc = args.func(args)
        # which config the job read (a workflow job: its invocation's effective-<hash>.yaml)
        log.info("medfilip %s done, config %s", args.command, args.config or "config/config.yaml (default)")
        return rc
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finished work is already flushed (extraction flushes on the way out)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if _extraction_aborted(err):
            print(f"error: {err}", file=sys.stderr)
            return 3
        if isinstance(err, (FileNotFoundError, ValueError)):
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
