"""``results/figures/train_curves.png``: every run's loss (and learning rate) against the step, and
with ``training.validate_every`` its validate AUC against the epoch (medfilip/training/curve.py)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def read_train_log(path: str | Path) -> dict[str, list[float]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {k: [float(r[k]) for r in rows if r.get(k) not in (None, "")] for k in rows[0]}


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_train_curves(run_dirs: list[Path], out: str | Path, window: int = 10) -> Path:
    """One line per run (smoothed over ``window`` steps, raw values faint behind) for the total
    loss, plus the learning rate; a run folder without train_log.csv is skipped with a warning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfilip.io import save_figure
    from medfilip.training.curve import CURVE_FILE, read_curve

    curves = {Path(p).name: read_curve(Path(p) / CURVE_FILE) for p in run_dirs}
    panels = 3 if any(curves.values()) else 2
    ratios = [3, 1.3, 2][:panels]
    fig, axes = plt.subplots(1, panels, figsize=(11 + 4 * (panels - 2), 4), gridspec_kw={"width_ratios": ratios})
    ax_loss, ax_lr = axes[0], axes[1]
    plotted = 0
    for run_dir in sorted(Path(p) for p in run_dirs):
        log_path = run_dir / "train_log.csv"
        if not log_path.exists():
            log.warning("%s: no train_log.csv, skipped", run_dir)
            continue
        columns = read_train_log(log_path)
        if not columns:
            continue
        (line,) = ax_loss.plot(columns["step"], moving_average(columns["loss"], window), label=run_dir.name)
        ax_loss.plot(columns["step"], columns["loss"], color=line.get_color(), alpha=0.2, linewidth=0.8)
        ax_lr.plot(columns["step"], columns["lr"], color=line.get_color(), label=run_dir.name)
        if panels == 3 and curves.get(run_dir.name):
            c = curves[run_dir.name]
            axes[2].plot(c["epoch"], c["validate_auc"], marker="o", color=line.get_color(), label=run_dir.name)
        plotted += 1
    ax_loss.set(xlabel="step", ylabel="training loss", title=f"Training loss (moving average of {window} steps)")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="SGD learning rate")
    if panels == 3:  # training.validate_every: has validate AUC levelled off?
        axes[2].set(xlabel="epoch", ylabel="validate AUC", title="Validate zero-shot AUC (own text form)")
    if plotted:
        ax_loss.legend()
    else:
        ax_loss.text(0.5, 0.5, "no training logs", ha="center", va="center", transform=ax_loss.transAxes)
    fig.tight_layout()
    return save_figure(fig, out, dpi=120)
