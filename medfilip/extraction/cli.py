"""``medfilip llm-server start|stop|status|serve``: a local llama.cpp server (xllamacpp or llama-cpp-python)
for the openai backend."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medfilip.config import load_config


def _settings(args: argparse.Namespace) -> dict:
    extraction = load_config(args.config).extraction
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
    settings = _settings(args)
    if args.action == "serve":
        return llm_server.serve(**settings)
    info = llm_server.start(**settings, state_dir=args.state_dir, ready_timeout_s=args.timeout)
    print(
        f"llm server ready: pid {info.pid}, {info.base_url}, model {info.model_alias} = {info.model_file}; "
        f"log {info.log}"
    )
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "llm-server", help="start/stop a local llama.cpp server (xllamacpp or llama-cpp-python) for the openai backend"
    )
    s.add_argument(
        "action",
        choices=["start", "stop", "status", "serve"],
        help="start: in the background, waits until ready; serve: in the foreground",
    )
    s.add_argument("--state-dir", type=Path, default=Path("results/llm-server"), help="pid file and log")
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
