"""Means over seeds with Student-t intervals, paired differences and a power statement: the method
comparison of config/simulation.yaml.

A *method* is a (label variant, target, loss) of ``training.runs``; its runs differ only in their
``seed`` (``medfilip``, ``medfilip_s1``, ...). For each method and each metric of the zero-shot
table's summary row (``downstream_mean_auc``, ``mean_auc``; read by name):

- ``<metric>``: the mean over its seeds; ``<metric>_sd`` their standard deviation (ddof 1) and
  ``<metric>_low`` / ``_high`` the Student-t 95 % interval of the mean over seeds
  (mean ± t(0.975, n-1) · sd / sqrt(n)); ``<metric>_values`` the per-seed values;
- ``delta_<metric>_vs_medfilip``: the mean over seeds of (method - medfilip) *at the same seed*,
  with the paired Student-t interval (``_low`` / ``_high``), the SD of the paired difference
  (``_sd``), the number of paired seeds (``_n``) and the two-sided p of the paired t-test (``_p``).
  A seed one of them lacks is left out of the pairing (said in ``note``);
- ``delta_<metric>_seeds_for_0.01``: the seeds a paired difference of 0.01 needs for 80 % power
  (two-sided alpha 0.05, paired t-test, the observed SD of the paired difference): the smallest n
  whose power, from the noncentral t (:func:`paired_t_seeds`), reaches 0.8.

With ``evaluation.primary_endpoint`` (the pre-registered endpoint), a last row ``method =
primary_endpoint`` gives, for its metric and contrast ("medfilip - no_ssm", paired by seed): the
mean difference, its Student-t interval at 1 - alpha, SD, n, p and the seeds its
difference_that_matters needs at its power (:func:`endpoint_row`).

Intervals need >= 2 seeds (>= 2 paired seeds for a difference); with one (the embedded default)
the cells are empty. The image-level intervals of each run are in zeroshot.csv.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.io import write_csv_atomic
from medfilip.names import REFERENCE_RUN
from medfilip.training.settings import run_value

METRICS = ("downstream_mean_auc", "mean_auc")
# each run scored with its own text form (zeroshot.csv own_* columns): reported when the table has them
OWN_METRICS = ("own_downstream_mean_auc", "own_mean_auc")
LEVEL = 0.95
# the power statement: seeds for a paired difference of DELTA at POWER, two-sided ALPHA
DELTA = 0.01
POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 100_000


@dataclass(frozen=True)
class TInterval:
    """Mean of ``n`` values with its Student-t interval; ``sd`` with ddof 1 (NaN below 2 values)."""

    mean: float
    sd: float
    low: float
    high: float
    n: int
    p: float  # two-sided p of H0: mean = 0 (one-sample t)


def t_interval(values: np.ndarray | list[float], level: float = LEVEL) -> TInterval:
    """The Student-t interval of the mean of ``values`` (NaNs left out): mean ± t(1-a/2, n-1) sd/sqrt(n)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return TInterval(nan, nan, nan, nan, 0, nan)
    mean = float(x.mean())
    if n < 2:
        return TInterval(mean, nan, nan, nan, 1, nan)
    sd = float(x.std(ddof=1))
    sem = sd / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    if sem == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(mean) / sem, n - 1))
    return TInterval(mean, sd, mean - q * sem, mean + q * sem, n, p)


def paired_t_power(n: int, effect: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test with ``n`` pairs at standardised effect
    ``effect`` = difference / SD of the paired difference: P(|T| > t_crit), T ~ noncentral t(n-1, effect·sqrt(n))."""
    from scipy import stats

    if n < 2:
        return float("nan")
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = effect * math.sqrt(n)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def paired_t_seeds(
    difference: float, sd: float, *, power: float = POWER, alpha: float = ALPHA, max_n: int = MAX_SEEDS
) -> int | None:
    """The smallest number of paired seeds (>= 2) at which a paired t-test detects ``difference`` with
    ``power`` (two-sided ``alpha``), given the SD of the paired difference. None when ``sd`` is not a
    positive finite number or more than ``max_n`` seeds would be needed."""
    if not (math.isfinite(sd) and sd > 0) or difference == 0:
        return None
    effect = abs(difference) / sd
    # the normal approximation as a start, then exact (noncentral t) steps; power rises with n
    z = _normal_quantile(1 - alpha / 2) + _normal_quantile(power)
    n = max(2, math.ceil((z / effect) ** 2))
    if n > max_n:
        return None
    while n > 2 and paired_t_power(n - 1, effect, alpha) >= power:
        n -= 1
    while paired_t_power(n, effect, alpha) < power:
        n += 1
        if n > max_n:
            return None
    return n


def detectable_difference(n: int, sd: float, *, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest paired difference that ``n`` pairs detect with ``power`` (two-sided ``alpha``, paired t)
    at the SD ``sd`` of the paired difference; NaN below 2 pairs or without a positive finite SD."""
    if n < 2 or not (math.isfinite(sd) and sd > 0):
        return float("nan")
    low, high = 0.0, 1.0
    while paired_t_power(n, high, alpha) < power:  # effect in SD units; power rises with it
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if paired_t_power(n, mid, alpha) < power else (low, mid)
    return high * sd


def _normal_quantile(q: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(q))


def _seed(settings: Any, default: int) -> int:
    seed = settings.get("seed") if isinstance(settings, dict) else getattr(settings, "seed", None)
    return default if seed is None else int(seed)


def methods(runs: dict[str, Any], default_seed: int = 0) -> dict[tuple[str, str, str], dict[int, str]]:
    """(variant, target, loss) -> {seed: run name}; a seed given twice keeps the first run."""
    out: dict[tuple[str, str, str], dict[int, str]] = {}
    for name, s in runs.items():
        key = (run_value(s, "label_variant"), run_value(s, "target"), run_value(s, "loss"))
        out.setdefault(key, {}).setdefault(_seed(s, default_seed), name)
    return out


def _float(row: dict | None, column: str) -> float:
    try:
        return float(row[column]) if row and row.get(column) not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def _cell(x: float | int | None, digits: int = 6) -> float | int | str:
    """A table cell: empty for missing / NaN, floats rounded to ``digits`` decimals (p: 4 significant)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return round(x, digits) if isinstance(x, float) else x


def _p_cell(p: float) -> float | str:
    return "" if not math.isfinite(p) else float(f"{p:.4g}")


def seeds_column(metric: str, difference: float = DELTA) -> str:
    return f"delta_{metric}_seeds_for_{difference:g}"


def seed_rows(
    zeroshot: dict[str, dict],
    runs: dict[str, Any],
    *,
    default_seed: int = 0,
    level: float = LEVEL,
    difference: float = DELTA,
    power: float = POWER,
    reference_run: str = REFERENCE_RUN,
) -> list[dict]:
    groups = methods(runs, default_seed)
    reference = next((g for g in groups.values() if reference_run in g.values()), None)
    metrics = [*METRICS, *(m for m in OWN_METRICS if any(m in r for r in zeroshot.values()))]
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
        for metric in metrics:
            values = np.array([_float(zeroshot.get(by_seed[s]), metric) for s in seeds])
            iv = t_interval(values, level)
            row[metric] = _cell(iv.mean)
            row[f"{metric}_sd"] = _cell(iv.sd)
            row[f"{metric}_low"] = _cell(iv.low)
            row[f"{metric}_high"] = _cell(iv.high)
            row[f"{metric}_values"] = " ".join("" if np.isnan(v) else f"{v:.4f}" for v in values)
            delta = f"delta_{metric}_vs_{reference_run}"
            n_col = seeds_column(metric, difference)
            row.update({delta: "", f"{delta}_low": "", f"{delta}_high": "", f"{delta}_sd": ""})
            row.update({f"{delta}_n": "", f"{delta}_p": "", n_col: ""})
            if reference is None or by_seed is reference:
                continue
            paired = [s for s in seeds if s in reference]
            diffs = np.array(
                [_float(zeroshot.get(by_seed[s]), metric) - _float(zeroshot.get(reference[s]), metric) for s in paired]
            )
            if len(paired) < len(seeds) and metric == METRICS[0]:
                notes.append(f"seeds without a {reference_run} run: {sorted(set(seeds) - set(paired))}")
            div = t_interval(diffs, level)
            if div.n == 0:
                continue
            row.update(
                {
                    delta: _cell(div.mean),
                    f"{delta}_low": _cell(div.low),
                    f"{delta}_high": _cell(div.high),
                    f"{delta}_sd": _cell(div.sd),
                    f"{delta}_n": div.n,
                    f"{delta}_p": _p_cell(div.p),
                    n_col: _cell(paired_t_seeds(difference, div.sd, power=power)),
                }
            )
        if any(row[f"{m}_sd"] == "" for m in METRICS) and len(seeds) < 2:
            notes.append("one seed: no interval over seeds")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def endpoint_row(zeroshot: dict[str, dict], runs: dict[str, Any], endpoint: Any, default_seed: int = 0) -> dict:
    """The pre-registered primary endpoint (evaluation.primary_endpoint): ``metric`` of method a minus
    method b (``contrast`` "a - b", methods by their seed-0 / shortest run name), paired by seed."""
    by_name = {min(g.values(), key=len): g for g in methods(runs, default_seed).values()}
    a, b = endpoint.methods
    unknown = [m for m in (a, b) if m not in by_name]
    if unknown:
        raise ValueError(
            f"evaluation.primary_endpoint.contrast {endpoint.contrast!r}: no method {unknown} in training.runs "
            f"(methods: {', '.join(sorted(by_name))})"
        )
    ga, gb = by_name[a], by_name[b]
    paired = sorted(set(ga) & set(gb))
    metric = endpoint.metric
    diffs = np.array([_float(zeroshot.get(ga[s]), metric) - _float(zeroshot.get(gb[s]), metric) for s in paired])
    iv = t_interval(diffs, 1.0 - endpoint.alpha)
    notes = [f"pre-registered: {metric}, {endpoint.contrast}, paired t at alpha {endpoint.alpha:g}"]
    if iv.n and not any(metric in (zeroshot.get(ga[s]) or {}) for s in paired):
        notes.append(f"{metric} is not a column of the zero-shot table")
    needed = paired_t_seeds(endpoint.difference_that_matters, iv.sd, alpha=endpoint.alpha, power=endpoint.power)
    return {
        "method": "primary_endpoint",
        "n_seeds": iv.n,
        "seeds": " ".join(map(str, paired)),
        "runs": " ".join(f"{ga[s]}-{gb[s]}" for s in paired),
        "endpoint_metric": metric,
        "endpoint_contrast": endpoint.contrast,
        "endpoint_difference": _cell(iv.mean),
        "endpoint_low": _cell(iv.low),
        "endpoint_high": _cell(iv.high),
        "endpoint_level": 1.0 - endpoint.alpha,
        "endpoint_sd": _cell(iv.sd),
        "endpoint_p": _p_cell(iv.p),
        "endpoint_difference_that_matters": endpoint.difference_that_matters,
        "endpoint_power": endpoint.power,
        "endpoint_seeds_needed": _cell(needed) if math.isfinite(iv.sd) else "",
        "note": "; ".join(notes),
    }


def write_seed_summary(
    zeroshot_csv: str | Path, runs: dict[str, Any], out: str | Path, *, endpoint: Any = None, **kwargs
) -> list[dict]:
    path = Path(zeroshot_csv)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no zero-shot table (run the zeroshot rule first)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if "run" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no 'run' column (not a zeroshot.csv)")
        zeroshot = {r["run"]: r for r in reader}
    rows = seed_rows(zeroshot, runs, **kwargs)
    if endpoint is not None:
        rows.append(endpoint_row(zeroshot, runs, endpoint, kwargs.get("default_seed", 0)))
    fields = list(dict.fromkeys(k for r in rows for k in r if k != "note")) + ["note"]
    write_csv_atomic(rows, out, fieldnames=fields)
    return rows
