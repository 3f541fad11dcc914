"""Replicate worlds: is a contrast's dependence on ρ larger than the spread between worlds at one ρ?

Each ρ of the sweep is one world: one permutation σ, one draw of patients and placements
(``world_seed``). Its t-interval over training seeds says nothing about another σ at the same ρ.
Here the same grid runs again under other ``world_seed`` values (other permutations and patients,
the same prototypes), and the contrast's per-world mean is set against the measured ρ:

- ``between``: per ρ, the mean over worlds of the per-world paired mean, with its t-interval over
  worlds (n = worlds), and the SD between worlds;
- ``slope``: the least-squares slope of the per-world mean on the measured ρ, with its t-interval
  (n − 2 degrees of freedom over the worlds).

An exploratory check, not one of the pre-registered predictions.
``medfilip world --replicates 1 2 3`` runs and writes results/tables/worlds_replicates.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medfilip.worlds.settings import WorldsConfig

log = logging.getLogger(__name__)

CONTRASTS = (("ssm", "identity"), ("multi_hot", "identity"), ("ssm_oracle", "identity"))
METRIC = "cat_auc"


def world_means(rows: list[dict], arm: str, versus: str, metric: str) -> list[dict]:
    """Per world (world_seed, ρ, g, η): the mean over seeds of ``arm − versus`` on ``metric`` (paired by seed)."""
    by: dict[tuple, dict[str, dict[int, float]]] = {}
    measured: dict[tuple, float] = {}
    for r in rows:
        world = (int(r["world_seed"]), float(r["rho"]), float(r["gain"]), float(r["eta"]))
        by.setdefault(world, {}).setdefault(r["arm"], {})[int(r["seed"])] = float(r[metric])
        measured[world] = float(r["rho_measured"])
    out = []
    for world, arms in sorted(by.items()):
        a, b = arms.get(arm, {}), arms.get(versus, {})
        diffs = [a[s] - b[s] for s in sorted(a) if s in b]
        if diffs:
            out.append(
                {
                    "world_seed": world[0],
                    "rho": world[1],
                    "gain": world[2],
                    "eta": world[3],
                    "rho_measured": measured[world],
                    "mean": float(np.mean(diffs)),
                    "seeds": len(diffs),
                }
            )
    return out


def slope_interval(x: list[float], y: list[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(slope, low, high, n) of the least-squares line of ``y`` on ``x``, Student-t with n − 2 df."""
    from scipy import stats

    x_, y_ = np.asarray(x, float), np.asarray(y, float)
    n = len(x_)
    if n < 3 or np.ptp(x_) == 0:
        return float("nan"), float("nan"), float("nan"), n
    fit = stats.linregress(x_, y_)
    q = float(stats.t.ppf(0.5 + level / 2, n - 2))
    return float(fit.slope), float(fit.slope - q * fit.stderr), float(fit.slope + q * fit.stderr), n


def between_worlds(rows: list[dict], metric: str = METRIC) -> list[dict]:
    """Per contrast: a row per ρ (mean of the world means, t-interval over worlds, SD between worlds) and
    a ``slope`` row (the world means on the measured ρ)."""
    from medfilip.evaluation.seeds import t_interval

    out = []
    for arm, versus in CONTRASTS:
        worlds = world_means(rows, arm, versus, metric)
        for rho in sorted({w["rho"] for w in worlds}):
            at = [w for w in worlds if w["rho"] == rho]
            ti = t_interval([w["mean"] for w in at])
            out.append(
                {
                    "contrast": f"{arm} - {versus}",
                    "metric": metric,
                    "rho": rho,
                    "rho_measured": round(float(np.mean([w["rho_measured"] for w in at])), 4),
                    "worlds": ti.n,
                    "mean": round(ti.mean, 6),
                    "low": round(ti.low, 6),
                    "high": round(ti.high, 6),
                    "sd_between_worlds": round(ti.sd, 6),
                    "world_means": " ".join(f"{w['mean']:+.3f}" for w in at),
                }
            )
        slope, low, high, n = slope_interval([w["rho_measured"] for w in worlds], [w["mean"] for w in worlds])
        out.append(
            {
                "contrast": f"{arm} - {versus}",
                "metric": metric,
                "rho": "slope",
                "rho_measured": "",
                "worlds": n,
                "mean": round(slope, 6),
                "low": round(low, 6),
                "high": round(high, 6),
                "sd_between_worlds": "",
                "world_means": "per unit of measured rho",
            }
        )
    return out


def run_replicates(
    base: WorldsConfig,
    world_seeds: list[int],
    *,
    base_runs: str | Path,
    folder: str | Path,
    text_cache: str | Path | None,
    seeds: int = 12,
    arms: tuple[str, ...] = ("identity", "ssm", "multi_hot", "ssm_oracle"),
    gain: float = 1.0,
    eta: float = 0.0,
    jobs: int = 2,
) -> list[dict]:
    """The runs of ``base``'s own world (read from ``base_runs``) and of each replicate ``world_seed``
    (trained into ``folder``/runs.w<seed>.csv, resumable), at one gain and η, seeds 0..``seeds``-1;
    each row carries its ``world_seed``."""
    import yaml

    from medfilip.worlds.jobs import read_runs, run_sweep_jobs
    from medfilip.worlds.sweep import current, grid_runs, run_key

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ws in [base.world_seed, *[w for w in world_seeds if w != base.world_seed]]:
        cfg = base.model_copy(
            update={"world_seed": ws, "gains": [gain], "etas": [eta], "arms": list(arms), "seeds": list(range(seeds))}
        )
        if ws == base.world_seed:
            got = current(read_runs(base_runs), cfg)
        else:
            (folder / f"worlds.w{ws}.yaml").write_text(yaml.safe_dump({"worlds": cfg.model_dump(mode="json")}))
            run_sweep_jobs(cfg, folder / f"runs.w{ws}.csv", jobs, text_cache=text_cache)
            got = current(read_runs(folder / f"runs.w{ws}.csv"), cfg)
        keep = set(grid_runs(cfg))
        got = [{**r, "world_seed": ws} for r in got if run_key(r) in keep]
        log.info("replicates: world_seed %d: %d runs", ws, len(got))
        rows += got
    return rows
