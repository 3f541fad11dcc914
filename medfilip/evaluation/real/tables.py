"""Every trained run on the real stores and on their phantom twins, in one set of tables.

The evaluations are the project's own, called on named stores: zero-shot (medfilip.evaluation.
zeroshot, bootstrap intervals over test images), the linear probe (medfilip.evaluation.probe: frozen
pooled features, logistic regression, C chosen on validate, 1 / 10 / 100 % of train) and a class-text
retrieval (each class text ranks the test images; Precision@K = share of the top K that carry the
class, mean over classes, with a bootstrap interval over test images).

A random-initialised encoder (:func:`random_init`: a trained run with every image-encoder parameter
reset) is probed beside the pretrained runs: the question is whether phantom pretraining helps on
real pixels at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.evaluation.sets import EvalSet, downstream_set

log = logging.getLogger(__name__)

RANDOM_INIT = "random_init"
MIN_POSITIVES = 10


def named_set(store: Any, name: str, min_positives: int = MIN_POSITIVES) -> tuple[EvalSet | None, list[str]]:
    """The downstream set of ``store`` named ``name``; a multi-label set keeps the classes with at
    least ``min_positives`` positives in test (returns the set, or None when no class is left, and the
    classes left out)."""
    s = downstream_set(store, name)
    if s.kind != "multi_label":
        return s, []
    test = s.labels["test"]
    counts = np.nansum(test == 1, axis=0)
    keep = [i for i, n in enumerate(counts) if n >= min_positives]
    dropped = [f"{s.classes[i].name} ({int(counts[i])})" for i in range(len(s.classes)) if i not in keep]
    if not keep:
        return None, dropped
    subset = replace(
        s,
        classes=[s.classes[i] for i in keep],
        labels={k: v[:, keep] for k, v in s.labels.items()},
        note=f"classes with < {min_positives} test positives left out: {', '.join(dropped)}" if dropped else "",
    )
    return subset, dropped


def random_init(model: Any, seed: int = 0) -> Any:
    """``model`` with every parameter and buffer of its image encoder (backbone and projection)
    re-initialised by each layer's own reset (PyTorch defaults), seeded: the same architecture and
    text tower, no image pretraining."""
    import torch

    torch.manual_seed(seed)
    for module in model.image.modules():
        if module is not model.image and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model.eval()


def load_random_init(run_dir: Path, device: str, seed: int = 0) -> Any:
    from medfilip.training.model import load_trained

    return random_init(load_trained(run_dir, device), seed)


def _loader(random_from: Path | None, seed: int) -> Callable[[Path, str], Any]:
    from medfilip.training.model import load_trained

    def load(run_dir: Path, device: str) -> Any:
        if run_dir.name == RANDOM_INIT:
            return load_random_init(random_from, device, seed)
        return load_trained(run_dir, device)

    return load


def run_list(run_dirs: Sequence[Path], with_random: bool = True) -> list[Path]:
    """The run folders plus a pseudo-run ``random_init`` (built from the first run's architecture)."""
    runs = [Path(r) for r in run_dirs]
    return [*runs, runs[0].parent / RANDOM_INIT] if with_random and runs else runs


# -- zero-shot --------------------------------------------------------------------------------
def zeroshot_tables(
    run_dirs: Sequence[Path],
    sets: Sequence[EvalSet],
    explain: Callable[[str], str],
    *,
    evaluation,
    out: Path,
    per_class: Path | None = None,
    seed: int = 0,
) -> list[dict]:
    """The zero-shot table (medfilip.evaluation.report's columns) of every run + random_init."""
    from medfilip.evaluation.report import write_per_class, write_table
    from medfilip.evaluation.zeroshot import evaluate_runs

    runs = run_list(run_dirs)
    result = evaluate_runs(
        runs,
        sets,
        explain,
        load_model=_loader(Path(run_dirs[0]), seed),
        device=evaluation.device,
        text_variant=evaluation.text_variant,
        single_label_score=evaluation.single_label_score,
        protocols=list(evaluation.protocols),
        batch_size=evaluation.batch_size,
        progress=False,
        n_resamples=evaluation.bootstrap.n_resamples,
        seed=evaluation.bootstrap.seed,
    )
    rows = write_table(result.summaries, out)
    if per_class is not None:
        write_per_class(result.per_class, per_class)
    return rows


# -- linear probe -----------------------------------------------------------------------------
def probe_tables(
    run_dirs: Sequence[Path],
    stores: dict[str, Any],
    *,
    probe,
    bootstrap,
    device: str,
    out: Path,
    per_class: Path | None = None,
    figure: Path | None = None,
    seed: int = 0,
) -> list[dict]:
    """The linear probe (evaluation.linear_probe's fractions, seeds and C grid) of every run and of
    random_init on each named store (each needs train / validate / test splits)."""
    from medfilip.devices import resolve_device
    from medfilip.evaluation.features import encode_rows
    from medfilip.evaluation.probe.fit import probe_data_from_store, probe_fits
    from medfilip.evaluation.probe.table import build_tables, write_outputs

    device = resolve_device(device, "evaluation.linear_probe.device")
    load = _loader(Path(run_dirs[0]), seed)
    scores = []
    for run_dir in run_list(run_dirs):
        model = load(run_dir, device)
        for name, store in stores.items():
            data = probe_data_from_store(store, dataset=name)
            feats = {
                split: encode_rows(model, store, data.rows[split], batch_size=probe.batch_size, device=device)
                for split in ("train", "validate", "test")
            }
            fitted = probe_fits(
                feats,
                data,
                name=run_dir.name,
                fractions=probe.fractions,
                seeds=probe.seeds,
                c_grid=probe.c_grid,
                max_iter=probe.max_iter,
            )
            log.info("probe %s on %s: %d fits", run_dir.name, name, len(fitted.fits))
            scores.append(fitted)
        del model
    table, per_class_rows, long = build_tables(scores, n_resamples=bootstrap.n_resamples, seed=bootstrap.seed)
    write_outputs(table, per_class_rows, long, out, per_class, figure)
    return table


# -- class-text retrieval ---------------------------------------------------------------------
def precision_at_k(similarity: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(C,) share of each class text's top-``k`` images (rows of ``similarity`` (N, C)) that are
    positive for it (``labels`` (N, C) 1/0/NaN; NaN counts as not positive)."""
    k = min(k, similarity.shape[0])
    top = np.argsort(-similarity, axis=0, kind="stable")[:k]
    hits = np.take_along_axis(np.nan_to_num(labels) == 1, top, axis=0)
    return hits.mean(axis=0)


def retrieval_rows(
    run: str,
    s: EvalSet,
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    ks: Sequence[int],
    *,
    n_resamples: int,
    seed: int,
) -> list[dict]:
    """Text-to-image Precision@K on the test images of ``s``, mean over classes, with a 95 %
    bootstrap interval over the test images, and the precision a random ranking would have."""
    labels = s.labels["test"]
    img = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    txt = text_embeddings / np.linalg.norm(text_embeddings, axis=1, keepdims=True)
    sim = img @ txt.T
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(n_resamples)]
    rows = []
    for k in ks:
        point = float(precision_at_k(sim, labels, k).mean())
        reps = np.array([precision_at_k(sim[d], labels[d], k).mean() for d in draws])
        lo, hi = np.percentile(reps, [2.5, 97.5]) if reps.size else (np.nan, np.nan)
        rows.append(
            {
                "run": run,
                "set": s.name,
                "k": k,
                "precision_at_k": round(point, 4),
                "ci_low": round(float(lo), 4),
                "ci_high": round(float(hi), 4),
                "chance": round(float(np.nanmean(np.nan_to_num(labels) == 1)), 4),
                "n_test": len(labels),
                "classes": len(s.classes),
            }
        )
    return rows


def retrieval_table(
    run_dirs: Sequence[Path],
    sets: Sequence[EvalSet],
    explain: Callable[[str], str],
    *,
    evaluation,
    ks: Sequence[int],
    out: Path,
    seed: int = 0,
) -> list[dict]:
    from medfilip.devices import resolve_device
    from medfilip.evaluation.zeroshot import class_texts, encode_store_images, encode_texts
    from medfilip.io import write_csv_atomic

    device = resolve_device(evaluation.device, "evaluation.device")
    load = _loader(Path(run_dirs[0]), seed)
    rows: list[dict] = []
    for run_dir in run_list(run_dirs):
        model = load(run_dir, device)
        for s in sets:
            images = encode_store_images(
                model, s.store, s.rows["test"], batch_size=evaluation.batch_size, device=device, progress=False
            )
            texts = encode_texts(model, class_texts(s, explain, evaluation.text_variant), evaluation.batch_size)
            rows += retrieval_rows(
                run_dir.name,
                s,
                images,
                texts,
                ks,
                n_resamples=min(evaluation.bootstrap.n_resamples, 200),
                seed=evaluation.bootstrap.seed,
            )
        del model
    write_csv_atomic(rows, out)
    return rows
