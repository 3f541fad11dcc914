"""The sweep (arm x ρ x g x η x seed), its table with Student-t intervals, the figure, the verdicts.

``run_sweep`` appends one row per trained run to ``runs.csv`` (and skips the rows already there,
so an interrupted sweep resumes). ``summarise`` groups the runs over seeds into
``results/tables/worlds.csv``: per arm x ρ x g x η x metric the mean with its Student-t 95 %
interval and n (``evaluation.seeds.t_interval``), and the paired (by seed) difference to identity.
``verdicts`` checks the pre-registered predictions of config/worlds.yaml against that table.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfilip.worlds.settings import WorldsConfig

log = logging.getLogger(__name__)

KEYS = ("arm", "rho", "gain", "eta", "seed")


def text_side(cfg: WorldsConfig, cache: str | Path | None = None, encode=None, knowledge=None):
    """The world's TextSide; ``cache`` (an .npz) keeps the E_sim vectors between calls. It is reused only
    for the same texts (template, knowledge, locations) and the same E_sim model (its fingerprint)."""
    from medfilip.embeddings.model import resolve_model
    from medfilip.worlds.world import TextSide, build_text_side, default_knowledge, label_texts, minilm_encoder

    knowledge = knowledge or default_knowledge()
    model_id = resolve_model(None).model_id  # the shipped MiniLM (``encode`` replaces it in tests only)
    labels, texts = label_texts(cfg, knowledge)
    if cache is not None and Path(cache).exists():
        data = np.load(cache, allow_pickle=False)
        fresh = {"texts", "model", "vectors", "category_vectors", "t"} <= set(data.files)
        if fresh and data["texts"].tolist() == texts and str(data["model"]) == model_id:
            return TextSide(labels, texts[: len(labels)], data["vectors"], data["category_vectors"], float(data["t"]))
        log.info("worlds: %s holds other texts or another model: embedding again", cache)
    side = build_text_side(cfg, encode or minilm_encoder(), knowledge)
    if cache is not None:  # atomic: the rules world_runs and world_show may write it side by side
        from medfilip.io import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                texts=np.array(texts),  # the label texts, then the category texts
                model=np.array(model_id),
                vectors=side.vectors,
                category_vectors=side.category_vectors,
                t=side.temperature,
            )
    return side


def _key(row: dict) -> tuple:
    return (
        row["arm"],
        round(float(row["rho"]), 6),
        round(float(row["gain"]), 6),
        round(float(row["eta"]), 6),
        int(row["seed"]),
    )


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _complete(row: dict) -> bool:
    """False for a row cut short (a process killed while writing it): a missing field, or one too many."""
    return None not in row and all(v is not None for v in row.values())


def _done(rows: list[dict], key: str) -> set[tuple]:
    """The runs that ``rows`` hold in full under config ``key``."""
    return {_key(r) for r in rows if r.get("config") == key and _complete(r)}


def run_sweep(
    cfg: WorldsConfig,
    runs_csv: str | Path,
    *,
    text_cache: str | Path | None = None,
    text=None,
    shard: tuple[int, int] = (0, 1),
    done_from: Sequence[str | Path] = (),
) -> list[dict]:
    """Train every arm x ρ x g x η x seed not yet in ``runs_csv`` (nor in a ``done_from`` file); returns all
    rows of ``runs_csv``.

    ``shard = (i, n)``: only the worlds (g, ρ) whose index modulo n is i, so n processes (each with its
    own ``runs_csv``) share a many-core machine; ``summarise`` reads their files together.
    ``run_sweep_jobs`` starts those processes itself."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"worlds: shard {index}/{count} is not one of 0..{count - 1}")
    from medfilip.worlds.metrics import world_metrics
    from medfilip.worlds.settings import METRICS
    from medfilip.worlds.train import Targets, train_arm
    from medfilip.worlds.world import build_world, draw_samples, noisy_categories, prototype_distances

    runs_csv = Path(runs_csv)
    rows = read_rows(runs_csv)
    key = cfg.key()
    done = _done(rows + [r for path in done_from if Path(path) != runs_csv for r in read_rows(path)], key)
    text = text or text_side(cfg, text_cache)
    visual, measure = prototype_distances(cfg)
    train, test = draw_samples(cfg, "train", cfg.n_train), draw_samples(cfg, "test", cfg.n_test)
    clean = [s.category for s in train]
    columns = [*KEYS, "config", "rho_search", "rho_measured", "seconds", *METRICS]
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    new_file = not runs_csv.exists() or not rows
    with runs_csv.open("a" if not new_file else "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new_file:
            writer.writeheader()
        elif not runs_csv.read_bytes().endswith(b"\n"):  # a row cut short (killed): the next one on its own line
            f.write("\r\n")
        worlds = [(gain, rho) for gain in cfg.gains for rho in cfg.rhos]
        for k, (gain, rho) in enumerate(worlds):
            if k % count != index:
                continue
            todo = [
                (eta, seed, arm)
                for eta in cfg.etas
                for seed in cfg.seeds
                for arm in cfg.arms
                if (arm, round(rho, 6), round(gain, 6), round(eta, 6), int(seed)) not in done
            ]
            if not todo:
                continue
            start = time.perf_counter()
            world = build_world(cfg, text, rho, gain, visual, measure)
            train_images, test_images = world.render(train), world.render(test)
            targets = Targets.of(world)
            log.info(
                "worlds: rho %.2f (search %.3f, measured %.3f) g %.2f: %d runs (rendered in %.1f s)",
                rho,
                world.rho_search,
                world.rho_measured,
                gain,
                len(todo),
                time.perf_counter() - start,
            )
            for eta, seed, arm in todo:
                cats = noisy_categories(clean, eta, cfg.world_seed)
                ids = np.array(
                    [
                        text.index[(c, s.placement.severity, s.placement.location)]
                        for c, s in zip(cats, train, strict=True)
                    ]
                )
                result = train_arm(world, arm, train_images, ids, seed, targets=targets)
                metrics = world_metrics(world, result.model, test, test_images, train_images, clean)
                row = {
                    "arm": arm,
                    "rho": rho,
                    "gain": gain,
                    "eta": eta,
                    "seed": seed,
                    "config": key,
                    "rho_search": round(world.rho_search, 4),
                    "rho_measured": round(world.rho_measured, 4),
                    "seconds": round(result.seconds, 2),
                    **{m: round(metrics[m], 6) for m in METRICS},
                }
                writer.writerow(row)
                f.flush()
                rows.append({k: str(v) for k, v in row.items()})
                log.info(
                    "worlds: %s rho %.2f g %.2f eta %.2f seed %d: %.1f s, cat_auc %.3f",
                    arm,
                    rho,
                    gain,
                    eta,
                    seed,
                    result.seconds,
                    metrics["cat_auc"],
                )
    return rows


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
    grid = [
        (str(arm), round(rho, 6), round(gain, 6), round(eta, 6), int(seed), key)
        for gain in cfg.gains
        for rho in cfg.rhos
        for eta in cfg.etas
        for seed in cfg.seeds
        for arm in cfg.arms
    ]
    order = {k: i for i, k in reversed(list(enumerate(grid)))}  # a value listed twice: its first place
    columns: list[str] = []
    merged: dict[tuple, dict] = {}
    for path in [runs_csv, *parts]:
        rows = read_rows(path)
        columns += [name for name in (rows[0] if rows else {}) if name is not None and name not in columns]
        for row in rows:
            if not _complete(row):
                log.warning(
                    "worlds: %s: a row cut short (arm %s, rho %s) dropped", path, row.get("arm"), row.get("rho")
                )
                continue
            merged.setdefault((*_key(row), row.get("config")), row)
    rows = sorted(merged.values(), key=lambda r: order.get((*_key(r), r.get("config")), -1))  # stable
    if rows:
        write_csv_atomic(rows, runs_csv, fieldnames=columns)
    return rows


def read_runs(path: str | Path) -> list[dict]:
    """The runs of a runs file and of the job files beside it (a ``--jobs`` sweep that was stopped before
    its merge), each run once; rows cut short are left out."""
    runs: dict[tuple, dict] = {}
    for part in [Path(path), *job_files(path)]:
        for row in read_rows(part):
            if _complete(row):
                runs.setdefault((*_key(row), row.get("config")), row)
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
    worlds = [(gain, rho) for gain in cfg.gains for rho in cfg.rhos]
    count = min(jobs, len(worlds))
    if count == 1:
        rows = run_sweep(cfg, runs_csv, text_cache=text_cache, shard=shard, done_from=earlier)
        if earlier:
            rows = merge_runs(cfg, runs_csv, earlier)
            for path in earlier:
                path.unlink()
        return rows
    key = cfg.key()
    done = _done([r for path in [runs_csv, *earlier] for r in read_rows(path)], key)
    wanted = {
        (str(a), round(rho, 6), round(g, 6), round(e, 6), int(s))
        for a in cfg.arms
        for g, rho in worlds
        for e in cfg.etas
        for s in cfg.seeds
    }
    pending = sorted(
        {
            k % count
            for k, (g, rho) in enumerate(worlds)
            for w in wanted - done
            if w[1:3] == (round(rho, 6), round(g, 6))
        }
    )
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


def current(rows: list[dict], cfg: WorldsConfig) -> list[dict]:
    """The rows made under this config's key (a runs file may hold older ones)."""
    key = cfg.key()
    return [r for r in rows if r.get("config") == key]


def summarise(rows: list[dict], cfg: WorldsConfig) -> list[dict]:
    """Long table: arm x ρ x g x η x metric, mean [t 95 %] over seeds, n, and the paired delta vs identity."""
    from medfilip.evaluation.seeds import DELTA, paired_t_seeds, t_interval
    from medfilip.worlds.settings import METRICS

    by: dict[tuple, dict[int, dict]] = {}
    measured: dict[tuple, float] = {}
    for r in current(rows, cfg):
        k = (r["arm"], round(float(r["rho"]), 6), round(float(r["gain"]), 6), round(float(r["eta"]), 6))
        by.setdefault(k, {})[int(r["seed"])] = r
        measured[k[1:]] = float(r["rho_measured"])
    out = []
    for (arm, rho, gain, eta), seeds in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][3], kv[0][1], kv[0][0])):
        base = by.get(("identity", rho, gain, eta), {})
        for metric in METRICS:
            values = [float(seeds[s][metric]) for s in sorted(seeds)]
            ti = t_interval(values)
            paired = [float(seeds[s][metric]) - float(base[s][metric]) for s in sorted(seeds) if s in base]
            di = t_interval(paired)
            out.append(
                {
                    "arm": arm,
                    "rho": rho,
                    "rho_measured": measured[(rho, gain, eta)],
                    "gain": gain,
                    "eta": eta,
                    "metric": metric,
                    "mean": _r(ti.mean),
                    "low": _r(ti.low),
                    "high": _r(ti.high),
                    "sd": _r(ti.sd),
                    "n": ti.n,
                    "delta_vs_identity": _r(di.mean),
                    "delta_low": _r(di.low),
                    "delta_high": _r(di.high),
                    "delta_sd": _r(di.sd),
                    "delta_n": di.n,
                    "seeds_for_0.01": paired_t_seeds(DELTA, di.sd) or "" if arm != "identity" else "",
                }
            )
    return out


def _r(x: float) -> float | str:
    return "" if not math.isfinite(x) else round(x, 6)


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def verdicts(rows: list[dict], cfg: WorldsConfig) -> list[dict]:
    """Each pre-registered prediction against the runs: the paired (by seed) t interval of arm - versus,
    pooled over the selected worlds' seeds at the largest gain (each world x seed one pair).

    Each row also states its power: the SD of the paired difference, the pairs a paired t-test needs
    to find the endpoint's difference that matters (default 0.01) and the difference its n pairs
    detect (both at the endpoint's alpha and power); ``primary`` marks the endpoint's prediction."""
    from medfilip.evaluation.seeds import ALPHA, DELTA, POWER, detectable_difference, paired_t_seeds, t_interval

    gain = max(round(float(g), 6) for g in cfg.gains)
    rows = current(rows, cfg)
    index = {_key(r): r for r in rows}
    end = cfg.endpoint
    difference, alpha, power = (end.difference_that_matters, end.alpha, end.power) if end else (DELTA, ALPHA, POWER)
    out = []
    for p in cfg.predictions:
        diffs = []
        for r in rows:
            rho, g, eta = round(float(r["rho"]), 6), round(float(r["gain"]), 6), round(float(r["eta"]), 6)
            if r["arm"] != p.arm or g != gain:
                continue
            if (p.rho == "le0" and rho > 0) or (p.rho == "eq1" and rho != max(round(x, 6) for x in cfg.rhos)):
                continue
            if p.eta is not None and eta != round(p.eta, 6):
                continue
            other = index.get((p.versus, rho, g, eta, int(r["seed"])))
            if other is not None:
                diffs.append(float(r[p.metric]) - float(other[p.metric]))
        ti = t_interval(diffs, level=1 - alpha)
        if ti.n < 2:
            verdict = "not run"
        elif p.expect == "greater":
            verdict = "supported" if ti.low > 0 else "not supported"
        elif p.expect == "not_greater":
            verdict = "supported" if ti.low <= 0 else "not supported"
        else:
            verdict = "supported" if (ti.low > 0 or ti.high < 0) else "not supported"
        out.append(
            {
                "id": p.id,
                "prediction": p.text,
                "contrast": f"{p.arm} - {p.versus}",
                "metric": p.metric,
                "rho": p.rho,
                "eta": "" if p.eta is None else p.eta,
                "gain": gain,
                "mean": _r(ti.mean),
                "low": _r(ti.low),
                "high": _r(ti.high),
                "n": ti.n,
                "expect": p.expect,
                "verdict": verdict,
                "primary": "yes" if end is not None and end.prediction == p.id else "",
                "sd": _r(ti.sd),
                f"pairs_for_{difference:g}": paired_t_seeds(difference, ti.sd, power=power, alpha=alpha) or "",
                "detectable": _r(detectable_difference(ti.n, ti.sd, power=power, alpha=alpha)),
            }
        )
    return out


FIGURE_METRICS = ("cat_auc", "auc_rare", "combo_auc", "close_auc")


def figure(table: list[dict], path: str | Path) -> Path:
    """Each arm minus identity (paired mean, t band) against the measured ρ; a row per (g, η), a column per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = sorted({(float(r["gain"]), float(r["eta"])) for r in table})
    arms = sorted({r["arm"] for r in table if r["arm"] != "identity"})
    fig, axes = plt.subplots(
        len(worlds) or 1,
        len(FIGURE_METRICS),
        figsize=(3.2 * len(FIGURE_METRICS), 2.6 * max(len(worlds), 1)),
        squeeze=False,
    )
    for i, (gain, eta) in enumerate(worlds):
        for j, metric in enumerate(FIGURE_METRICS):
            ax = axes[i][j]
            ax.axhline(0, color="0.5", lw=0.8)
            for arm in arms:
                pts = sorted(
                    (float(r["rho_measured"]), r)
                    for r in table
                    if r["arm"] == arm
                    and r["metric"] == metric
                    and float(r["gain"]) == gain
                    and float(r["eta"]) == eta
                    and r["delta_vs_identity"] != ""
                )
                if not pts:
                    continue
                x = [p[0] for p in pts]
                y = [float(p[1]["delta_vs_identity"]) for p in pts]
                (line,) = ax.plot(x, y, marker="o", ms=3, lw=1, label=arm)
                lo = [float(p[1]["delta_low"]) if p[1]["delta_low"] != "" else np.nan for p in pts]
                hi = [float(p[1]["delta_high"]) if p[1]["delta_high"] != "" else np.nan for p in pts]
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
            ax.set_title(f"{metric}  g={gain:g} η={eta:g}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(worlds) - 1:
                ax.set_xlabel("measured Mantel r (rendered)", fontsize=7)
            if j == 0:
                ax.set_ylabel("arm − identity", fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
