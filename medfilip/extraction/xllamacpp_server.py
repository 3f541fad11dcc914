"""``python -m medfilip.extraction.xllamacpp_server``: llama.cpp's OpenAI-compatible server through xllamacpp.

xllamacpp (a prebuilt wheel: nothing is compiled on install) embeds llama.cpp's own HTTP server in
the Python process: ``xllamacpp.Server(CommonParams)`` starts it and it serves until the process
ends. :mod:`medfilip.extraction.llm_server` runs this module as a child process (pid file, log, stop
by SIGTERM). The API key comes from the environment variable ``MEDFILIP_LLM_SERVER_KEY`` so that it
never shows in the process list or the log.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

KEY_ENV = "MEDFILIP_LLM_SERVER_KEY"


def params(model: str, host: str, port: int, alias: str, n_ctx: int, n_threads: int, api_key: str | None):
    """The server's ``xllamacpp.CommonParams``: one slot, the prompt cache on, ``n_threads`` CPU threads."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = model
    p.model_alias = [alias]
    p.hostnames = [host]
    p.port = port
    p.n_ctx = n_ctx
    p.n_parallel = 1  # one slot: the whole context for one request, the system prompt's KV kept in it
    p.cache_prompt = True
    p.cpuparams.n_threads = n_threads
    p.cpuparams_batch.n_threads = n_threads
    p.n_gpu_layers = 0
    p.warmup = True
    if api_key:
        p.api_keys = [api_key]
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--alias", required=True)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import xllamacpp as xlc

    api_key = os.environ.pop(KEY_ENV, "").strip() or None
    server = xlc.Server(params(args.model, args.host, args.port, args.alias, args.n_ctx, args.threads, api_key))
    print(
        f"xllamacpp {xlc.__version__} serving {args.model} as {args.alias!r} on {server.listening_address}", flush=True
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    del server
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
