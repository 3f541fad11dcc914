"""Downstream evaluation datasets: the dataset catalog and class subsets (``catalog``), the real
label files torchxrayvision ships (``sources``), phantom twins in the real on-disk layouts
(``twins``), one reader per real dataset (``readers``), SIIM's RLE (``rle``) and the sampling and
split policy (``sampling``). Kept light: nothing heavy is imported here."""

from medfilip.datasets.catalog import DATASET_NAMES, SPECS, enabled_datasets

__all__ = ["DATASET_NAMES", "SPECS", "enabled_datasets"]
