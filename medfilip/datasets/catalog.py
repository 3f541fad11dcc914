"""What each downstream dataset is: its source class names, their canonical categories, the class
subset evaluated by default, and where its twin and image store live.

Pure Python (no numpy/pandas): the config section imports it to check class names.

Class subsets (defaults; configurable under ``datasets.<name>.classes``):

- ``rsna`` (RSNA Pneumonia, single-label): ``Lung Opacity`` (Target 1) → ``pneumonia``,
  ``No Lung Opacity`` (Target 0) → ``normal``. Target 0 folds RSNA's "No Lung Opacity / Not Normal"
  into the negative class, as the paper's binary pneumonia-vs-normal task does.
- ``nih`` (ChestX-ray14, multi-label, 10 of 14 classes): the 8 classes with boxes in
  BBox_List_2017 (Atelectasis, Cardiomegaly, Effusion, Infiltration, Mass, Nodule, Pneumonia,
  Pneumothorax) plus the two most frequent others (Consolidation, Pleural_Thickening). Left out:
  Edema, Emphysema, Fibrosis, Hernia (no boxes; Hernia has 227 positives in 112,120 images).
- ``vinbig`` (VinBigData, multi-label, 8 of 14 classes): the 8 classes marked on the most images
  in the Kaggle train.csv, "Other lesion" (a catch-all with no single appearance) left out:
  Aortic enlargement (3,067 images), Cardiomegaly (2,300), Pleural thickening (1,981),
  Pulmonary fibrosis (1,617), Lung Opacity (1,322), Pleural effusion (1,032), Nodule/Mass (826),
  Infiltration (613).
- ``siim`` (SIIM-ACR, single-label): ``Pneumothorax`` → ``pneumothorax``, ``No Pneumothorax``
  (RLE ``-1``) → ``normal``.
- ``covid`` (COVID-19 Radiography Database, single-label, folders): ``COVID`` →
  ``covid-19 pneumonia``, ``Normal`` → ``normal``, ``Viral Pneumonia`` → ``pneumonia`` (the
  "other pneumonia" class); ``Lung_Opacity`` (non-COVID lung infection) can be added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DATASET_NAMES = ("rsna", "nih", "vinbig", "siim", "covid")

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    task: Literal["single_label", "multi_label"]
    # source class name (as spelled in the label files / folder names) -> canonical category
    categories: dict[str, str]
    default_classes: tuple[str, ...]
    # the class whose images carry no finding (single-label sets); None for multi-label sets
    negative_class: str | None = None

    def canonical(self, source_class: str) -> str:
        return self.categories[source_class]

    def label_names(self, classes: list[str] | tuple[str, ...]) -> list[str]:
        """Canonical names of the configured classes, in config order (the label columns)."""
        return [self.categories[c] for c in classes]


RSNA = DatasetSpec(
    name="rsna",
    title="RSNA Pneumonia Detection Challenge",
    task=SINGLE_LABEL,
    categories={"Lung Opacity": "pneumonia", "No Lung Opacity": "normal"},
    default_classes=("Lung Opacity", "No Lung Opacity"),
    negative_class="No Lung Opacity",
)

# Finding Labels in Data_Entry_2017 (BBox_List_2017 spells Infiltration "Infiltrate").
NIH = DatasetSpec(
    name="nih",
    title="NIH ChestX-ray14",
    task=MULTI_LABEL,
    categories={
        "Atelectasis": "atelectasis",
        "Cardiomegaly": "cardiomegaly",
        "Consolidation": "consolidation",
        "Edema": "pulmonary edema",
        "Effusion": "pleural effusion",
        "Emphysema": "emphysema",
        "Fibrosis": "fibrosis",
        "Hernia": "hiatal hernia",
        "Infiltration": "infiltrate",
        "Mass": "mass",
        "Nodule": "nodule",
        "Pleural_Thickening": "pleural thickening",
        "Pneumonia": "pneumonia",
        "Pneumothorax": "pneumothorax",
    },
    default_classes=(
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Pleural_Thickening",
    ),
)

# class_name in VinBigData train.csv
VINBIG = DatasetSpec(
    name="vinbig",
    title="VinBigData Chest X-ray Abnormalities (VinDr-CXR)",
    task=MULTI_LABEL,
    categories={
        "Aortic enlargement": "aortic enlargement",
        "Atelectasis": "atelectasis",
        "Calcification": "calcification",
        "Cardiomegaly": "cardiomegaly",
        "Consolidation": "consolidation",
        "ILD": "interstitial lung disease",
        "Infiltration": "infiltrate",
        "Lung Opacity": "lung opacity",
        "Nodule/Mass": "nodule",
        "Other lesion": "lung lesion",
        "Pleural effusion": "pleural effusion",
        "Pleural thickening": "pleural thickening",
        "Pneumothorax": "pneumothorax",
        "Pulmonary fibrosis": "fibrosis",
    },
    default_classes=(
        "Aortic enlargement",
        "Cardiomegaly",
        "Pleural thickening",
        "Pulmonary fibrosis",
        "Lung Opacity",
        "Pleural effusion",
        "Nodule/Mass",
        "Infiltration",
    ),
)

SIIM = DatasetSpec(
    name="siim",
    title="SIIM-ACR Pneumothorax Segmentation",
    task=SINGLE_LABEL,
    categories={"Pneumothorax": "pneumothorax", "No Pneumothorax": "normal"},
    default_classes=("Pneumothorax", "No Pneumothorax"),
    negative_class="No Pneumothorax",
)

# Folder names of the COVID-19 Radiography Database (v4+: <class>/images/<class>-<n>.png)
COVID = DatasetSpec(
    name="covid",
    title="COVID-19 Radiography Database",
    task=SINGLE_LABEL,
    categories={
        "COVID": "covid-19 pneumonia",
        "Normal": "normal",
        "Viral Pneumonia": "pneumonia",
        "Lung_Opacity": "lung opacity",
    },
    default_classes=("COVID", "Normal", "Viral Pneumonia"),
    negative_class="Normal",
)

SPECS: dict[str, DatasetSpec] = {s.name: s for s in (RSNA, NIH, VINBIG, SIIM, COVID)}


def enabled_datasets(datasets_config) -> list[str]:
    """Names of the enabled datasets, in DATASET_NAMES order (``datasets_config`` = cfg.datasets)."""
    return [name for name in DATASET_NAMES if getattr(datasets_config, name).enabled]
