"""The category -> appearance table (data).

Each entry:
- ``zone``: the typical location when a finding states none (a location string; a sided zone
  without a side word gets a side drawn from the patient seed);
- ``scope``: ``location`` (default: the stated/typical zone), ``hemithorax`` (only the side is
  taken from the location: effusion, pneumothorax...), or ``fixed`` (the drawer or modifier decides);
- ``draw``: drawers (see :mod:`medfilip.phantom.draw`) with their parameters;
- ``modify``: anatomy modifiers (cardiomegaly, hyperinflation, scoliosis...);
- ``box``: what to draw instead of the modifiers when a box/mask overrides the location.
"""

from __future__ import annotations

from types import MappingProxyType

_OPACITY = {"draw": [{"kind": "opacity", "density": 0.6, "bronchograms": True}], "zone": "lower lobe"}
_NODULE = {"draw": [{"kind": "nodule", "radius": 0.018, "density": 0.5}], "zone": "lung"}
_HYPERINFLATION = {
    "modify": [{"kind": "hyperinflation"}],
    "scope": "fixed",
    "zone": "bilateral lung",
    "box": [{"kind": "lucency"}],
}
_RETICULAR = {"draw": [{"kind": "reticular"}], "zone": "bilateral lower lobe"}

APPEARANCE: dict[str, dict] = {
    # airspace
    "consolidation": _OPACITY,
    "pneumonia": {**_OPACITY, "draw": [{"kind": "opacity", "density": 0.55, "bronchograms": True, "rough": 0.8}]},
    "airspace disease": {**_OPACITY, "draw": [{"kind": "opacity", "density": 0.5, "rough": 0.9}]},
    "infiltrate": {**_OPACITY, "draw": [{"kind": "opacity", "density": 0.4, "rough": 1.0, "grain": 14}]},
    "opacity": {**_OPACITY, "draw": [{"kind": "opacity", "density": 0.45}]},
    "lung opacity": {**_OPACITY, "draw": [{"kind": "opacity", "density": 0.45}]},
    "covid-19 pneumonia": {
        "draw": [{"kind": "opacity", "density": 0.32, "ground_glass": True, "coverage": 0.45, "rough": 0.7}],
        "zone": "bilateral peripheral lower",
    },
    "tuberculosis": {
        "draw": [
            {"kind": "opacity", "density": 0.45, "rough": 1.0},
            {"kind": "cavity", "radius": 0.022, "wall": 0.006},
        ],
        "zone": "upper lobe",
    },
    "atelectasis": {
        "draw": [{"kind": "linear"}],
        "modify": [{"kind": "domes", "raise": 0.025}],
        "zone": "lower lobe",
    },
    "volume loss": {
        "modify": [{"kind": "volume_loss"}],
        "scope": "fixed",
        "zone": "lung",
        "box": [{"kind": "fill", "density": 0.3}],
    },
    # pleura
    "pleural effusion": {"draw": [{"kind": "effusion"}], "scope": "hemithorax", "zone": "base"},
    "blunted costophrenic angle": {
        "draw": [{"kind": "effusion", "height": 0.06, "base_height": 0.03}],
        "scope": "hemithorax",
        "zone": "costophrenic angle",
    },
    "pneumothorax": {"draw": [{"kind": "pneumothorax"}], "scope": "hemithorax", "zone": "apex"},
    "pleural thickening": {"draw": [{"kind": "pleural_thickening"}], "zone": "pleura"},
    # heart, vessels, mediastinum
    "cardiomegaly": {
        "modify": [{"kind": "heart"}],
        "scope": "fixed",
        "zone": "heart",
        "box": [{"kind": "ellipse_fill"}],
    },
    "pericardial effusion": {
        "modify": [{"kind": "heart", "globular": True, "ctr": 0.55}],
        "scope": "fixed",
        "zone": "heart",
        "box": [{"kind": "ellipse_fill"}],
    },
    "enlarged cardiomediastinum": {
        "modify": [{"kind": "mediastinum", "widen": 0.035}, {"kind": "heart", "ctr": 0.5, "ctr_gain": 0.08}],
        "scope": "fixed",
        "zone": "mediastinum",
        "box": [{"kind": "ellipse_fill"}],
    },
    "heart failure": {
        "modify": [{"kind": "heart", "ctr": 0.53, "ctr_gain": 0.1}],
        "draw": [{"kind": "edema", "density": 0.4}],
        "zone": "bilateral lung",
        "box": [{"kind": "opacity", "density": 0.35}],
    },
    "pulmonary edema": {"draw": [{"kind": "edema"}], "zone": "bilateral lung"},
    "pulmonary congestion": {"draw": [{"kind": "edema", "density": 0.25}], "zone": "bilateral lung"},
    "pulmonary hypertension": {"draw": [{"kind": "hilar", "pruning": True}], "zone": "bilateral perihilar"},
    "hilar enlargement": {"draw": [{"kind": "hilar"}], "zone": "bilateral hilum"},
    "tortuous aorta": {"draw": [{"kind": "aorta", "grow": 0.45}], "zone": "aorta"},
    "aortic enlargement": {"draw": [{"kind": "aorta", "grow": 0.7}], "zone": "aorta"},
    "aortic aneurysm": {"draw": [{"kind": "aorta", "grow": 1.3}], "zone": "aorta"},
    "atherosclerosis": {"draw": [{"kind": "aorta", "calcified": True}], "zone": "aorta"},
    "mediastinal shift": {
        "modify": [{"kind": "mediastinum", "shift": 0.05}],
        "scope": "fixed",
        "zone": "mediastinum",
        "box": [{"kind": "fill", "density": 0.4}],
    },
    "pneumomediastinum": {"draw": [{"kind": "pneumomediastinum"}], "zone": "mediastinum", "scope": "fixed_zone"},
    "epicardial fat": {"draw": [{"kind": "epicardial_fat"}], "zone": "heart", "scope": "fixed_zone"},
    # nodules and masses
    "nodule": _NODULE,
    "lung lesion": {**_NODULE, "draw": [{"kind": "nodule", "radius": 0.026, "density": 0.5, "lobulated": True}]},
    "mass": {"draw": [{"kind": "nodule", "radius": 0.045, "density": 0.55, "lobulated": True}], "zone": "lung"},
    "lung mass": {"draw": [{"kind": "nodule", "radius": 0.05, "density": 0.55, "lobulated": True}], "zone": "lung"},
    "granuloma": {"draw": [{"kind": "nodule", "radius": 0.008, "density": 1.2, "extra_count": 1}], "zone": "lung"},
    "calcification": {
        "draw": [{"kind": "nodule", "radius": 0.006, "density": 1.4, "count": 1, "extra_count": 3}],
        "zone": "lung",
    },
    "nipple shadow": {"draw": [{"kind": "nodule", "radius": 0.009, "density": 0.25}], "zone": "bilateral breast"},
    "foreign body": {"draw": [{"kind": "foreign_body"}], "zone": "lung"},
    # cavities and lucencies
    "cavitation": {
        "draw": [{"kind": "cavity", "radius": 0.03, "wall": 0.008, "fluid_level": True}],
        "zone": "upper lobe",
    },
    "cyst": {"draw": [{"kind": "cavity", "radius": 0.03, "wall": 0.0025, "density": 0.35}], "zone": "lung"},
    "bulla": {"draw": [{"kind": "cavity", "radius": 0.05, "wall": 0.002, "density": 0.3}], "zone": "apex"},
    "hyperlucency": {"draw": [{"kind": "lucency"}], "zone": "lung"},
    "emphysema": _HYPERINFLATION,
    "copd": _HYPERINFLATION,
    "hyperinflation": {**_HYPERINFLATION, "modify": [{"kind": "hyperinflation", "lucency": 0.06, "pruning": 0.2}]},
    "hypoinflation": {
        "modify": [{"kind": "domes", "raise": 0.07}],
        "scope": "fixed",
        "zone": "bilateral lung",
        "box": [{"kind": "fill", "density": 0.3}],
    },
    # interstitium and airways
    "fibrosis": _RETICULAR,
    "interstitial lung disease": {**_RETICULAR, "draw": [{"kind": "reticular", "grain": 48, "density": 0.2}]},
    "scarring": {
        "draw": [{"kind": "reticular", "grain": 24, "density": 0.3, "coverage": 0.2}, {"kind": "linear"}],
        "zone": "upper lobe",
    },
    "increased lung markings": {
        "draw": [{"kind": "reticular", "grain": 30, "density": 0.14, "coverage": 0.8}],
        "zone": "bilateral lung",
    },
    "bronchiectasis": {"draw": [{"kind": "rings", "radius": 0.009, "wall": 0.0035}], "zone": "bilateral lower lobe"},
    "peribronchial thickening": {
        "draw": [{"kind": "rings", "radius": 0.007, "wall": 0.004, "density": 0.25}],
        "zone": "bilateral perihilar",
    },
    # diaphragm and abdomen
    "elevated diaphragm": {
        "modify": [{"kind": "domes", "raise": 0.07}],
        "scope": "fixed",
        "zone": "right diaphragm",
        "box": [{"kind": "fill", "density": 0.6}],
    },
    "flattened diaphragm": {
        "modify": [{"kind": "domes", "raise": -0.04, "flatten": 0.6}],
        "scope": "fixed",
        "zone": "bilateral diaphragm",
        "box": [{"kind": "lucency"}],
    },
    "eventration": {"draw": [{"kind": "hump"}], "scope": "hemithorax", "zone": "right diaphragm"},
    "hiatal hernia": {"draw": [{"kind": "hernia"}], "zone": "retrocardiac", "scope": "fixed_zone"},
    "pneumoperitoneum": {"draw": [{"kind": "free_air"}], "zone": "bilateral diaphragm"},
    # bones and soft tissue
    "fracture": {"draw": [{"kind": "fracture"}], "zone": "ribs"},
    "deformity": {"draw": [{"kind": "fracture", "extra_count": 2}], "zone": "ribs"},
    "scoliosis": {
        "modify": [{"kind": "spine", "curve": 0.05}],
        "scope": "fixed",
        "zone": "spine",
        "box": [{"kind": "fill", "density": 0.3}],
    },
    "kyphosis": {
        "modify": [{"kind": "spine", "degeneration": 0.6, "curve": 0.008}],
        "scope": "fixed",
        "zone": "spine",
        "box": [{"kind": "fill", "density": 0.3}],
    },
    "degenerative changes": {
        "modify": [{"kind": "spine", "degeneration": 1.0}],
        "scope": "fixed",
        "zone": "spine",
        "box": [{"kind": "fill", "density": 0.3}],
    },
    "osteopenia": {"modify": [{"kind": "bones"}], "scope": "fixed", "zone": "spine", "box": [{"kind": "lucency"}]},
    "spinal fusion": {"draw": [{"kind": "rods"}], "zone": "spine", "scope": "fixed_zone"},
    "post-surgical changes": {"draw": [{"kind": "sternotomy"}], "zone": "sternum", "scope": "fixed_zone"},
    "support devices": {"draw": [{"kind": "devices"}], "zone": "mediastinum", "scope": "fixed"},
    "subcutaneous emphysema": {"draw": [{"kind": "subcutaneous_air"}], "zone": "bilateral chest wall"},
    "mastectomy": {"draw": [{"kind": "soft_tissue_loss"}], "zone": "breast"},
    "breast implants": {"draw": [{"kind": "implants"}], "zone": "bilateral breast"},
    "pectus deformity": {
        "draw": [{"kind": "opacity", "density": 0.3, "coverage": 0.5, "rough": 0.2}],
        "zone": "right middle lobe",
    },
    "pneumonectomy": {"draw": [{"kind": "fill", "density": 1.0}], "scope": "hemithorax", "zone": "lung"},
    # no finding
    "normal": {"draw": []},
}

APPEARANCE = MappingProxyType(APPEARANCE)  # read-only: the table is data
