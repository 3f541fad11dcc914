"""Train subsets and the logistic-regression probe on cached features.

Protocol (paper Table II; our choices where the paper is silent, all made before test is seen):

- **Subsets**: 1 % / 10 % / 100 % of the train split (``fractions``), stratified and seeded
  (:func:`subset`): single-label sets by class, multi-label sets by each image's rarest positive
  class ("none" for images without one), with at least one image per stratum when the size
  allows, so 1 % of VinBigData's 1,000 train images (10) still holds a positive of each class. Below
  100 %, ``seeds`` subsets (seed 0, 1, 2 ...); 100 % is one fit. The subset depends on the dataset,
  fraction and seed only: every run and every baseline is trained on the same images.
- **Classifier**: scikit-learn ``LogisticRegression`` (lbfgs, L2) on standardised features
  (``StandardScaler`` fitted on the subset). Single-label sets: one multinomial model over the
  store's classes (binary for RSNA), scored by its probabilities; multi-label sets: one binary
  model per class (one-vs-rest).
- **C** from ``c_grid`` by the validate AUC (mean over the evaluated classes for a single-label set;
  per class for a multi-label one); never on test. Without validate images C = 1 (said in ``info``).
- A class with no positive (or no negative) image in a subset cannot be fitted: its scores are NaN
  and ``Fit.skipped`` holds the reason; the table leaves it out of that fit's mean and says so.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medfilip.datasets.sampling import allocate, derived_seed
from medfilip.evaluation.probe.scores import Fit, ProbeInputError, ProbeScores
from medfilip.names import SPLITS

log = logging.getLogger(__name__)

NORMAL = "normal"
DEFAULT_C = 1.0


@dataclass
class ProbeData:
    """Labels of one dataset's three splits, the evaluated classes and the task."""

    dataset: str
    task: str  # single_label | multi_label
    label_names: list[str]
    labels: dict[str, np.ndarray]  # split -> (n, K_all) 1/0/NaN
    rows: dict[str, np.ndarray]  # split -> store rows

    @property
    def classes(self) -> list[str]:
        """Evaluated classes: a single-label set's classes less 'normal' (RSNA -> pneumonia); all otherwise."""
        if self.task == "single_label" and NORMAL in self.label_names and len(self.label_names) > 1:
            return [c for c in self.label_names if c != NORMAL]
        return list(self.label_names)

    @property
    def class_columns(self) -> list[int]:
        return [self.label_names.index(c) for c in self.classes]

    def eval_labels(self, split: str) -> np.ndarray:
        return self.labels[split][:, self.class_columns]


def probe_data_from_store(store, dataset: str | None = None) -> ProbeData:
    """The probe's view of an image store (labels per split, task from meta.json or the labels)."""
    names = list(store.label_names)
    if not names:
        raise ProbeInputError(f"{store.root}: meta.json has no label_names (not a labelled downstream store)")
    labels = store.labels()
    rows = {s: store.indices(s) for s in SPLITS}
    task = store.meta.get("task")
    if task not in ("single_label", "multi_label"):
        held = labels[np.concatenate([rows["validate"], rows["test"]])]
        one_hot = held.shape[1] >= 2 and not np.isnan(held).any() and bool((held.sum(axis=1) == 1).all())
        task = "single_label" if one_hot else "multi_label"
    return ProbeData(dataset or store.dataset, task, names, {s: labels[r] for s, r in rows.items()}, rows)


def fraction_label(fraction: float) -> str:
    """1 % -> '1pct', 0.5 % -> '0.5pct' (column names)."""
    return f"{fraction * 100:g}pct"


def subset_seeds(fraction: float, seeds: int) -> list[int]:
    return [0] if fraction >= 1.0 else list(range(seeds))


def strata(labels: np.ndarray, task: str) -> np.ndarray:
    """A stratum per train image: its class (single-label), or its rarest positive class ('none' if none)."""
    labels = np.nan_to_num(np.asarray(labels, np.float64), nan=0.0) > 0.5
    if task == "single_label":
        return np.where(labels.any(axis=1), labels.argmax(axis=1), -1)
    counts = labels.sum(axis=0)
    order = np.argsort(counts, kind="stable")  # rarest first
    out = np.full(labels.shape[0], -1, np.int64)
    for k in order[::-1]:  # the rarest positive class is written last
        out[labels[:, k]] = k
    return out


def subset(labels: np.ndarray, task: str, fraction: float, seed: int, dataset: str) -> np.ndarray:
    """Positions (sorted) of a stratified, seeded ``fraction`` of the train images."""
    n = labels.shape[0]
    if fraction >= 1.0 or n == 0:
        return np.arange(n)
    size = max(1, int(round(fraction * n)))
    groups = strata(labels, task)
    counts = {int(g): int((groups == g).sum()) for g in np.unique(groups)}
    share = allocate(counts, size)
    rng = np.random.default_rng(derived_seed(seed, dataset, "probe", f"{fraction:g}"))
    chosen = [
        rng.choice(np.flatnonzero(groups == g), size=min(k, counts[g]), replace=False) for g, k in share.items() if k
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from medfilip.evaluation.metrics import auc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return auc(scores, labels)


def _fit_lr(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", ConvergenceWarning
        )  # lbfgs at max_iter on tiny subsets: the fit is still usable
        model.fit(x, y)
    return model


def _proba(model, x: np.ndarray, wanted: Sequence[int]) -> np.ndarray:
    """Probability columns of ``wanted`` class ids (NaN for a class the model never saw)."""
    classes = list(model.classes_)
    p = model.predict_proba(x)
    return np.stack([p[:, classes.index(k)] if k in classes else np.full(x.shape[0], np.nan) for k in wanted], axis=1)


def probe_fits(
    features: dict[str, np.ndarray],
    data: ProbeData,
    *,
    name: str,
    fractions: Sequence[float],
    seeds: int,
    c_grid: Sequence[float],
    max_iter: int = 2000,
) -> ProbeScores:
    """Every (fraction, seed) probe of one run on one dataset; ``features[split]`` rows align with
    ``data.labels[split]``."""
    from sklearn.preprocessing import StandardScaler

    classes, cols = data.classes, data.class_columns
    out = ProbeScores(
        name,
        "pretrained",
        data.dataset,
        data.task,
        classes,
        data.rows["test"],
        data.eval_labels("test"),
        data.eval_labels("validate"),
        info={"c_grid": list(c_grid), "classifier": "sklearn LogisticRegression (lbfgs, L2) on standardised features"},
    )
    for split in SPLITS:
        if features[split].shape[0] != data.labels[split].shape[0]:
            raise ProbeInputError(
                f"{name}/{data.dataset}: {features[split].shape[0]} {split} features for "
                f"{data.labels[split].shape[0]} {split} images in the store (stale features?)"
            )
    if data.labels["train"].shape[0] == 0:
        out.note = f"skipped: the {data.dataset} store has no train split (datasets.{data.dataset}.n_train = 0?)"
        return out
    if data.labels["test"].shape[0] == 0:
        out.note = f"skipped: the {data.dataset} store has no test split"
        return out
    has_validate = data.labels["validate"].shape[0] > 0
    if not has_validate:
        out.info["c_choice"] = f"no validate split: C = {DEFAULT_C} for every fit"
    train_all = data.labels["train"]
    for fraction in fractions:
        for seed in subset_seeds(fraction, seeds):
            started = time.perf_counter()
            pick = subset(train_all, data.task, fraction, seed, data.dataset)
            scaler = StandardScaler().fit(features["train"][pick])
            x_train = scaler.transform(features["train"][pick])
            x_val = scaler.transform(features["validate"]) if has_validate else features["validate"]
            x_test = scaler.transform(features["test"])
            y_sub = train_all[pick]
            n_pos = [int(np.nansum(y_sub[:, c] == 1)) for c in cols]
            val_scores = np.full((x_val.shape[0], len(classes)), np.nan)
            test_scores = np.full((x_test.shape[0], len(classes)), np.nan)
            chosen: list[float | None] = [None] * len(classes)
            skipped: dict[str, str] = {}
            where = f"{fraction_label(fraction)} of train ({pick.size} images, seed {seed})"
            if data.task == "single_label":
                known = ~np.isnan(y_sub).any(axis=1)
                y = np.argmax(np.nan_to_num(y_sub[known]), axis=1)
                for k, c in zip(cols, classes):
                    if not (y == k).any():
                        skipped[c] = f"no positive train image of {c} in {where}"
                    elif (y == k).all():
                        skipped[c] = f"no negative train image of {c} in {where}"
                if len(skipped) < len(classes):
                    best = None
                    for c_value in c_grid if has_validate else [DEFAULT_C]:
                        model = _fit_lr(x_train[known], y, c_value, max_iter, seed)
                        v = _proba(model, x_val, cols)
                        score = (
                            np.nanmean([_auc(v[:, j], data.eval_labels("validate")[:, j]) for j in range(len(cols))])
                            if has_validate
                            else 0.0
                        )
                        score = -np.inf if np.isnan(score) else score
                        if best is None or score > best[0]:
                            best = (score, c_value, model, v)
                    _, c_best, model, v = best
                    val_scores, test_scores = v, _proba(model, x_test, cols)
                    chosen = [c_best] * len(classes)
                    for j, c in enumerate(classes):
                        if c in skipped:
                            val_scores[:, j] = np.nan
                            test_scores[:, j] = np.nan
                            chosen[j] = None
            else:
                for j, (k, c) in enumerate(zip(cols, classes)):
                    known = ~np.isnan(y_sub[:, k])
                    y = y_sub[known, k] > 0.5
                    if not y.any() or y.all():
                        skipped[c] = f"no {'positive' if not y.any() else 'negative'} train image of {c} in {where}"
                        continue
                    best = None
                    for c_value in c_grid if has_validate else [DEFAULT_C]:
                        model = _fit_lr(x_train[known], y.astype(int), c_value, max_iter, seed)
                        v = model.predict_proba(x_val)[:, 1] if has_validate else np.zeros(0)
                        score = _auc(v, data.eval_labels("validate")[:, j]) if has_validate else 0.0
                        score = -np.inf if np.isnan(score) else score
                        if best is None or score > best[0]:
                            best = (score, c_value, model, v)
                    _, chosen[j], model, val_scores[:, j] = best
                    test_scores[:, j] = model.predict_proba(x_test)[:, 1]
            fit = Fit(fraction, seed, int(pick.size), n_pos, chosen, skipped, round(time.perf_counter() - started, 3))
            out.add(fit, val_scores, test_scores)
            log.info(
                "%s/%s %s seed %d: %d train images, C %s, %d class(es) skipped",
                name,
                data.dataset,
                fraction_label(fraction),
                seed,
                pick.size,
                chosen,
                len(skipped),
            )
    return out
