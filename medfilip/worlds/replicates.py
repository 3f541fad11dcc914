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
``python -m medfilip.worlds.replicates --world-seeds 1 2 3`` runs and writes
results/tables/worlds_replicates.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

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


def main(argv: list[str] | None = None) -> int:
    import argparse

    import yaml

    from medfilip.pipeline import paths
    from medfilip.worlds.jobs import read_runs, run_sweep_jobs
    from medfilip.worlds.settings import load_worlds_config
    from medfilip.worlds.sweep import current, write_csv

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds-config", type=Path, default=Path("config/worlds.yaml"))
    p.add_argument("--world-seeds", type=int, nargs="+", default=[1, 2, 3], help="the replicate worlds")
    p.add_argument("--seeds", type=int, default=12, help="training seeds per replicate world")
    p.add_argument("--arms", nargs="+", default=["identity", "ssm", "multi_hot", "ssm_oracle"])
    p.add_argument("--gain", type=float, default=1.0)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--base-runs", type=Path, default=Path(paths.WORLDS_RUNS), help="the sweep's runs (world_seed 0)")
    p.add_argument("--out", type=Path, default=Path(paths.WORLDS_TABLE).with_name("worlds_replicates.csv"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = load_worlds_config(args.worlds_config)
    folder = Path(paths.WORLDS_RUNS).parent / "replicates"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ws in [base.world_seed, *args.world_seeds]:
        cfg = base.model_copy(
            update={
                "world_seed": ws,
                "gains": [args.gain],
                "etas": [args.eta],
                "arms": args.arms,
                "seeds": list(range(args.seeds)),
            }
        )
        if ws == base.world_seed:
            got = current(read_runs(args.base_runs), cfg)
        else:
            (folder / f"worlds.w{ws}.yaml").write_text(yaml.safe_dump({"worlds": cfg.model_dump(mode="json")}))
            run_sweep_jobs(cfg, folder / f"runs.w{ws}.csv", args.jobs, text_cache=paths.WORLDS_TEXTS)
            got = current(read_runs(folder / f"runs.w{ws}.csv"), cfg)
        keep = {(a, round(float(r), 6)) for a in cfg.arms for r in cfg.rhos}
        got = [
            {**r, "world_seed": ws}
            for r in got
            if (r["arm"], round(float(r["rho"]), 6)) in keep
            and float(r["gain"]) == args.gain
            and float(r["eta"]) == args.eta
            and int(r["seed"]) in cfg.seeds
        ]
        log.info("replicates: world_seed %d: %d runs", ws, len(got))
        rows += got
    table = between_worlds(rows)
    write_csv(table, args.out)
    print(f"{args.out}: {len(table)} rows over {len({r['world_seed'] for r in rows})} world seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
