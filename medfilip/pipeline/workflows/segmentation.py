"""What workflow/rules/segmentation.smk needs from the config (imported at DAG time: keep it light).

One job per pretrained run (``results/segmentation/runs/{run}/``) and one for the random-init
baseline (``results/segmentation/baseline/random_init/``), then one table job. A run's job depends
on its model.pt, the SIIM store and the segmentation settings only, so adding a run fine-tunes that
run alone, and a segmentation setting re-runs segmentation and nothing upstream.
"""

from __future__ import annotations

from typing import Any

from medfilip.pipeline import paths

STORE = paths.SEGMENTATION_STORE_DIR
BASELINE_DIR = paths.SEGMENTATION_BASELINE_DIR
TABLE = paths.SEGMENTATION_TABLE
LONG_TABLE = paths.SEGMENTATION_LONG_TABLE
FIGURE = paths.SEGMENTATION_FIGURE


def segmentation_enabled(cfg: Any) -> bool:
    return bool(cfg.evaluation.segmentation.enabled and cfg.datasets.siim.enabled)


def segmentation_targets(cfg: Any) -> list[str]:
    """The table, its long form and the figure (for `rule all`), when segmentation is enabled."""
    return [TABLE, LONG_TABLE, FIGURE] if segmentation_enabled(cfg) else []


def run_folders(cfg: Any) -> list[str]:
    """The output folder of every pretrained run, then the baseline's (the table's row order)."""
    return [paths.SEGMENTATION_RUN_DIR.format(run=run) for run in cfg.training.runs] + [BASELINE_DIR]


def job_threads(cores: int) -> int:
    """Torch threads per job: several small jobs side by side use 2 cores better than one at a time."""
    return max(1, int(cores) // 4)
