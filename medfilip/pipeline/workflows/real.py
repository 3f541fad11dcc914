"""What workflow/rules/real.smk needs from the config: the real-image stores and the tables.

Runs only when ``datasets.real_root`` is set (config/real.yaml). Every store is preprocessed by the
project's own reader into results/real/stores/<name>/: the pack's NIH (256 px and 64 px) and COVID
folders, the adult-only ieee8023 COVID set, and the phantom twins of NIH and COVID (the same runs on
the same kind of set, rendered)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfilip.pipeline import paths

REAL_DIR = f"{paths.RESULTS}/real"
STORE_INDEX = f"{REAL_DIR}/stores/{{name}}/index.parquet"
COVID_ADULT_LAYOUT = f"{REAL_DIR}/covid_adult"
COVID_ADULT_COUNTS = f"{COVID_ADULT_LAYOUT}/counts.json"
TABLES = {
    "zeroshot": f"{paths.RESULTS}/tables/real_zeroshot.csv",
    "zeroshot_per_class": f"{paths.RESULTS}/tables/real_zeroshot_per_class.csv",
    "probe": f"{paths.RESULTS}/tables/real_probe.csv",
    "probe_per_class": f"{paths.RESULTS}/tables/real_probe_per_class.csv",
    "probe_figure": f"{paths.RESULTS}/figures/real_probe.png",
    "retrieval": f"{paths.RESULTS}/tables/real_retrieval.csv",
    "gap": f"{paths.RESULTS}/tables/real_gap.csv",
    "gap_figure": f"{paths.RESULTS}/figures/real_gap.png",
    "notes": f"{paths.RESULTS}/tables/real_notes.csv",
    "notes_summary": f"{paths.RESULTS}/tables/real_notes_summary.csv",
}
# store name -> (reader, folder under the pack | a twin | the adult layout)
STORES = {
    "nih_real": ("nih", "nih"),
    "nih64_real": ("nih", "nih_64px"),
    "covid_real": ("covid", "covid"),
    "covid_adult_real": ("covid", None),
    "nih_phantom": ("nih", "twin"),
    "covid_phantom": ("covid", "twin"),
}
EVAL_SETS = list(STORES)
PROBE_STORES = ["nih_real", "nih_phantom"]
GAP_PAIRS = [("nih_phantom", "nih_real"), ("covid_phantom", "covid_real")]
WILDCARD = "|".join(STORES)


def enabled(cfg: Any) -> bool:
    return cfg.datasets.real_root is not None


def store_index(name: str) -> str:
    return STORE_INDEX.format(name=name)


def store_dir(name: str) -> str:
    return str(Path(store_index(name)).parent)


def targets(cfg: Any) -> list[str]:
    """What `rule all` asks for when datasets.real_root is set."""
    return list(TABLES.values()) if enabled(cfg) else []


def ieee8023_dir(cfg: Any) -> str:
    return str(Path(cfg.datasets.real_root) / "ieee8023")


def store_dataset(name: str) -> str:
    return STORES[name][0]


def store_inputs(cfg: Any, name: str) -> dict[str, str]:
    dataset, folder = STORES[name]
    if folder == "twin":
        return {"twin": paths.TWIN_MANIFEST.format(dataset=dataset)}
    if folder is None:
        return {"layout": COVID_ADULT_COUNTS}
    return {"root": str(Path(cfg.datasets.real_root) / folder)}


def store_root(cfg: Any, name: str) -> str:
    dataset, folder = STORES[name]
    if folder == "twin":
        return paths.TWIN_DIR.format(dataset=dataset)
    if folder is None:
        return COVID_ADULT_LAYOUT
    return str(Path(cfg.datasets.real_root) / folder)


def named(names: list[str]) -> list[str]:
    """name=folder arguments of the real-* commands."""
    return [f"{n}={store_dir(n)}" for n in names]


def gap_named(side: int) -> list[str]:
    """``real-gap``'s --phantom (side 0) or --real (side 1): each GAP_PAIRS set under one name on both
    sides (nih, covid), so the command pairs a phantom store with its real one by name."""
    return [f"{pair[1].removesuffix('_real')}={store_dir(pair[side])}" for pair in GAP_PAIRS]
