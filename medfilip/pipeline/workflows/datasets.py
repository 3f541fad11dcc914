"""What the dataset rules need from the config (imported by workflow/rules/datasets.smk: keep it light)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfilip.datasets.catalog import DATASET_NAMES, enabled_datasets
from medfilip.pipeline import paths

# a wildcard pattern matching the dataset names only (results/images/corpus/ is the images stage's)
DATASET_WILDCARD = "|".join(DATASET_NAMES)


def dataset_root(cfg: Any, name: str) -> Path:
    """The folder the dataset is read from: its configured root, else its twin."""
    root = getattr(cfg.datasets, name).root
    return Path(root if root is not None else paths.TWIN_DIR.format(dataset=name))


def preprocess_inputs(cfg: Any, name: str) -> dict[str, str]:
    """The twin's manifest (so the twin is built first), or the real folder."""
    root = getattr(cfg.datasets, name).root
    return {"twin": paths.TWIN_MANIFEST.format(dataset=name)} if root is None else {"root": str(root)}


def dataset_targets(cfg: Any) -> list[str]:
    """The store index of every enabled dataset (for `rule all`)."""
    return [paths.IMAGE_STORE_INDEX.format(dataset=name) for name in enabled_datasets(cfg.datasets)]


class DatasetRules:
    """The input and params functions of workflow/rules/datasets.smk, bound to the config (``cfg`` the
    validated PipelineConfig)."""

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def store_inputs(self, wildcards) -> dict[str, str]:
        return preprocess_inputs(self.cfg, wildcards.dataset)

    def root_arg(self, wildcards) -> str:
        """The folder to read: the configured real one, else the twin."""
        return str(dataset_root(self.cfg, wildcards.dataset))
