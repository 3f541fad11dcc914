"""``medfilip world``: show one controlled world, run the sweep, summarise it (docs/worlds.md)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def cmd_world(args: argparse.Namespace) -> int:
    from medfilip.pipeline import paths
    from medfilip.worlds.settings import load_worlds_config

    cfg = load_worlds_config(args.worlds_config)
    if args.run and args.runs and len(args.runs) != 1:
        raise SystemExit("medfilip world: --run writes one --runs file")
    if args.grid == "gpu":
        cfg = cfg.on_gpu()
    if not (args.show or args.run or args.summarise or args.replicates):
        raise SystemExit("medfilip world: give --show PNG, --run, --summarise and/or --replicates W...")
    if args.jobs < 0:
        raise SystemExit(f"medfilip world: --jobs {args.jobs}: give N >= 1 (or 0: every core)")
    jobs = args.jobs or os.cpu_count() or 1
    if args.show:
        from medfilip.worlds.show import show_world
        from medfilip.worlds.sweep import text_side
        from medfilip.worlds.world import build_world, prototype_distances

        text = text_side(cfg, args.text_cache)
        visual, measure = prototype_distances(cfg)
        world = build_world(cfg, text, args.rho, args.gain, visual, measure)
        out = show_world(world, args.show)
        print(f"{out}: rho target {args.rho:g}, search r {world.rho_search:.3f}, measured r {world.rho_measured:.3f}")
    if args.run:
        from medfilip.worlds.jobs import SweepJobError, run_sweep_jobs

        index, _, count = args.shard.partition("/")
        try:
            shard = (int(index), int(count))
        except ValueError:
            raise SystemExit(f"medfilip world: --shard {args.shard!r} is not I/N") from None
        if jobs > 1 and shard != (0, 1):
            raise SystemExit(
                f"medfilip world: --jobs {jobs} with --shard {args.shard}: give one or the other "
                "(--jobs splits the worlds over processes itself; --shard I/N is for runs by hand)"
            )
        runs = args.runs[0] if args.runs else Path(paths.WORLDS_RUNS_PARTIAL)
        try:
            rows = run_sweep_jobs(cfg, runs, jobs, text_cache=args.text_cache, shard=shard)
        except SweepJobError as err:
            raise SystemExit(f"medfilip world: {err}") from None
        print(f"{runs}: {len(rows)} runs")
        if args.publish:
            import shutil

            args.publish.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(runs, args.publish)
    if args.summarise:
        from medfilip.worlds.jobs import read_runs
        from medfilip.worlds.sweep import current, figure, summarise, verdicts, write_csv

        runs = args.runs or [Path(paths.WORLDS_RUNS)]
        rows = current([r for path in runs for r in read_runs(path)], cfg)  # with a stopped --jobs run's files
        if not rows:
            raise SystemExit(
                f"medfilip world: no run of this config ({cfg.key()}) in {[str(r) for r in runs]} (run --run first)"
            )
        table = summarise(rows, cfg)
        write_csv(table, args.table)
        write_csv(verdicts(rows, cfg), args.verdicts)
        figure(table, args.figure)
        print(f"{args.table}: {len(table)} rows; {args.figure}; {args.verdicts}")
    if args.replicates:
        from medfilip.worlds.replicates import between_worlds, run_replicates
        from medfilip.worlds.sweep import write_csv

        rows = run_replicates(
            cfg,
            args.replicates,
            base_runs=(args.runs or [Path(paths.WORLDS_RUNS)])[0],
            folder=Path(paths.WORLDS_RUNS).parent / "replicates",
            text_cache=args.text_cache,
            seeds=args.replicate_seeds,
            jobs=jobs,
        )
        table = between_worlds(rows)
        write_csv(table, args.replicates_table)
        print(f"{args.replicates_table}: {len(table)} rows over {len({r['world_seed'] for r in rows})} world seeds")
    return 0


def register(sub) -> None:
    from medfilip.pipeline import paths

    s = sub.add_parser("world", help="controlled worlds: show one, run the arm x rho x g x eta sweep, summarise it")
    s.add_argument("--worlds-config", type=Path, default=Path("config/worlds.yaml"), help="the worlds: config file")
    s.add_argument(
        "--grid",
        choices=("cpu", "gpu"),
        default=os.environ.get("MEDFILIP_WORLDS_GRID", "cpu"),
        help="gpu: the config's gpu: keys replace the grid (default: $MEDFILIP_WORLDS_GRID, else cpu)",
    )
    s.add_argument("--show", type=Path, default=None, help="PNG: the prototypes and a gallery of one world")
    s.add_argument("--rho", type=float, default=1.0, help="--show: the target Mantel correlation")
    s.add_argument("--gain", type=float, default=1.0, help="--show: the severity gain")
    s.add_argument("--run", action="store_true", help="train every run of the grid not yet in --runs")
    s.add_argument("--summarise", action="store_true", help="write --table, --verdicts and --figure from --runs")
    s.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=None,
        help=f"runs CSV: --run appends to one (default {paths.WORLDS_RUNS_PARTIAL}), --summarise reads them all "
        f"(default {paths.WORLDS_RUNS}; e.g. the files of several shards)",
    )
    s.add_argument("--publish", type=Path, default=None, help="--run: copy the runs file here when the sweep is done")
    s.add_argument("--shard", default="0/1", help="--run: I/N, only the worlds whose index modulo N is I")
    s.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="--run, --replicates: N processes, a share of the worlds each (0: every core; at most one per world); their "
        "job files <runs stem>.job<i>of<N>.csv are merged into --runs at the end (an interrupted sweep resumes)",
    )
    s.add_argument(
        "--replicates",
        type=int,
        nargs="+",
        default=None,
        metavar="WORLD_SEED",
        help="exploratory: run these other world seeds at g 1, eta 0 (identity, ssm, multi_hot, oracle) and write "
        "--replicates-table: the spread between worlds at each rho and the slope on the measured rho "
        "(the config's own world is read from --runs)",
    )
    s.add_argument("--replicate-seeds", type=int, default=12, help="--replicates: training seeds per world")
    s.add_argument("--replicates-table", type=Path, default=Path(paths.WORLDS_TABLE).with_name("worlds_replicates.csv"))
    s.add_argument("--text-cache", type=Path, default=Path(paths.WORLDS_TEXTS), help="E_sim vectors (.npz)")
    s.add_argument("--table", type=Path, default=Path(paths.WORLDS_TABLE))
    s.add_argument("--verdicts", type=Path, default=Path(paths.WORLDS_PREDICTIONS))
    s.add_argument("--figure", type=Path, default=Path(paths.WORLDS_FIGURE))
    s.set_defaults(func=cmd_world)
