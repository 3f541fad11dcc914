"""The sweep over N processes (``medfilip world --run --jobs N``): job files, their merge, the resume.

Worker i of n runs ``sweep.run_sweep(shard=(i, n))`` into ``<runs stem>.job<i>of<n>.csv``; a run already
in the runs file or in any job file beside it is not trained again, whatever n was before; when every
worker is done the job files are merged into the runs file and deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from medfilip.worlds.settings import WorldsConfig
from medfilip.worlds.sweep import (
    complete_row,
    done_runs,
    grid_runs,
    grid_worlds,
    read_rows,
    run_key,
    run_sweep,
    text_side,
)

log = logging.getLogger(__name__)


class SweepJobError(RuntimeError):
    """A worker process of ``run_sweep_jobs`` failed (its job file is kept: a rerun resumes)."""


def job_file(runs_csv: str | Path, index: int, count: int) -> Path:
    """Worker ``index`` of ``count``'s runs file beside ``runs_csv``: ``<stem>.job<index>of<count>.csv``."""
    runs_csv = Path(runs_csv)
    return runs_csv.with_name(f"{runs_csv.stem}.job{index}of{count}.csv")


def job_files(runs_csv: str | Path) -> list[Path]:
    """Every job file beside ``runs_csv`` (``<stem>.job*.csv``, whatever the number of jobs that wrote it)."""
    import glob

    runs_csv = Path(runs_csv)
    return sorted(runs_csv.parent.glob(f"{glob.escape(runs_csv.stem)}.job*.csv"))


def merge_runs(cfg: WorldsConfig, runs_csv: str | Path, parts: Sequence[str | Path]) -> list[dict]:
    """Rewrite ``runs_csv`` (atomically) with its rows and the rows of ``parts``, each (arm, ρ, g, η, seed,
    config) once (the first seen, ``runs_csv`` first). The rows of this config's grid follow in the order
    ``run_sweep`` trains them (world, η, seed, arm), so a sweep split over jobs gives the file of one
    process; other rows (another config, or outside the grid) come first, in their order. A row cut short
    (a worker killed while writing it) is dropped: its run is trained again."""
    from medfilip.io import write_csv_atomic

    runs_csv = Path(runs_csv)
    key = cfg.key()
    grid = [(*run, key) for run in grid_runs(cfg)]
    order = {k: i for i, k in reversed(list(enumerate(grid)))}  # a value listed twice: its first place
    columns: list[str] = []
    merged: dict[tuple, dict] = {}
    for path in [runs_csv, *parts]:
        rows = read_rows(path)
        columns += [name for name in (rows[0] if rows else {}) if name is not None and name not in columns]
        for row in rows:
            if not complete_row(row):
                log.warning(
                    "worlds: %s: a row cut short (arm %s, rho %s) dropped", path, row.get("arm"), row.get("rho")
                )
                continue
            merged.setdefault((*run_key(row), row.get("config")), row)
    rows = sorted(merged.values(), key=lambda r: order.get((*run_key(r), r.get("config")), -1))  # stable
    if rows:
        write_csv_atomic(rows, runs_csv, fieldnames=columns)
    return rows


def read_runs(path: str | Path) -> list[dict]:
    """The runs of a runs file and of the job files beside it (a ``--jobs`` sweep that was stopped before
    its merge), each run once; rows cut short are left out."""
    runs: dict[tuple, dict] = {}
    for part in [Path(path), *job_files(path)]:
        for row in read_rows(part):
            if complete_row(row):
                runs.setdefault((*run_key(row), row.get("config")), row)
    return list(runs.values())


def _sweep_job(cfg, runs_csv, text_cache, shard, done_from, level) -> None:
    """A worker process of ``run_sweep_jobs`` (spawned: it sets up its own logging, to stderr)."""
    index, count = shard
    # the format of medfilip's CLI (pipeline.cli._setup_logging), with the job named
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s %(name)s [job {index}/{count}]: %(message)s",
        datefmt="%H:%M:%S",
    )
    run_sweep(cfg, runs_csv, text_cache=text_cache, shard=shard, done_from=done_from)


def run_sweep_jobs(
    cfg: WorldsConfig,
    runs_csv: str | Path,
    jobs: int,
    *,
    text_cache: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
) -> list[dict]:
    """``run_sweep`` over ``jobs`` processes; returns all rows of ``runs_csv``.

    The text cache is built here, once; worker i of n (n = ``jobs``, at most one per world) runs
    ``run_sweep(shard=(i, n))`` into ``job_file(runs_csv, i, n)``. A run already in ``runs_csv`` or in
    any job file beside it (left by an interrupted sweep with any n) is not trained again. When every
    worker is done, ``merge_runs`` folds the job files into ``runs_csv`` and they are deleted; if one
    failed, ``SweepJobError`` names it and the job files stay (a rerun resumes). With ``jobs`` = 1 the
    sweep runs in this process (``shard`` is then allowed, as in ``run_sweep``)."""
    runs_csv = Path(runs_csv)
    if jobs < 1:
        raise ValueError(f"worlds: jobs must be >= 1, got {jobs}")
    if jobs > 1 and tuple(shard) != (0, 1):
        raise ValueError(f"worlds: {jobs} jobs and shard {shard[0]}/{shard[1]}: give one or the other")
    earlier = job_files(runs_csv)
    worlds = grid_worlds(cfg)
    count = min(jobs, len(worlds))
    if count == 1:
        rows = run_sweep(cfg, runs_csv, text_cache=text_cache, shard=shard, done_from=earlier)
        if earlier:
            rows = merge_runs(cfg, runs_csv, earlier)
            for path in earlier:
                path.unlink()
        return rows
    key = cfg.key()
    done = done_runs([r for path in [runs_csv, *earlier] for r in read_rows(path)], key)
    world_index = {(round(rho, 6), round(g, 6)): k for k, (g, rho) in reversed(list(enumerate(worlds)))}
    pending = sorted({world_index[run[1:3]] % count for run in set(grid_runs(cfg)) - done})
    if pending:
        if text_cache is not None:
            text_side(cfg, text_cache)  # once, before the workers read it
        level = logging.getLogger().getEffectiveLevel()
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: safe with torch (and CUDA)
        procs = []
        for index in pending:
            path = job_file(runs_csv, index, count)
            args = (cfg, path, text_cache, (index, count), [runs_csv, *earlier], level)
            proc = ctx.Process(target=_sweep_job, args=args, name=path.name)
            proc.start()
            procs.append((path, proc))
        log.info("worlds: %d worlds over %d jobs (%s)", len(worlds), len(procs), ", ".join(p.name for p, _ in procs))
        for _, proc in procs:
            proc.join()
        failed = [f"{path} (exit code {proc.exitcode})" for path, proc in procs if proc.exitcode != 0]
        if failed:
            raise SweepJobError(
                f"worlds: {len(failed)} of {len(procs)} jobs failed: {', '.join(failed)}; their finished runs "
                f"are kept in the job files beside {runs_csv}: run again to resume"
            )
    parts = job_files(runs_csv)
    rows = merge_runs(cfg, runs_csv, parts)
    for path in parts:
        path.unlink()
    return rows
