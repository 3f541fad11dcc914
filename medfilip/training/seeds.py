"""Means over seeds, with paired bootstrap intervals: the method comparison of config/simulation.yaml.

A *method* is a (label variant, target, loss) of ``training.runs``; its runs differ only in their
``seed`` (``medfilip``, ``medfilip_s1``, ``medfilip_s2``). For each method and each metric of the
zero-shot table's summary row (``downstream_mean_auc``, ``mean_auc``; read by name):

- ``<metric>``: the mean over its seeds, with ``<metric>_low`` / ``_high`` a percentile bootstrap
  interval of that mean (resampling seeds);
- ``delta_<metric>_vs_medfilip``: the mean over seeds of (method - medfilip) *at the same seed*,
  with a paired bootstrap interval (the same resampled seeds for both), when medfilip has that
  seed. A seed one of them lacks is left out of the pairing (said in ``note``).

With 3 seeds a bootstrap over seeds is coarse (27 distinct resamples); the per-seed values are in
``values`` so a reader can see them. The image-level intervals of each run are in zeroshot.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.evaluation.ablation import _value
from medfilip.io import write_csv_atomic

METRICS = ("downstream_mean_auc", "mean_auc")
REFERENCE = "medfilip"


def _seed(settings: Any, default: int) -> int:
    seed = settings.get("seed") if isinstance(settings, dict) else getattr(settings, "seed", None)
    return default if seed is None else int(seed)


def methods(runs: dict[str, Any], default_seed: int = 0) -> dict[tuple[str, str, str], dict[int, str]]:
    """(variant, target, loss) -> {seed: run name}; a seed given twice keeps the first run."""
    out: dict[tuple[str, str, str], dict[int, str]] = {}
    for name, s in runs.items():
        key = (_value(s, "label_variant"), _value(s, "target"), _value(s, "loss"))
        out.setdefault(key, {}).setdefault(_seed(s, default_seed), name)
    return out


def _float(row: dict | None, column: str) -> float:
    try:
        return float(row[column]) if row and row.get(column) not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def seed_rows(
    zeroshot: dict[str, dict],
    runs: dict[str, Any],
    *,
    default_seed: int = 0,
    n_resamples: int = 1000,
    bootstrap_seed: int = 0,
) -> list[dict]:
    from medfilip.evaluation.bootstrap import mean_interval

    groups = methods(runs, default_seed)
    reference = next((g for g in groups.values() if REFERENCE in g.values()), None)
    rows = []
    for (variant, target, loss), by_seed in groups.items():
        name = min(by_seed.values(), key=len)
        seeds = sorted(by_seed)
        row: dict = {
            "method": name,
            "label_variant": variant,
            "target": target,
            "loss": loss,
            "n_seeds": len(seeds),
            "seeds": " ".join(map(str, seeds)),
            "runs": " ".join(by_seed[s] for s in seeds),
        }
        notes = []
        missing = [by_seed[s] for s in seeds if by_seed[s] not in zeroshot]
        if missing:
            notes.append(f"not in the zero-shot table: {', '.join(missing)}")
        for metric in METRICS:
            values = np.array([_float(zeroshot.get(by_seed[s]), metric) for s in seeds])
            iv = mean_interval(values, n_resamples=n_resamples, seed=bootstrap_seed)
            row.update(
                iv.as_dict(metric) if iv.n_resamples else {metric: "", f"{metric}_low": "", f"{metric}_high": ""}
            )
            row[f"{metric}_values"] = " ".join("" if np.isnan(v) else f"{v:.4f}" for v in values)
            delta = f"delta_{metric}_vs_{REFERENCE}"
            row.update({delta: "", f"{delta}_low": "", f"{delta}_high": ""})
            if reference is None or by_seed is reference:
                continue
            paired = [s for s in seeds if s in reference]
            diffs = np.array(
                [_float(zeroshot.get(by_seed[s]), metric) - _float(zeroshot.get(reference[s]), metric) for s in paired]
            )
            if len(paired) < len(seeds) and metric == METRICS[0]:
                notes.append(f"seeds without a {REFERENCE} run: {sorted(set(seeds) - set(paired))}")
            div = mean_interval(diffs, n_resamples=n_resamples, seed=bootstrap_seed)
            if div.n_resamples:
                row.update(div.as_dict(delta))
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def write_seed_summary(zeroshot_csv: str | Path, runs: dict[str, Any], out: str | Path, **kwargs) -> list[dict]:
    path = Path(zeroshot_csv)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no zero-shot table (run the zeroshot rule first)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if "run" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no 'run' column (not a zeroshot.csv)")
        zeroshot = {r["run"]: r for r in reader}
    rows = seed_rows(zeroshot, runs, **kwargs)
    fields = list(dict.fromkeys(k for r in rows for k in r if k != "note")) + ["note"]
    write_csv_atomic(rows, out, fieldnames=fields)
    return rows
