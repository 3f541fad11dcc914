"""``medfilip config`` (validate the config, print a summary or all of it) and ``medfilip schema`` (its JSON
schema, generated from the pydantic models)."""

from __future__ import annotations

import argparse

from medfilip.pipeline.config import PipelineConfig


def cmd_config(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.pipeline.config_checks import check_paths

    check_paths(cfg, str(args.config or "config/config.yaml"))  # what the workflow checks before any job
    if args.show:
        import json

        print(json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2))
    else:
        print(
            f"{args.config or 'config/config.yaml'}: OK ({cfg.reports.n_shards} shards, source {cfg.reports.source}, backend {cfg.extraction.backend})"
        )
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "config", help="validate the config (values, and the paths and models it names) and print a summary"
    )
    s.add_argument("--show", action="store_true", help="print the full config with defaults filled in")
    s.set_defaults(func=cmd_config)

    from medfilip.pipeline.schema import add_schema_arguments, run_schema

    helptext = "print the config's JSON schema, generated from the pydantic models (--write, --check)"
    s = sub.add_parser("schema", help=helptext, description=helptext)
    add_schema_arguments(s)
    s.set_defaults(func=run_schema)
