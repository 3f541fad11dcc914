"""The zero-shot rules' inputs: the configured runs and evaluation stores (rules/evaluation.smk)."""

from __future__ import annotations

from medfilip.evaluation.sets import CORPUS_DATASET
from medfilip.pipeline import paths


def downstream_names(cfg) -> list[str]:
    """The downstream datasets to evaluate: ``evaluation.datasets``, or every dataset enabled in ``datasets:``."""
    if cfg.evaluation.datasets is not None:
        return list(cfg.evaluation.datasets)
    names = []
    for name in type(cfg.datasets).model_fields:
        section = getattr(cfg.datasets, name)
        if getattr(section, "enabled", None) is True:
            names.append(name)
    return names


def configured_set_dirs(cfg) -> list[str]:
    """Store folders the zero-shot table reads: each downstream dataset, then the corpus (if its sets are on)."""
    dirs = [paths.store_dir(name) for name in downstream_names(cfg)]
    if cfg.evaluation.corpus.enabled:
        dirs.append(paths.store_dir(CORPUS_DATASET))
    return dirs


def configured_run_dirs(cfg) -> list[str]:
    """Model folders of every configured training run (results/models/{run}/)."""
    return [paths.model_dir(run) for run in cfg.training.runs]
