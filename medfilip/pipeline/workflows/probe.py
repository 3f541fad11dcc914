"""What the probe rules need from the config (imported by workflow/rules/probe.smk: keep it light).

Checked when the DAG is built, before any job: a dataset name that is not a downstream dataset is
a named error; a listed dataset that is disabled or has no train split (``datasets.<name>.n_train:
0``) gets no jobs and is a documented skip (its reason in the table's ``note``), so `all` still
writes the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfilip.names import SPLITS
from medfilip.pipeline import paths

FEATURES = paths.FEATURES
RUN_SCORES = paths.PROBE_RUN_SCORES
BASELINE_SCORES = paths.PROBE_BASELINE_SCORES
TABLE = paths.LINEAR_PROBE_TABLE
PER_CLASS = paths.LINEAR_PROBE_PER_CLASS
FIGURE = paths.LINEAR_PROBE_FIGURE


class ProbeConfigError(ValueError):
    """A linear-probe setting that cannot work (names the config key)."""


def probe_settings(cfg: Any):
    return cfg.evaluation.linear_probe


def dataset_skips(cfg: Any) -> dict[str, str]:
    """Listed datasets that get no probe jobs -> the reason (for the table's note). Unknown names raise."""
    settings = probe_settings(cfg)
    names = [n for n in type(cfg.datasets).model_fields if hasattr(getattr(cfg.datasets, n), "n_train")]
    out = {}
    for name in settings.datasets:
        if name not in names:
            raise ProbeConfigError(f"evaluation.linear_probe.datasets: unknown dataset {name!r}; known: {names}")
        section = getattr(cfg.datasets, name)
        if not section.enabled:
            out[name] = f"{name}: skipped: datasets.{name}.enabled is false"
        elif section.n_train <= 0:
            out[name] = f"{name}: skipped: no train split (datasets.{name}.n_train = 0)"
    return out


def probe_datasets(cfg: Any) -> list[str]:
    """The probed datasets that get jobs: listed, enabled and with a train split."""
    skips = dataset_skips(cfg)
    return [name for name in probe_settings(cfg).datasets if name not in skips]


def imagenet_weights(cfg: Any) -> Path | None:
    """Local ImageNet weights of the ResNet baseline: the probe's key, else training.model.image_weights."""
    own = probe_settings(cfg).baselines.imagenet_weights
    if own is not None:
        return Path(own)
    shared = cfg.training.model.image_weights
    return Path(shared) if shared is not None else None


def image_arch(cfg: Any) -> str:
    return str(cfg.training.model.image_arch)


def baselines(cfg: Any) -> list[str]:
    from medfilip.evaluation.probe.baselines import baseline_names

    b = probe_settings(cfg).baselines
    if not b.enabled:
        return []
    return baseline_names(image_arch(cfg), imagenet=imagenet_weights(cfg) is not None, convnext=b.convnext)


def skipped_baselines(cfg: Any) -> list[str]:
    """Baseline rows written with a reason instead of numbers."""
    b = probe_settings(cfg).baselines
    if b.enabled and imagenet_weights(cfg) is None:
        return [f"{image_arch(cfg)}_imagenet"]
    return []


def runs(cfg: Any) -> list[str]:
    return list(cfg.training.runs)


def probe_enabled(cfg: Any) -> bool:
    """The table is built (in `all`): the probe is on and there are runs; with no probed dataset left
    it holds the skip reasons only."""
    if not probe_settings(cfg).enabled:
        return False
    dataset_skips(cfg)  # unknown names: an error now
    return bool(runs(cfg))


def feature_files(run: str, dataset: str) -> dict[str, str]:
    return {s: FEATURES.format(run=run, dataset=dataset, split=s) for s in SPLITS}


def score_files(cfg: Any) -> list[str]:
    """Every scores.npz the table reads: each run and each baseline on each probed dataset."""
    out = []
    for d in probe_datasets(cfg):
        out += [RUN_SCORES.format(run=r, dataset=d) for r in runs(cfg)]
        out += [BASELINE_SCORES.format(baseline=b, dataset=d) for b in baselines(cfg)]
    return out


def probe_targets(cfg: Any) -> list[str]:
    """The table, per-class table and figure (for `rule all`), when the probe is on."""
    return [TABLE, PER_CLASS, FIGURE] if probe_enabled(cfg) else []
