"""``medfilip``: one sub-command per pipeline stage (Snakemake rules call these), plus ``predict`` and ``export``
for a trained model. Common options (-c/--config, -v, -q, --no-progress, --workers, --threads) go before or
after the command: ``medfilip -c X train ...`` = ``medfilip train -c X ...``."""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import logging
import sys
from pathlib import Path

from medfilip.configbase import ConfigError
from medfilip.pipeline.config import load_config

log = logging.getLogger("medfilip")

# The one command registry: each module of medfilip.pipeline.commands adds its sub-commands with
# register(sub), in this order (the order of `medfilip --help`).
COMMAND_MODULES = (
    "config",
    "reports",
    "extraction",
    "query",
    "knowledge",
    "labels",
    "embeddings",
    "phantom",
    "images",
    "datasets",
    "training",
    "evaluation",
    "segmentation",
    "probe",
    "worlds",
    "real",
    "model",
)
# What a command sees when a common option is not given (anywhere).
COMMON_DEFAULTS = {"config": None, "verbose": 0, "quiet": False, "no_progress": False, "workers": 0, "threads": 0}


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose < 2:  # one line per HTTP request (and the SDK's request dumps) only with -vv
        for name in ("httpx", "httpx2", "httpcore", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medfilip", description=__doc__, parents=[common_options(defaults=True)])
    # every sub-command gets the common options (defining one of them again is an argparse conflict error)
    shared = common_options(defaults=False)
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=functools.partial(argparse.ArgumentParser, parents=[shared]),
    )
    for name in COMMAND_MODULES:
        importlib.import_module(f"medfilip.pipeline.commands.{name}").register(sub)
    return p


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command. A command that reads the config takes it as its ``cfg`` argument: the config
    is loaded here, once, for the whole command."""
    if "cfg" in inspect.signature(args.func).parameters:
        return args.func(args, cfg=load_config(args.config))
    return args.func(args)


def _extraction_aborted(err: BaseException) -> bool:
    """An ExtractionAborted (checked without importing the extraction stage, which pulls in pyarrow:
    when it was raised, its module is loaded)."""
    backend = sys.modules.get("medfilip.extraction.backend")
    return backend is not None and isinstance(err, backend.ExtractionAborted)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        rc = run_command(args)
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
