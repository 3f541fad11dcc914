"""Zero-shot classification: score every image of a set against every class text (paper eqs. 10-11).

Class text (eq. 10): the structured-label template with the image-specific knowledge (IKI) of the
class, ``render_label(category, severity, explanation=knowledge.explanation(category))`` =
"{severity} {category}, where {category} is {explanation}" (``evaluation.text_variant`` picks the
ablation variants: the triplet without explanation, or the bare category name).

Score (eq. 11; our reading): the cosine similarity of the L2-normalised image and text embeddings,
``s_ik = <v_i, t_k>``. Multi-label and binary sets score each class by this cosine. On single-label
sets the classes compete, so the per-class score is ``softmax_k(logit_scale * s_ik)`` (the model's
learnt scale; ``evaluation.single_label_score = cosine`` keeps the cosine) and the predicted class
is ``argmax_k s_ik`` (the same under both). Metrics: :mod:`medfilip.evaluation.metrics`; a set's
mean is over its classes, less 'normal' on single-label sets (:func:`mean_classes`).

Each image is encoded once per run, whatever the number of sets that use it (the corpus sets share
the corpus store's held-out images), and stored (:func:`write_image_embeddings`, the rule
``image_embeddings``: one file per run), so the zero-shot table, retrieval and the case study read
the same vectors and a new run or a changed evaluation setting encodes no image another job already
encoded.
"""

from __future__ import annotations

import logging
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.devices import resolve_device
from medfilip.evaluation.bootstrap import resample_indices, resample_weights
from medfilip.evaluation.metrics import (
    auc,
    bootstrap_auc,
    bootstrap_class,
    bootstrap_top1,
    evaluate_scores,
    mean_ignoring_nan,
    top1_accuracy,
)
from medfilip.evaluation.sets import NORMAL, EvalSet, EvaluationSetError
from medfilip.evaluation.settings import DEFAULT_BOOTSTRAP, BootstrapSettings
from medfilip.inference import logit_scale_of, zero_shot_scores  # the library's scoring
from medfilip.io import atomic_path, sha256_text
from medfilip.labels.templates import eval_text, render_label, run_eval_text
from medfilip.names import HELD_OUT_SPLITS, ClassTextVariant

log = logging.getLogger(__name__)


@dataclass
class ZeroShotResult:
    """Long-form per-class rows and one summary per (run, set)."""

    per_class: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)


def class_texts(eval_set: EvalSet, explain: Callable[[str], str], variant: str) -> list[str]:
    """The text of each class of ``eval_set`` (its own ``text_variant`` wins over ``variant``, an
    :class:`~medfilip.names.EvalText`: the template's variants or the report-style sentence)."""
    variant = eval_set.text_variant or variant
    texts = []
    for c in eval_set.classes:
        explained = eval_set.explain_as.get(c.name, c.category)  # the unseen-class control swaps it
        explanation = explain(explained) if variant == ClassTextVariant.triplet_explanation else None
        name = eval_set.text_names.get(c.name, c.category)  # ... or names the class "condition x"
        texts.append(eval_text(name, severity=c.severity, explanation=explanation, variant=variant))
    return texts


# -- each run's own evaluation text (issue 19, item 2) --------------------------------------------
COMMON, OWN = "common", "own"


def run_eval_text_of_folder(run_dir: str | Path, runs: dict | None = None) -> str | None:
    """:func:`run_eval_text` of a run folder: its entry in ``runs`` (training.runs), else the ``run``
    record of its ``config.yaml`` (written by training), else None."""
    run_dir = Path(run_dir)
    if runs and run_dir.name in runs:
        return run_eval_text(runs[run_dir.name])
    record = run_dir / "config.yaml"
    if record.is_file():
        import yaml

        data = yaml.safe_load(record.read_text(encoding="utf-8")) or {}
        settings = data.get("settings", data) if isinstance(data, dict) else {}
        run = settings.get("run") if isinstance(settings, dict) else None
        return run_eval_text(run) if isinstance(run, dict) else None
    return None


def scored_with_run_text(s: EvalSet) -> bool:
    """Whether a set is scored with the evaluation text (not a copy with texts of its own): the sets a
    run's own text scores again."""
    return s.text_variant is None and not s.explain_as


def negated_texts(eval_set: EvalSet) -> list[str | None]:
    """ "no {category}" for each class (None for 'normal', which has no negation)."""
    return [None if c.category == NORMAL else render_label(c.category, negated=True) for c in eval_set.classes]


def encode_store_images(
    model: Any,
    store: Any,
    rows: np.ndarray,
    *,
    batch_size: int,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "images",
) -> np.ndarray:
    """float32 (len(rows), D) image embeddings of ``store[rows]``, ``batch_size`` images per forward pass."""
    import torch

    from medfilip.io import progress_bar

    rows = np.asarray(rows, dtype=np.int64)
    chunks = []
    with torch.inference_mode():
        for start in progress_bar(range(0, rows.size, batch_size), desc=desc, unit="batch", disable=not progress):
            batch = torch.from_numpy(store.get_batch(rows[start : start + batch_size])).to(device)
            chunks.append(model.encode_image(batch).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def encode_texts(model: Any, texts: Sequence[str], batch_size: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        parts = [
            model.encode_text(list(texts[i : i + batch_size])).float().cpu().numpy()
            for i in range(0, len(texts), batch_size)
        ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def mean_classes(eval_set: EvalSet) -> list[str]:
    """The classes a set's mean metrics average over: all of them, except 'normal' on a single-label
    set with other classes (there it is the complement of the disease classes: RSNA and SIIM report
    pneumonia / pneumothorax, as the paper's binary tasks; 'normal' still counts for top-1)."""
    names = eval_set.class_names
    if eval_set.kind == "single_label" and NORMAL in names and len(names) > 1:
        return [n for n in names if n != NORMAL]
    return names


# -- image embeddings of a run, encoded once and stored (rule image_embeddings) ------------------


def held_out_rows(store: Any) -> np.ndarray:
    """Rows of every held-out (validate, test) image of a store: what any evaluation may score."""
    return np.sort(np.concatenate([np.asarray(store.indices(split), dtype=np.int64) for split in HELD_OUT_SPLITS]))


def _ids_digest(store: Any, rows: np.ndarray) -> str:
    ids = store.image_ids
    return sha256_text(*(ids[int(r)] for r in rows))


def write_image_embeddings(
    model: Any,
    stores: Sequence[Any],
    out: str | Path,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> Path:
    """Encode the held-out images of each store once with ``model`` into one ``.npz`` (per store:
    ``{name}.rows``, ``{name}.emb``, and the digest of the image ids, so a rebuilt store is caught)."""
    if hasattr(model, "eval"):
        model.eval()
    arrays: dict[str, np.ndarray] = {}
    for store in stores:
        name = Path(store.root).name
        rows = held_out_rows(store)
        started = time.perf_counter()
        arrays[f"{name}.rows"] = rows
        arrays[f"{name}.emb"] = encode_store_images(
            model, store, rows, batch_size=batch_size, device=device, progress=progress, desc=name
        )
        arrays[f"{name}.ids"] = np.array(_ids_digest(store, rows))
        log.info("%s: %d held-out images encoded in %.1fs", name, rows.size, time.perf_counter() - started)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(out)


def read_image_embeddings(path: str | Path, stores: Sequence[Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{store root: (rows, embeddings)}`` from a file of :func:`write_image_embeddings`, checked
    against the stores (same held-out images); a clear error names the file and the store."""
    path = Path(path)
    out = {}
    with np.load(path) as data:
        for store in stores:
            name = Path(store.root).name
            if f"{name}.emb" not in data.files:
                raise EvaluationSetError(f"{path}: no embeddings of store '{name}' (re-run the image_embeddings rule)")
            rows, now = data[f"{name}.rows"], held_out_rows(store)
            if not np.array_equal(rows, now) or str(data[f"{name}.ids"]) != _ids_digest(store, now):
                raise EvaluationSetError(
                    f"{path}: the embeddings of '{name}' were made from other images than "
                    f"{store.root} holds now (re-run the image_embeddings rule)"
                )
            out[str(store.root)] = (rows, data[f"{name}.emb"])
    return out


def stored_rows(path: str | Path, store: Any, rows: np.ndarray) -> np.ndarray:
    """(len(rows), D) stored embeddings of ``store[rows]`` (held-out rows only)."""
    stored_at, emb = read_image_embeddings(path, [store])[str(store.root)]
    where = {int(r): j for j, r in enumerate(stored_at)}
    missing = [int(r) for r in rows if int(r) not in where]
    if missing:
        raise EvaluationSetError(f"{path}: rows {missing[:5]} of {store.root} are not held-out images with embeddings")
    return np.asarray(emb[[where[int(r)] for r in rows]], dtype=np.float32)


class _EmbeddingCache:
    """Image embeddings of one run, by (store folder, row), each row encoded once (or read from the
    run's stored embeddings)."""

    def __init__(
        self,
        model: Any,
        batch_size: int,
        device: str,
        progress: bool,
        stored: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        self.model, self.batch_size, self.device, self.progress = model, batch_size, device, progress
        self._emb: dict[str, dict[int, np.ndarray]] = {}
        for key, (rows, emb) in (stored or {}).items():
            self._emb[key] = dict(zip(np.asarray(rows).tolist(), np.asarray(emb, dtype=np.float32)))

    def get(self, store: Any, rows: np.ndarray) -> np.ndarray:
        key = str(store.root)
        known = self._emb.setdefault(key, {})
        missing = np.array(sorted({int(r) for r in rows} - set(known)), dtype=np.int64)
        if missing.size:
            emb = encode_store_images(
                self.model,
                store,
                missing,
                batch_size=self.batch_size,
                device=self.device,
                progress=self.progress,
                desc=Path(key).name,
            )
            known.update(zip(missing.tolist(), emb))
        if len(rows) == 0:
            return np.zeros((0, next(iter(known.values())).size if known else 0), dtype=np.float32)
        return np.stack([known[int(r)] for r in rows])

    def prefetch(self, sets: Iterable[EvalSet]) -> None:
        by_store: dict[str, tuple[Any, set[int]]] = {}
        for s in sets:
            store_rows = by_store.setdefault(str(s.store.root), (s.store, set()))[1]
            for rows in s.rows.values():
                store_rows.update(int(r) for r in rows)
        for store, rows in by_store.values():
            self.get(store, np.array(sorted(rows), dtype=np.int64))


class _StoreResamples:
    """Bootstrap weights over each store's test images, drawn once per store from a seed derived
    from (seed, store name): every run sees the same resamples (paired differences), and every set
    of one store (corpus_single, corpus_multi ... share the corpus test images) the same images."""

    def __init__(self, n_resamples: int, seed: int):
        self.n_resamples, self.seed = n_resamples, seed
        self._by_store: dict[str, tuple[dict[int, int], np.ndarray]] = {}  # row -> position, (n, B) counts

    def weights(self, s: EvalSet) -> np.ndarray:
        key = str(s.store.root)
        if key not in self._by_store:
            test = np.asarray(s.store.indices("test"), dtype=np.int64)
            seed = store_seed(self.seed, Path(key).name)
            idx = resample_indices(test.size, self.n_resamples, seed)
            counts = np.ascontiguousarray(resample_weights(idx, test.size).T)
            self._by_store[key] = ({int(r): j for j, r in enumerate(test)}, counts)
        position, counts = self._by_store[key]
        # (B, n) as the transpose of a contiguous (n, B) block: the metrics use it without a copy
        return counts[[position[int(r)] for r in s.rows["test"]]].T


def store_seed(seed: int, store_name: str) -> int:
    """The resample seed of one store: stable across runs and processes (crc32, not hash())."""
    return (int(seed) * 1_000_003 + zlib.crc32(store_name.encode("utf-8"))) % (2**32)


def _set_mean(per_class: list[np.ndarray]) -> np.ndarray:
    """(B,) mean over classes of per-class replicates, ignoring undefined ones (as mean_ignoring_nan)."""
    if not per_class:
        return np.full(0, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.vstack(per_class), axis=0)


def _quiet_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return auc(scores, labels)


def evaluate_run(
    model: Any,
    run: str,
    sets: Sequence[EvalSet],
    explain: Callable[[str], str],
    *,
    text_variant: str = ClassTextVariant.triplet_explanation.value,
    single_label_score: str = "softmax",
    protocols: Sequence[str] = ("test", "validate"),
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
    stored_embeddings: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    prompt: str = COMMON,
) -> ZeroShotResult:
    """Scores and metrics of one model on every set: per-class rows and a summary per set.
    ``prompt`` (common | own) tags the summaries: the common template or the run's own text.

    A summary holds the point estimates (``summary[protocol][metric]``, means over
    :func:`mean_classes`), the negation AUCs (``summary["negation"]``: with "no {category}" texts,
    AUC of minus their cosine, and of positive minus negated cosine) and ``summary["replicates"]``:
    the (B,) bootstrap replicates of every mean, over the store's resampled test images."""
    if hasattr(model, "eval"):
        model.eval()
    scale = logit_scale_of(model)
    cache = _EmbeddingCache(model, batch_size, device, progress, stored_embeddings)
    cache.prefetch(sets)
    resamples = _StoreResamples(bootstrap.n_resamples, bootstrap.seed)
    # every text of every set (class and negated), each encoded once, in as few forward passes as possible
    wanted = list(
        dict.fromkeys(
            t
            for s in sets
            for t in (
                *class_texts(s, explain, text_variant),
                *negated_texts(s),
                *(t for pair in severity_texts(s, explain, text_variant).values() for t in pair),
            )
            if t
        )
    )
    encoded = dict(zip(wanted, encode_texts(model, wanted, batch_size))) if wanted else {}
    result = ZeroShotResult()
    for s in sets:
        started = time.perf_counter()
        if not s.classes:  # a set reported for its note (corpus_severity with no class): Kendall tau at most
            summary = _base_summary(run, s, text_variant, prompt)
            if s.ordinal and s.n("test"):
                emb_test = cache.get(s.store, s.rows["test"])
                _add_severity_rank(result, summary, run, s, emb_test, encoded, explain, text_variant, resamples, prompt)
            result.summaries.append(summary)
            continue
        texts = class_texts(s, explain, text_variant)
        text_emb = np.stack([encoded[t] for t in texts])
        softmax = s.kind == "single_label" and single_label_score == "softmax"
        emb = {split: cache.get(s.store, rows) for split, rows in s.rows.items() if rows.size}
        scores = {split: zero_shot_scores(e, text_emb, softmax=softmax, logit_scale=scale) for split, e in emb.items()}
        rows = evaluate_scores(
            s.class_names,
            scores["test"],
            s.labels["test"],
            validate_scores=scores.get("validate"),
            validate_labels=s.labels.get("validate") if "validate" in scores else None,
            protocols=protocols,
            set_name=f"{run}/{s.name}",
        )
        # negation: "no {category}" should score the category's positives low
        negs = negated_texts(s)
        neg_cols = [k for k, t in enumerate(negs) if t is not None]
        cos_test = zero_shot_scores(emb["test"], text_emb)
        neg_auc: dict[str, tuple[float, float]] = {}
        neg_scores = np.full_like(cos_test, np.nan)
        if neg_cols:
            neg_emb = np.stack([encoded[negs[k]] for k in neg_cols])
            neg_scores[:, neg_cols] = zero_shot_scores(emb["test"], neg_emb)
        labels_test = s.labels["test"]
        for k in neg_cols:
            neg_auc[s.class_names[k]] = (
                _quiet_auc(-neg_scores[:, k], labels_test[:, k]),
                _quiet_auc(cos_test[:, k] - neg_scores[:, k], labels_test[:, k]),
            )
        for r in rows:
            a_neg, a_comb = neg_auc.get(r["class"], (float("nan"), float("nan")))
            result.per_class.append(
                {"run": run, "dataset": s.name, **r, "auc_neg": a_neg, "auc_comb": a_comb, "prompt": prompt}
            )
        summary = _base_summary(run, s, text_variant, prompt)
        averaged = mean_classes(s)
        summary["mean_over"] = averaged
        for protocol in protocols:
            mine = [r for r in rows if r["protocol"] == protocol and r["class"] in averaged]
            summary[protocol] = {
                m: mean_ignoring_nan(r[m] for r in mine) for m in ("auc", "f1", "accuracy", "precision", "recall")
            }
        negated_classes = [c for c in averaged if c in neg_auc]
        summary["negation"] = {
            "auc_pos": mean_ignoring_nan(
                r["auc"] for r in rows if r["protocol"] == protocols[0] and r["class"] in negated_classes
            ),
            "auc_neg": mean_ignoring_nan(neg_auc[c][0] for c in negated_classes),
            "auc_comb": mean_ignoring_nan(neg_auc[c][1] for c in negated_classes),
        }
        if s.kind == "single_label":
            summary["top1"] = top1_accuracy(scores["test"], s.labels["test"])
        summary["replicates"] = _set_replicates(
            s, rows, scores["test"], cos_test, neg_scores, resamples.weights(s), averaged, negated_classes, protocols
        )
        if s.focus:  # the unseen-class control: the controlled class alone, not the set's mean
            focus_cols = [k for k, name in enumerate(s.class_names) if name in s.focus]
            summary["control"] = {
                "auc": mean_ignoring_nan(_quiet_auc(scores["test"][:, k], labels_test[:, k]) for k in focus_cols)
            }
            summary["replicates"]["class_auc"] = _set_mean(
                [bootstrap_auc(scores["test"][:, k], labels_test[:, k], resamples.weights(s)) for k in focus_cols]
            )
        if s.ordinal:
            _add_severity_rank(result, summary, run, s, emb["test"], encoded, explain, text_variant, resamples, prompt)
        result.summaries.append(summary)
        log.info(
            "%s on %s (%s, %d classes, %d test images): mean AUC %.3f in %.1fs",
            run,
            s.name,
            s.kind,
            len(s.classes),
            s.n("test"),
            summary[protocols[0]]["auc"],
            time.perf_counter() - started,
        )
    return result


def _base_summary(run: str, s: EvalSet, text_variant: str, prompt: str) -> dict:
    return {
        "run": run,
        "dataset": s.name,
        "kind": s.kind,
        "source": s.source,
        "text_variant": s.text_variant or text_variant,
        "primary": scored_with_run_text(s) and s.in_means,
        "prompt": prompt,
        "n_classes": len(s.classes),
        "n_test": s.n("test"),
        "n_validate": s.n("validate"),
        "note": s.note,
    }


# -- severity as severity: Kendall tau (issue 19, item 3) -----------------------------------------
def severity_texts(s: EvalSet, explain: Callable[[str], str], variant: str) -> dict[str, tuple[str, str]]:
    """``{category: ("severe c" text, "mild c" text)}`` of a set with ordinal severities, in ``variant``
    (a text form without severity, the bare category name, gives two equal texts: tau 0)."""
    variant = s.text_variant or variant
    out = {}
    for c in s.ordinal.get("test", {}):
        explanation = explain(c) if variant == ClassTextVariant.triplet_explanation else None
        out[c] = tuple(
            eval_text(c, severity=sev, explanation=explanation, variant=variant) for sev in ("severe", "mild")
        )
    return out


def kendall_tau(truth: np.ndarray, score: np.ndarray) -> float:
    """Kendall tau-b of ``score`` against the ordinal ``truth`` (scipy.stats.kendalltau); 0 when either
    is constant (no pair is concordant or discordant: a scorer blind to severity), NaN for < 2 items."""
    from scipy.stats import kendalltau

    truth, score = np.asarray(truth, dtype=np.float64), np.asarray(score, dtype=np.float64)
    if truth.size < 2:
        return float("nan")
    if np.ptp(truth) == 0 or np.ptp(score) == 0:
        return 0.0
    return float(kendalltau(truth, score).statistic)


def severity_rank(
    s: EvalSet,
    emb_test: np.ndarray,
    text_emb: dict[str, tuple[np.ndarray, np.ndarray]],
    weights: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, int]]:
    """Per category of ``s.ordinal``: Kendall tau between the stated severity (test images where it is
    stated) and cos(image, severe text) - cos(image, mild text); its (B,) bootstrap replicates over
    the store's resampled test images (``weights``: counts, (B, n_test)); and the image count."""
    taus, reps, counts = {}, {}, {}
    for c, truth in s.ordinal.get("test", {}).items():
        known = np.isfinite(truth)
        severe, mild = text_emb[c]
        score = zero_shot_scores(emb_test[known], np.stack([severe, mild]))
        diff = score[:, 0] - score[:, 1]
        t = truth[known]
        taus[c], counts[c] = kendall_tau(t, diff), int(known.sum())
        if weights is not None:
            w = np.asarray(weights)[:, known].astype(np.int64)
            reps[c] = np.array([kendall_tau(np.repeat(t, wb), np.repeat(diff, wb)) for wb in w])
    return taus, reps, counts


def _add_severity_rank(
    result: ZeroShotResult,
    summary: dict,
    run: str,
    s: EvalSet,
    emb_test: np.ndarray,
    encoded: dict[str, np.ndarray],
    explain: Callable[[str], str],
    text_variant: str,
    resamples: _StoreResamples,
    prompt: str,
) -> None:
    """Kendall tau per category and averaged into ``summary["severity"]`` (+ replicates, + per-class rows)."""
    pairs = {c: (encoded[a], encoded[b]) for c, (a, b) in severity_texts(s, explain, text_variant).items()}
    taus, reps, counts = severity_rank(s, emb_test, pairs, resamples.weights(s))
    summary["severity"] = {"tau": mean_ignoring_nan(taus.values()), "tau_per_category": taus}
    summary.setdefault("replicates", {})["tau"] = _set_mean(list(reps.values()))
    for c, tau in taus.items():
        result.per_class.append(
            {
                "run": run,
                "dataset": s.name,
                "class": c,
                "protocol": "kendall_tau",
                "auc": float("nan"),
                "f1": float("nan"),
                "accuracy": float("nan"),
                "precision": float("nan"),
                "recall": float("nan"),
                "threshold": float("nan"),
                "n_pos": None,
                "n": counts[c],
                "auc_neg": float("nan"),
                "auc_comb": float("nan"),
                "kendall_tau": tau,
                "prompt": prompt,
            }
        )


def _set_replicates(
    s: EvalSet,
    rows: list[dict],
    scores: np.ndarray,
    cos: np.ndarray,
    neg: np.ndarray,
    weights: np.ndarray,
    averaged: list[str],
    negated_classes: list[str],
    protocols: Sequence[str],
) -> dict[str, np.ndarray]:
    """(B,) replicates of each set mean (the keys of report.SET_METRICS)."""
    labels = s.labels["test"]
    col = {name: k for k, name in enumerate(s.class_names)}
    per: dict[str, list[np.ndarray]] = {}
    for name in averaged:
        k = col[name]
        t = next((r["threshold"] for r in rows if r["class"] == name and r["protocol"] == "validate"), None)
        reps = bootstrap_class(
            scores[:, k],
            labels[:, k],
            weights,
            f1_max="test" in protocols,
            threshold=t if "validate" in protocols else None,
        )
        for key, metric in (
            ("auc", "auc"),
            ("f1", "f1"),
            ("acc", "acc"),
            ("f1_at", "f1_valthr"),
            ("acc_at", "acc_valthr"),
        ):
            if key in reps:
                per.setdefault(metric, []).append(reps[key])
    for name in negated_classes:
        k = col[name]
        per.setdefault("auc_neg", []).append(bootstrap_auc(-neg[:, k], labels[:, k], weights))
        per.setdefault("auc_comb", []).append(bootstrap_auc(cos[:, k] - neg[:, k], labels[:, k], weights))
    out = {metric: _set_mean(values) for metric, values in per.items()}
    if s.kind == "single_label":
        out["top1"] = bootstrap_top1(scores, labels, weights)
    return out


def own_summaries(
    model: Any,
    run: str,
    sets: Sequence[EvalSet],
    explain: Callable[[str], str],
    own: str,
    common_text: str,
    common: ZeroShotResult,
    device: str,
    stored: dict | None,
    kwargs: dict,
) -> list[dict]:
    """The summaries of ``run`` scored with its own text ``own`` (prompt "own"): the common ones,
    relabelled, when ``own`` is the common template, else a second scoring of the same images."""
    mine = [s for s in sets if scored_with_run_text(s)]
    names = {s.name for s in mine}
    if own == common_text:
        return [
            {**summary, "prompt": OWN, "text_variant": own}
            for summary in common.summaries
            if summary["dataset"] in names
        ]
    kwargs = {**kwargs, "text_variant": own, "progress": False}
    return evaluate_run(
        model, run, mine, explain, device=device, stored_embeddings=stored, prompt=OWN, **kwargs
    ).summaries


def evaluate_runs(
    run_dirs: Sequence[str | Path],
    sets: Sequence[EvalSet],
    explain: Callable[[str], str],
    *,
    load_model: Callable[[Path, str], Any] | None = None,
    device: str = "auto",
    image_embeddings: Sequence[str | Path] | None = None,
    own_texts: Sequence[str | None] | None = None,
    **kwargs: Any,
) -> ZeroShotResult:
    """:func:`evaluate_run` for each run folder (run name = folder name); models load one at a time.
    ``image_embeddings``: each run's stored image embeddings (:func:`write_image_embeddings`, in
    the order of ``run_dirs``); images found there are not encoded again. ``own_texts``: each run's
    own evaluation text (:func:`run_eval_text`; None = none): the sets scored with the evaluation
    text are scored again with it, as summaries with ``prompt`` "own" (a copy of the common ones
    when the run's text is the common template)."""
    import torch

    if load_model is None:
        from medfilip.training.model import load_trained as load_model
    if image_embeddings is not None and len(image_embeddings) != len(run_dirs):
        raise ValueError(f"{len(image_embeddings)} image embedding files for {len(run_dirs)} runs")
    if own_texts is not None and len(own_texts) != len(run_dirs):
        raise ValueError(f"{len(own_texts)} own texts for {len(run_dirs)} runs")
    common_text = kwargs.get("text_variant", ClassTextVariant.triplet_explanation.value)
    common_text = str(common_text)
    device = resolve_device(device, "evaluation.device")
    stores = list({str(s.store.root): s.store for s in sets}.values())
    total = ZeroShotResult()
    for j, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        model = load_model(run_dir, device)
        stored = read_image_embeddings(image_embeddings[j], stores) if image_embeddings is not None else None
        part = evaluate_run(model, run_dir.name, sets, explain, device=device, stored_embeddings=stored, **kwargs)
        total.per_class.extend(part.per_class)
        total.summaries.extend(part.summaries)
        own = own_texts[j] if own_texts is not None else None
        if own is not None:
            total.summaries.extend(
                own_summaries(model, run_dir.name, sets, explain, own, common_text, part, device, stored, kwargs)
            )
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return total
