"""The probe's intermediate result: validate and test scores of every (fraction, seed) fit of one
model (a pretrained run's linear probe, or a fine-tuned baseline) on one dataset.

One file pair per (model, dataset), ``scores.npz`` + ``scores.json``, written by the probe and the
baseline jobs and read by the table job, so a new run or a changed bootstrap setting never refits
anything else. Class columns are the *evaluated* classes (a single-label set's classes less
``normal``; every class of a multi-label set). A class that could not be fitted in a subset (no
positive or no negative train image) has NaN scores there and its reason in ``fits[*].skipped``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.io import atomic_path, write_text_atomic


class ProbeInputError(ValueError):
    """Probe input that cannot be used (no train split, mismatched features); names the file."""


@dataclass
class Fit:
    """One trained classifier set: a fraction of train, one seed (subset)."""

    fraction: float
    seed: int
    n_train: int
    n_train_pos: list[int]  # per evaluated class
    C: list[float | None]  # per evaluated class (None: baselines, or skipped)
    skipped: dict[str, str] = field(default_factory=dict)  # class -> reason
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.fraction:g}_{self.seed}"


@dataclass
class ProbeScores:
    name: str  # run or baseline name
    kind: str  # pretrained | baseline
    dataset: str
    task: str  # single_label | multi_label
    classes: list[str]  # evaluated classes (score columns)
    test_rows: np.ndarray  # store rows of the test images
    test_labels: np.ndarray  # (N_test, K) 1/0/NaN
    validate_labels: np.ndarray  # (N_val, K)
    fits: list[Fit] = field(default_factory=list)
    test_scores: dict[str, np.ndarray] = field(default_factory=dict)  # fit key -> (N_test, K)
    validate_scores: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""  # why there are no fits (a skip row), if any
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, fit: Fit, validate: np.ndarray, test: np.ndarray) -> None:
        self.fits.append(fit)
        self.validate_scores[fit.key] = np.asarray(validate, np.float64)
        self.test_scores[fit.key] = np.asarray(test, np.float64)

    def fractions(self) -> list[float]:
        return sorted({f.fraction for f in self.fits})

    def fits_at(self, fraction: float) -> list[Fit]:
        return [f for f in self.fits if f.fraction == fraction]

    # -- files ------------------------------------------------------------------------------
    def save(self, npz_path: str | Path) -> Path:
        npz_path = Path(npz_path)
        arrays = {"test_rows": self.test_rows, "test_labels": self.test_labels, "validate_labels": self.validate_labels}
        for key, value in self.test_scores.items():
            arrays[f"test/{key}"] = value
        for key, value in self.validate_scores.items():
            arrays[f"validate/{key}"] = value
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_path(npz_path) as tmp:
            tmp.write_bytes(buf.getvalue())
        meta = {
            "name": self.name,
            "kind": self.kind,
            "dataset": self.dataset,
            "task": self.task,
            "classes": self.classes,
            "note": self.note,
            "info": self.info,
            "fits": [asdict(f) for f in self.fits],
        }
        write_text_atomic(json.dumps(meta, indent=1) + "\n", npz_path.with_suffix(".json"))
        return npz_path

    @classmethod
    def load(cls, npz_path: str | Path) -> ProbeScores:
        npz_path = Path(npz_path)
        sidecar = npz_path.with_suffix(".json")
        if not npz_path.is_file() or not sidecar.is_file():
            raise ProbeInputError(f"{npz_path}: no probe scores (or no {sidecar.name} beside it)")
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        with np.load(npz_path) as data:
            arrays = {k: data[k] for k in data.files}
        out = cls(
            meta["name"],
            meta["kind"],
            meta["dataset"],
            meta["task"],
            list(meta["classes"]),
            arrays["test_rows"],
            arrays["test_labels"],
            arrays["validate_labels"],
            note=meta.get("note", ""),
            info=meta.get("info", {}),
        )
        for f in meta["fits"]:
            fit = Fit(**f)
            out.add(fit, arrays[f"validate/{fit.key}"], arrays[f"test/{fit.key}"])
        return out
