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
from medfilip.evaluation.settings import BootstrapSettings
from medfilip.names import HELD_OUT_SPLITS

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


def own_text(run_dir: Path, first_run: Path, common_text: str, runs: dict | None = None) -> str:
    """The class-text form ``run_dir`` trained on (:func:`medfilip.evaluation.zeroshot.
    run_eval_text_of_folder`: its entry in ``runs``, training.runs, else its folder's record);
    ``random_init`` has the first run's text tower, so its text; the common template when neither
    names one."""
    from medfilip.evaluation.zeroshot import run_eval_text_of_folder

    source = first_run if run_dir.name == RANDOM_INIT else run_dir
    return run_eval_text_of_folder(source, runs) or common_text


# -- one pass per model: features, embeddings, then the three tables ---------------------------
def encode(model: Any, store: Any, rows: np.ndarray, *, batch_size: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(pooled backbone features, L2-normalised image embeddings) of ``store[rows]`` from one forward
    pass: the probe reads the first, zero-shot and retrieval the second (the model's own projection)."""
    import torch

    from medfilip.evaluation.features import encode_rows

    pooled = encode_rows(model, store, rows, batch_size=batch_size, device=device)
    with torch.inference_mode():
        proj = model.image.proj(torch.from_numpy(pooled).to(device)).float()
        emb = torch.nn.functional.normalize(proj, dim=-1).cpu().numpy()
    return pooled, emb.astype(np.float32, copy=False)


def evaluate_real(
    run_dirs: Sequence[Path],
    sets: Sequence[EvalSet],
    probe_sets: Sequence[str],
    explain: Callable[[str], str],
    *,
    evaluation,
    seed: int = 0,
    runs: dict | None = None,
) -> dict[str, Any]:
    """Every run and random_init on every set: zero-shot summaries and per-class rows (as
    medfilip.evaluation.zeroshot gives them), probe scores on the sets named in ``probe_sets``
    (evaluation.linear_probe's fractions, seeds and C grid), retrieval rows."""
    from medfilip.devices import resolve_device
    from medfilip.evaluation.probe.fit import probe_data_from_store, probe_fits
    from medfilip.evaluation.zeroshot import class_texts, encode_texts, evaluate_run, own_summaries

    device = resolve_device(evaluation.device, "evaluation.device")
    p = evaluation.linear_probe
    load = _loader(Path(run_dirs[0]), seed)
    common_text = str(evaluation.text_variant)
    # the zero-shot settings, for the common template and again for the run's own text
    scoring = {
        "text_variant": common_text,
        "single_label_score": evaluation.single_label_score,
        "protocols": list(evaluation.protocols),
        "batch_size": evaluation.batch_size,
        "bootstrap": evaluation.bootstrap,
    }
    out: dict[str, Any] = {"summaries": [], "per_class": [], "probe": [], "retrieval": []}
    for run_dir in run_list(run_dirs):
        own = own_text(run_dir, Path(run_dirs[0]), common_text, runs)
        model = load(run_dir, device)
        stored, pooled_by_set = {}, {}
        for s in sets:
            held_out = [s.rows.get(k, np.zeros(0, np.int64)) for k in HELD_OUT_SPLITS]
            train = [s.store.indices("train")] if s.name in probe_sets else []
            rows = np.unique(np.concatenate([*held_out, *train]).astype(np.int64))
            pooled, emb = encode(model, s.store, rows, batch_size=evaluation.batch_size, device=device)
            stored[str(s.store.root)] = (rows, emb)
            pooled_by_set[s.name] = dict(zip(rows.tolist(), pooled))
        part = evaluate_run(
            model, run_dir.name, sets, explain, device=device, progress=False, stored_embeddings=stored, **scoring
        )
        out["summaries"].extend(part.summaries)
        out["per_class"].extend(part.per_class)
        # each run scored again in the text form it trained on (a report-style sentence for a
        # report-text run; a copy of the common summaries for the label runs)
        out["summaries"].extend(
            own_summaries(model, run_dir.name, sets, explain, own, common_text, part, device, stored, scoring)
        )
        for s in sets:
            rows, emb = stored[str(s.store.root)]
            where = {int(r): j for j, r in enumerate(rows)}
            test_emb = emb[[where[int(r)] for r in s.rows["test"]]]
            texts = encode_texts(model, class_texts(s, explain, own), evaluation.batch_size)
            out["retrieval"] += retrieval_rows(
                run_dir.name,
                s,
                test_emb,
                texts,
                evaluation.retrieval.ks,
                text=own,
                # at most 200 resamples: one interval per (run, set, K)
                bootstrap=evaluation.bootstrap.model_copy(
                    update={"n_resamples": min(evaluation.bootstrap.n_resamples, 200)}
                ),
            )
            if s.name in probe_sets:
                data = probe_data_from_store(s.store, dataset=s.name)
                feats = {k: np.stack([pooled_by_set[s.name][int(r)] for r in data.rows[k]]) for k in data.rows}
                fitted = probe_fits(
                    feats,
                    data,
                    name=run_dir.name,
                    fractions=p.fractions,
                    seeds=p.seeds,
                    c_grid=p.c_grid,
                    max_iter=p.max_iter,
                )
                log.info("probe %s on %s: %d fits %s", run_dir.name, s.name, len(fitted.fits), fitted.note)
                out["probe"].append(fitted)
        del model
    return out


def write_real_tables(
    result: dict[str, Any], *, bootstrap: BootstrapSettings, reference: str, outputs: dict[str, Path | None]
) -> None:
    """The zero-shot table and per-class rows (medfilip.evaluation.report's columns), the probe table,
    per-class rows and figure (medfilip.evaluation.probe.table's), and the retrieval rows."""
    from medfilip.evaluation.probe.table import build_tables, write_outputs
    from medfilip.evaluation.report import write_per_class, write_table
    from medfilip.io import write_csv_atomic

    write_table(result["summaries"], outputs["zeroshot"], reference)
    if outputs.get("zeroshot_per_class"):
        write_per_class(result["per_class"], outputs["zeroshot_per_class"])
    if result["probe"]:
        table, per_class, long = build_tables(result["probe"], bootstrap=bootstrap, reference=reference)
        write_outputs(
            table, per_class, long, outputs["probe"], outputs.get("probe_per_class"), outputs.get("probe_figure")
        )
    write_csv_atomic(result["retrieval"], outputs["retrieval"])


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
    bootstrap: BootstrapSettings,
    text: str = "",
) -> list[dict]:
    """Text-to-image Precision@K on the test images of ``s``, mean over classes, with a 95 %
    bootstrap interval over the test images, and the precision a random ranking would have.
    ``text``: the class-text form the embeddings were made with (recorded in each row)."""
    labels = s.labels["test"]
    img = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    txt = text_embeddings / np.linalg.norm(text_embeddings, axis=1, keepdims=True)
    sim = img @ txt.T
    rng = np.random.default_rng(bootstrap.seed)
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(bootstrap.n_resamples)]
    rows = []
    for k in ks:
        point = float(precision_at_k(sim, labels, k).mean())
        reps = np.array([precision_at_k(sim[d], labels[d], k).mean() for d in draws])
        lo, hi = np.percentile(reps, [2.5, 97.5]) if reps.size else (np.nan, np.nan)
        rows.append(
            {
                "run": run,
                "set": s.name,
                "text": text,
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
