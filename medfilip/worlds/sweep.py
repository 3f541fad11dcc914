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


def run_key(row: dict) -> tuple:
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


def grid_worlds(cfg: WorldsConfig) -> list[tuple[float, float]]:
    """The worlds (g, ρ) in sweep order; shard i/n takes those whose index modulo n is i."""
    return [(gain, rho) for gain in cfg.gains for rho in cfg.rhos]


def grid_runs(cfg: WorldsConfig) -> list[tuple]:
    """Every run of the grid as its ``run_key``, in the order ``run_sweep`` trains them (world, η, seed, arm)."""
    return [
        (str(arm), round(rho, 6), round(gain, 6), round(eta, 6), int(seed))
        for gain, rho in grid_worlds(cfg)
        for eta in cfg.etas
        for seed in cfg.seeds
        for arm in cfg.arms
    ]


def complete_row(row: dict) -> bool:
    """False for a row cut short (a process killed while writing it): a missing field, or one too many."""
    return None not in row and all(v is not None for v in row.values())


def done_runs(rows: list[dict], key: str) -> set[tuple]:
    """The runs that ``rows`` hold in full under config ``key``."""
    return {run_key(r) for r in rows if r.get("config") == key and complete_row(r)}


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
    ``medfilip.worlds.jobs.run_sweep_jobs`` starts those processes itself."""
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
    done = done_runs(rows + [r for path in done_from if Path(path) != runs_csv for r in read_rows(path)], key)
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
        for k, (gain, rho) in enumerate(grid_worlds(cfg)):
            if k % count != index:
                continue
            todo = [
                (eta, seed, arm)
                for eta in cfg.etas
                for seed in cfg.seeds
                for arm in cfg.arms
                if (str(arm), round(rho, 6), round(gain, 6), round(eta, 6), int(seed)) not in done
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
    index = {run_key(r): r for r in rows}
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
