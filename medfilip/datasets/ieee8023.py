"""The ieee8023 covid-chestxray-dataset metadata (Cohen et al. 2020) as the cxr_real pack ships it.

``<root>/metadata.csv`` has the ieee8023 columns (patientid, sex, age, finding, view, clinical_notes,
license, ...) plus ``pack_path`` (the image, relative to the pack: ``ieee8023/images/*.png`` or
``covid/COVID/ieee8023__*.png``) and ``lung_mask_path`` (a lung mask aligned to the image, or empty).
A plain ieee8023 checkout names its image in ``filename`` under ``images/``: that works too.

Besides the reader: the adult-only COVID comparison. The COVID-19 Radiography folders of the pack
are confounded by source (every COVID image adult, every Normal / Viral Pneumonia one a Kermany
child). Within ieee8023 both classes come from the same kind of source (adult case reports):
COVID-19 vs the other pneumonias. :func:`write_covid_adult_layout` writes that set in the COVID-19
Radiography layout (``COVID/``, ``Pneumonia/``: symbolic links), so ``read_covid`` and the image
store read it unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from medfilip.datasets.readers import DatasetLayoutError

log = logging.getLogger(__name__)

METADATA = "metadata.csv"
REQUIRED = ("patientid", "finding", "view")
# ieee8023 findings that are a pneumonia other than COVID-19 (ARDS alone and "No Finding" are not)
NON_COVID_PNEUMONIA = frozenset(
    {
        "Pneumocystis",
        "Streptococcus",
        "Pneumonia",
        "Klebsiella",
        "E.Coli",
        "Varicella",
        "Mycoplasma Bacterial Pneumonia",
        "Legionella",
        "Lipoid",
        "Bacterial",
        "Influenza",
        "SARS",
        "MERS",
        "Chlamydophila",
        "Aspergillosis",
        "Nocardia",
        "Herpes",
        "Tuberculosis",
        "Fungal",
        "Viral",
    }
)
ADULT_AGE = 18


def _resolve(root: Path, rel: object) -> Path | None:
    if not isinstance(rel, str) or not rel.strip():
        return None
    for base in (root.parent, root):  # pack paths are relative to the pack; a checkout's to itself
        if (base / rel).exists():
            return base / rel
    return root.parent / rel


def read_ieee8023(root: str | Path) -> pd.DataFrame:
    """One row per image whose file exists: image_id, path, patientid, sex, age (NaN = not given),
    finding, is_covid, view, clinical_notes ("" = none), lung_mask (path or None), license.
    Rows naming a missing image are dropped with a warning (``attrs["n_dropped"]`` counts them)."""
    root = Path(root)
    csv = root / METADATA
    if not csv.is_file():
        raise DatasetLayoutError(f"{root}: no {METADATA} (the ieee8023 metadata)")
    meta = pd.read_csv(csv, dtype={"patientid": str})
    missing = [c for c in REQUIRED if c not in meta.columns]
    if "pack_path" not in meta.columns and "filename" not in meta.columns:
        missing.append("pack_path or filename")
    if missing:
        raise DatasetLayoutError(f"{csv}: lacks column(s) {missing}")
    if "pack_path" in meta.columns:
        paths = [_resolve(root, p) for p in meta["pack_path"]]
    else:
        paths = [_resolve(root, f"images/{f}") for f in meta["filename"]]
    masks = [_resolve(root, p) for p in meta.get("lung_mask_path", pd.Series([None] * len(meta)))]
    bad_age = pd.to_numeric(meta.get("age", pd.Series([None] * len(meta))), errors="coerce")
    frame = pd.DataFrame(
        {
            "image_id": [Path(p).stem if p is not None else "" for p in paths],
            "path": paths,
            "patientid": meta["patientid"].astype(str),
            "sex": meta.get("sex", pd.Series([None] * len(meta))),
            "age": bad_age.astype(float),
            "finding": meta["finding"].astype(str).str.strip(),
            "view": meta["view"].astype(str),
            "clinical_notes": meta.get("clinical_notes", pd.Series([None] * len(meta))).fillna("").astype(str),
            "lung_mask": masks,
            "license": meta.get("license", pd.Series([None] * len(meta))),
        }
    )
    frame["is_covid"] = frame["finding"].str.contains("COVID-19", regex=False)
    present = frame["path"].map(lambda p: p is not None and Path(p).is_file())
    dropped = int((~present).sum())
    if dropped:
        log.warning("%s: %d row(s) name an image that is not there: dropped", csv, dropped)
    frame = frame[present].reset_index(drop=True)
    frame.attrs["n_dropped"] = dropped
    return frame


def covid_adult_rows(meta: pd.DataFrame, min_age: int = ADULT_AGE) -> pd.DataFrame:
    """COVID-19 (with or without ARDS) vs the non-COVID pneumonias, leaving out patients known to be
    under ``min_age`` (ieee8023 images come from adult case reports; a missing age is kept and counted
    in ``attrs["n_age_missing"]``). Column ``cls``: COVID | Pneumonia."""
    first = meta["finding"].str.split(",").str[0].str.strip()
    pneumonia = first.isin(NON_COVID_PNEUMONIA) & ~meta["is_covid"]
    keep = (meta["is_covid"] | pneumonia) & ~(meta["age"] < min_age)
    rows = meta[keep].copy()
    rows["cls"] = ["COVID" if c else "Pneumonia" for c in rows["is_covid"]]
    rows.attrs["n_age_missing"] = int(rows["age"].isna().sum())
    rows.attrs["n_minors_left_out"] = int(((meta["is_covid"] | pneumonia) & (meta["age"] < min_age)).sum())
    return rows.reset_index(drop=True)


def write_covid_adult_layout(meta: pd.DataFrame, out: str | Path, min_age: int = ADULT_AGE) -> dict[str, int]:
    """The adult-only set as ``out/COVID/*.png`` and ``out/Pneumonia/*.png`` (symbolic links to the
    images); returns the image count per class and the age bookkeeping."""
    rows = covid_adult_rows(meta, min_age)
    out = Path(out)
    for cls in ("COVID", "Pneumonia"):
        (out / cls).mkdir(parents=True, exist_ok=True)
    for r in rows.itertuples(index=False):
        link = out / r.cls / Path(r.path).name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(Path(r.path).resolve(), link)
    counts = rows["cls"].value_counts().to_dict()
    return {
        "COVID": int(counts.get("COVID", 0)),
        "Pneumonia": int(counts.get("Pneumonia", 0)),
        "age_missing": rows.attrs["n_age_missing"],
        "minors_left_out": rows.attrs["n_minors_left_out"],
    }
