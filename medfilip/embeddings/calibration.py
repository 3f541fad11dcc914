"""SSM calibration from label statistics only, and the statistics that describe an SSM target.

The calibration's parameter is derived from the label vocabulary (``labels.parquet``) and its E_sim
vectors, never from images or evaluation results, so every evaluation set sees the same numbers:

- ``floor``: the ``percentile``-th percentile of the cosines between labels of *different*
  categories (same polarity; unique labels, unweighted; a seeded sample of at most
  ``MAX_PAIR_LABELS`` labels on a large vocabulary). Cosines at or under it become 0.
- ``embeddings.calibration.split: train`` fits both on the labels of train-split reports only
  (:func:`train_report_ids`), so held-out reports do not move it; ``all`` (the default) reads
  every row of ``labels.parquet``.
- ``temperature``: the ``t`` of ``exp((s - 1) / t)`` that puts a mean ``share`` of each label's
  row on its own category, the row running over the vocabulary weighted by how many reports carry
  each label (a batch draws labels in those proportions). Found by bisection on log t.

``write_calibration`` stores one :class:`~medfilip.ssm.Calibration` per label variant in
``results/embeddings/{model}.calibration.json``, beside the vectors; training and the SSM heatmap
read that file, so both use the same numbers.

``batch_statistics`` measures what a target asks of the model on simulated batches of the
training reports' full label sets (no masking): the same-category and cross-category similarity,
the share of a row-normalised target row on the image's own categories, and the effective number
of texts per row, exp(entropy). ``medfilip ssm-stats`` prints them before and after calibration,
and again with masking on (:func:`medfilip.training.ssm_stats.masked_batch_statistics`: texts masked as
in training, entailment targets).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from medfilip.names import CalibrationMethod, values
from medfilip.ssm import Calibration

log = logging.getLogger(__name__)

MAX_PAIR_LABELS = 4000
CALIBRATION_SUFFIX = ".calibration.json"


def calibration_path(embeddings_path: str | Path) -> Path:
    """``results/embeddings/{model}.parquet`` -> ``results/embeddings/{model}.calibration.json``."""
    p = Path(embeddings_path)
    return p.with_name(p.stem + CALIBRATION_SUFFIX)


@dataclass(frozen=True)
class Vocabulary:
    """The unique labels of one variant: text, category key (negated apart), negated, report count."""

    variant: str
    texts: list[str]
    keys: list[str | None]
    negated: np.ndarray  # (L,) bool
    counts: np.ndarray  # (L,) reports carrying the label
    report_labels: list[list[int]]  # per report (sorted by id), its label ids


def read_vocabulary(labels_path: str | Path, variant: str, reports: set[str] | None = None) -> Vocabulary:
    """The unique labels of ``variant``; ``reports``: only the rows of these report ids (the train split
    for ``embeddings.calibration.split: train``), None = every row."""
    path = Path(labels_path)
    table = pq.read_table(path, columns=["report_id", "variant", "label", "category", "polarity"])
    rows = [r for r in table.to_pylist() if r["variant"] == variant and (reports is None or r["report_id"] in reports)]
    if not rows:
        which = "" if reports is None else f" among {len(reports)} train reports"
        raise ValueError(f"{path}: no rows of label variant {variant!r}{which}")
    index: dict[str, int] = {}
    keys: list[str | None] = []
    negated: list[bool] = []
    by_report: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if not isinstance(r["label"], str):
            raise ValueError(f"{path}: row {i} (report {r['report_id']!r}): field 'label' is null")
        lid = index.get(r["label"])
        if lid is None:
            lid = index[r["label"]] = len(index)
            neg = r["polarity"] == "negated"
            keys.append((f"no {r['category']}" if neg else r["category"]) if r["category"] else None)
            negated.append(neg)
        ids = by_report.setdefault(r["report_id"], [])
        if lid not in ids:
            ids.append(lid)
    counts = np.zeros(len(index), np.int64)
    for ids in by_report.values():
        counts[ids] += 1
    return Vocabulary(
        variant, list(index), keys, np.array(negated, bool), counts, [by_report[k] for k in sorted(by_report)]
    )


def _sample(n: int, seed: int) -> np.ndarray:
    if n <= MAX_PAIR_LABELS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_PAIR_LABELS, replace=False))


def cross_category_cosines(vectors: np.ndarray, vocab: Vocabulary, seed: int = 0) -> np.ndarray:
    """Cosines of every pair of unique labels with different categories and the same polarity."""
    pick = _sample(len(vocab.texts), seed)
    v = vectors[pick].astype(np.float64)
    keys = np.array([k if k is not None else "" for k in np.array(vocab.keys, dtype=object)[pick]], dtype=object)
    has = keys != ""
    cos = v @ v.T
    mask = (keys[:, None] != keys[None, :]) & has[:, None] & has[None, :]
    mask &= vocab.negated[pick][:, None] == vocab.negated[pick][None, :]
    mask = np.triu(mask, k=1)
    return cos[mask]


def own_category_share(cos: np.ndarray, same: np.ndarray, counts: np.ndarray, calibration: Calibration) -> float:
    """Frequency-weighted mean over labels of the share of a label's (calibrated, count-weighted)
    vocabulary row that falls on its own category."""
    import torch

    # targets are clamped to [0, 1] by the loss
    w = np.clip(calibration.apply(torch.from_numpy(cos)).numpy(), 0.0, 1.0) * counts[None, :]
    share = (w * same).sum(1) / np.maximum(w.sum(1), 1e-300)
    return float((share * counts).sum() / counts.sum())


def fit_temperature(cos: np.ndarray, same: np.ndarray, counts: np.ndarray, share: float) -> tuple[float, float]:
    """(t, achieved share): the temperature whose mean own-category share is ``share``."""

    def at(t: float) -> float:
        return own_category_share(cos, same, counts, Calibration("temperature", temperature=t))

    lo, hi = math.log(1e-4), math.log(10.0)
    s_lo, s_hi = at(math.exp(lo)), at(math.exp(hi))
    if share >= s_lo:
        return math.exp(lo), s_lo
    if share <= s_hi:
        return math.exp(hi), s_hi
    for _ in range(60):  # share falls as t grows
        mid = 0.5 * (lo + hi)
        if at(math.exp(mid)) > share:
            lo = mid
        else:
            hi = mid
    t = math.exp(0.5 * (lo + hi))
    return t, at(t)


def compute_calibration(
    vectors: np.ndarray, vocab: Vocabulary, method: str, *, percentile: float = 95.0, share: float = 0.5, seed: int = 0
) -> Calibration:
    """The calibration of one variant's labels from their vectors (rows L2-normalised) alone."""
    if method not in values(CalibrationMethod):
        raise ValueError(f"ssm calibration: method {method!r} is not one of {', '.join(values(CalibrationMethod))}")
    if vectors.shape[0] != len(vocab.texts):
        raise ValueError(f"ssm calibration: {vectors.shape[0]} vectors for {len(vocab.texts)} labels")
    cross = cross_category_cosines(vectors, vocab, seed)
    stats: dict = {"variant": vocab.variant, "n_labels": len(vocab.texts), "n_cross_pairs": int(cross.size)}
    if cross.size:
        stats["cross_category_cosine"] = {
            q: round(float(np.percentile(cross, p)), 4) for q, p in (("p5", 5), ("median", 50), ("p95", 95))
        }
    if method == "none":
        return Calibration("none", stats=stats)
    if cross.size == 0:
        log.warning("ssm calibration (%s): one category only, no cross-category pair: uncalibrated", vocab.variant)
        return Calibration("none", stats={**stats, "note": "no cross-category pair of labels"})
    if method == "floor":
        floor = float(np.percentile(cross, percentile))
        return Calibration("floor", floor=round(min(floor, 0.999), 6), stats={**stats, "percentile": percentile})
    pick = _sample(len(vocab.texts), seed)
    v = vectors[pick].astype(np.float64)
    cos = np.clip(v @ v.T, -1.0, 1.0)
    keys = np.array(vocab.keys, dtype=object)[pick]
    neg = vocab.negated[pick]
    same = (keys[:, None] == keys[None, :]) & np.array([k is not None for k in keys])[:, None]
    cos = np.where(neg[:, None] == neg[None, :], cos, -1.0)  # other polarity: (almost) no weight
    counts = vocab.counts[pick].astype(np.float64)
    t, achieved = fit_temperature(cos, same, counts, share)
    return Calibration(
        "temperature",
        temperature=round(t, 6),
        stats={**stats, "target_share": share, "achieved_share": round(achieved, 4)},
    )


def write_calibration(calibrations: dict[str, Calibration], path: str | Path) -> Path:
    from medfilip.io import write_text_atomic

    data = {variant: c.to_dict() for variant, c in sorted(calibrations.items())}
    return write_text_atomic(json.dumps(data, indent=2, sort_keys=True) + "\n", Path(path))


def read_calibration(path: str | Path, variant: str) -> Calibration:
    """The calibration of ``variant`` in a file written by :func:`write_calibration`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the SSM calibration ({err}); re-run `medfilip embed`") from err
    if not isinstance(data, dict) or variant not in data:
        have = ", ".join(sorted(data)) if isinstance(data, dict) else "nothing"
        raise ValueError(f"{path}: no SSM calibration of label variant {variant!r} (has: {have})")
    return Calibration.from_dict(data[variant], f"{path}: {variant}")


def train_report_ids(report_paths: list[str | Path]) -> set[str]:
    """The report ids of the train split of report shards (their ``split`` column)."""
    out: set[str] = set()
    for path in report_paths:
        try:
            table = pq.read_table(path, columns=["report_id", "split"])
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: cannot read the report_id and split columns of a report shard: {err}") from None
        out.update(
            r for r, s in zip(table.column("report_id").to_pylist(), table.column("split").to_pylist()) if s == "train"
        )
    if not out:
        raise ValueError(f"{', '.join(map(str, report_paths))}: no report of the train split")
    return out


def calibrate_labels(
    labels_path: str | Path,
    embeddings_path: str | Path,
    variants: list[str],
    method: str,
    *,
    percentile: float = 95.0,
    share: float = 0.5,
    seed: int = 0,
    reports: set[str] | None = None,
) -> dict[str, Calibration]:
    """One calibration per label variant, from labels.parquet and the written vectors; ``reports``:
    fit on these reports' labels only (:func:`train_report_ids`), None = every row."""
    from medfilip.embeddings.store import load_embeddings

    out = {}
    for variant in variants:
        vocab = read_vocabulary(labels_path, variant, reports)
        vectors = np.asarray(load_embeddings(embeddings_path, vocab.texts), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out[variant] = compute_calibration(vectors, vocab, method, percentile=percentile, share=share, seed=seed)
        if reports is not None:
            out[variant].stats["fitted_on"] = f"train split ({len(vocab.report_labels)} reports)"
        log.info("ssm calibration of %s labels: %s", variant, out[variant].describe())
    return out


# -- what a target asks of the model ----------------------------------------------------------
class RowStatistics:
    """What each row of a batch's SSM target asks: its values on other texts of the image's own
    categories and on texts of other categories, the own-category share of its mass and its
    effective number of texts (exp of the entropy)."""

    def __init__(self) -> None:
        self.same: list[np.ndarray] = []
        self.cross: list[np.ndarray] = []
        self.shares: list[float] = []
        self.effective: list[float] = []
        self.n_texts: list[int] = []
        self.n_positive: list[int] = []

    def add(self, target: np.ndarray, text_keys: np.ndarray, chosen: list, keys: np.ndarray, positives: Any) -> None:
        for i, ids in enumerate(chosen):
            own_keys = {keys[j] for j in ids} - {""}
            in_cat = np.isin(text_keys, list(own_keys)) & (text_keys != "")
            own = np.asarray(positives[i], dtype=bool)
            self.same.append(target[i, in_cat & ~own])
            self.cross.append(target[i, ~in_cat & ~own])
            row = np.clip(target[i], 0.0, None)
            p = row / row.sum()
            self.shares.append(float(p[in_cat | own].sum()))
            nz = p[p > 0]
            self.effective.append(float(np.exp(-(nz * np.log(nz)).sum())))
            self.n_texts.append(len(row))
            self.n_positive.append(int(own.sum()))

    def summary(self) -> dict[str, float]:
        same, cross = np.concatenate(self.same), np.concatenate(self.cross)

        def q(a: np.ndarray, p: float) -> float:
            return round(float(np.percentile(a, p)), 3) if a.size else float("nan")

        return {
            "same_category_median": q(same, 50),
            "cross_category_median": q(cross, 50),
            "cross_category_p5": q(cross, 5),
            "cross_category_p95": q(cross, 95),
            "own_category_share": round(float(np.mean(self.shares)), 3),
            "effective_texts": round(float(np.mean(self.effective)), 1),
            "texts_per_row": round(float(np.mean(self.n_texts)), 1),
        }


def batch_statistics(
    vectors: np.ndarray,
    vocab: Vocabulary,
    calibration: Calibration | None = None,
    *,
    batch_size: int = 32,
    n_batches: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """SSM statistics over ``n_batches`` seeded batches of reports' full label sets."""
    import torch

    from medfilip.ssm import batch_texts, ssm_target

    reports = vocab.report_labels
    if len(reports) < batch_size:
        batch_size = len(reports)
    v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float64))
    keys = np.array([k if k is not None else "" for k in vocab.keys], dtype=object)
    neg = torch.from_numpy(vocab.negated)
    rng = np.random.default_rng(seed)
    stats = RowStatistics()
    for _ in range(n_batches):
        chosen = [reports[i] for i in rng.choice(len(reports), batch_size, replace=False)]
        text_ids, positives = batch_texts(chosen)
        target = ssm_target(chosen, text_ids, v, negated=neg, calibration=calibration, positives=positives).numpy()
        stats.add(target, keys[text_ids.numpy()], chosen, keys, positives.numpy())
    return stats.summary()
