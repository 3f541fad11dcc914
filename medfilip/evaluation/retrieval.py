"""Image-text retrieval (paper Table V, §IV-B5): Precision@K and Recall@K, both directions.

Images: held-out (validate + test) corpus images whose report gave exactly one finding, up to
``evaluation.retrieval.max_images`` (the paper: 1,000; a seeded draw when there are more, all of
them when there are fewer; the count is in the table). Nothing is chosen on these images, so both
held-out splits serve.

Texts: one per image, the text of its own finding, in two forms (``prompt`` column):

- ``template``: the run's evaluation text, ``render_label(category, severity, location,
  explanation)`` in ``evaluation.text_variant`` (the paper's eq. 10 with IKI for MedFILIP);
- ``baseline``: ``evaluation.retrieval.baseline_prompt``, "This is an X-ray image of {category}"
  (the baselines' prompt; it carries no severity);
- ``own``: the run's own evaluation text (``training.runs.*.eval_text``, else its label variant's:
  the triplet for a triplet run, "There is mild cardiomegaly." for a report-text run;
  :func:`medfilip.labels.templates.run_eval_text`), for runs whose settings are known. Its
  difference to medfilip compares each run in its own language. ``text_variant`` names each row's form.

Directions: ``image_to_text`` (each image queries the N texts) and ``text_to_image`` (each text
queries the N images), ranked by cosine similarity (ties by gallery order). Relevance
(``relevance`` column): ``category`` = the gallery item's finding has the query's category;
``severity_category`` = the same severity and category (fine-grained). The query's own pair is in
the gallery and counts. P@K = relevant among the top K / K; R@K = relevant among the top K / all
relevant items in the gallery. With the baseline prompt the texts of one category are identical,
so image-to-text ranks them together and P@K equals P@1 for K up to the category's size: the
template texts, which carry severity and location, are what can tell more. Each mean over queries has its 95 % bootstrap interval (queries
resampled, the gallery fixed), and every run other than ``medfilip`` its paired difference to
medfilip (same resamples, same prompt, direction and relevance).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.evaluation.bootstrap import interval_from_replicates, resample_indices, resample_weights
from medfilip.evaluation.sets import EvaluationSetError
from medfilip.evaluation.settings import DEFAULT_BOOTSTRAP, BootstrapSettings
from medfilip.labels.templates import eval_text
from medfilip.names import HELD_OUT_SPLITS, REFERENCE_RUN, ClassTextVariant

log = logging.getLogger(__name__)

RELEVANCE = ("category", "severity_category")
PROMPTS = ("template", "baseline")
OWN_PROMPT = "own"


@dataclass(frozen=True)
class RetrievalImages:
    """The retrieval images: store rows and each one's single finding (category, severity, location)."""

    rows: np.ndarray
    findings: list[dict]
    n_eligible: int  # held-out images with exactly one finding, before the max_images draw

    def __len__(self) -> int:
        return int(self.rows.size)

    def keys(self, relevance: str) -> np.ndarray:
        """What 'relevant' compares, one string per image."""
        if relevance == "category":
            return np.array([f["category"] for f in self.findings], dtype=object)
        if relevance == "severity_category":
            return np.array([f"{f.get('severity') or ''}|{f['category']}" for f in self.findings], dtype=object)
        raise ValueError(f"relevance must be one of {RELEVANCE}, got {relevance!r}")


def _clean(value: Any) -> str | None:
    value = " ".join(str(value).split()).lower() if value is not None else ""
    return value or None


def retrieval_images(store: Any, max_images: int, seed: int = 0) -> RetrievalImages:
    """Held-out images of a corpus store with exactly one finding that has a category."""
    if "findings" not in store.index.column_names:
        raise EvaluationSetError(f"{store.root}: index has no 'findings' column (not a corpus store)")
    findings = store.index.column("findings").to_pylist()
    rows, kept = [], []
    for split in HELD_OUT_SPLITS:
        for i in store.indices(split):
            fs = [f for f in (findings[int(i)] or []) if _clean(f.get("category"))]
            if len(fs) == 1:
                f = fs[0]
                rows.append(int(i))
                kept.append(
                    {
                        "category": _clean(f["category"]),
                        "severity": _clean(f.get("severity")),
                        "location": _clean(f.get("location")),
                    }
                )
    order = np.argsort(rows, kind="stable")
    rows_arr, kept = np.asarray(rows, dtype=np.int64)[order], [kept[j] for j in order]
    n_eligible = int(rows_arr.size)
    if n_eligible > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(n_eligible, size=max_images, replace=False))
        rows_arr, kept = rows_arr[pick], [kept[j] for j in pick]
    return RetrievalImages(rows_arr, kept, n_eligible)


def image_texts(
    images: RetrievalImages,
    prompt: str,
    *,
    explain: Callable[[str], str],
    text_variant: str,
    baseline_prompt: str,
    own_text: str | None = None,
) -> list[str]:
    """The text of each image's finding under ``prompt`` (module doc); ``own`` renders ``own_text``."""
    if prompt == "baseline":
        return [baseline_prompt.format(category=f["category"]) for f in images.findings]
    if prompt == OWN_PROMPT:
        if own_text is None:
            raise ValueError("prompt 'own' needs the run's own text variant")
        text_variant = own_text
    elif prompt != "template":
        raise ValueError(f"prompt must be one of {(*PROMPTS, OWN_PROMPT)}, got {prompt!r}")
    return [
        eval_text(
            f["category"],
            severity=f["severity"],
            location=f["location"],
            explanation=(explain(f["category"]) if text_variant == ClassTextVariant.triplet_explanation else None),
            variant=text_variant,
        )
        for f in images.findings
    ]


def precision_recall_at_k(
    similarity: np.ndarray, query_keys: np.ndarray, gallery_keys: np.ndarray, ks: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per query, P@K and R@K for each K: ``{k: (precision (Q,), recall (Q,))}``.

    Gallery items are ranked by descending similarity, ties by gallery order (a stable sort). A
    query with no relevant gallery item has recall NaN."""
    similarity = np.asarray(similarity, dtype=np.float64)
    q, g = similarity.shape
    if len(query_keys) != q or len(gallery_keys) != g:
        raise ValueError(
            f"similarity {similarity.shape} for {len(query_keys)} queries and {len(gallery_keys)} gallery items"
        )
    top = max(ks)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :top]
    query_keys, gallery_keys = np.asarray(query_keys, dtype=object), np.asarray(gallery_keys, dtype=object)
    relevant = gallery_keys[order] == query_keys[:, None]  # (Q, min(top, G))
    counts = dict(zip(*np.unique(gallery_keys, return_counts=True)))
    n_relevant = np.array([counts.get(k, 0) for k in query_keys], dtype=np.float64)
    hits = np.cumsum(relevant, axis=1, dtype=np.float64)
    out = {}
    for k in ks:
        found = hits[:, min(k, hits.shape[1]) - 1] if hits.shape[1] else np.zeros(q)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(n_relevant > 0, found / n_relevant, np.nan)
        out[k] = (found / k, recall)
    return out


def _encode_unique(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    from medfilip.evaluation.zeroshot import encode_texts

    unique = list(dict.fromkeys(texts))
    emb = encode_texts(model, unique, batch_size)
    where = {t: j for j, t in enumerate(unique)}
    return emb[[where[t] for t in texts]]


def run_scores(
    model: Any,
    images_emb: np.ndarray,
    images: RetrievalImages,
    *,
    explain: Callable[[str], str],
    text_variant: str,
    baseline_prompt: str,
    ks: Sequence[int],
    batch_size: int,
    own_text: str | None = None,
) -> dict:
    """``{(prompt, direction, relevance): {k: (precision (N,), recall (N,))}}`` of one model (prompt
    ``own`` too when ``own_text`` is given)."""
    out = {}
    for prompt in (*PROMPTS, OWN_PROMPT) if own_text is not None else PROMPTS:
        if prompt == OWN_PROMPT and own_text == str(text_variant):
            # the run's own form is the template: the same texts, the same scores
            out.update({(OWN_PROMPT, d, r): v for (p, d, r), v in list(out.items()) if p == "template"})
            continue
        texts = image_texts(
            images,
            prompt,
            explain=explain,
            text_variant=text_variant,
            baseline_prompt=baseline_prompt,
            own_text=own_text,
        )
        text_emb = _encode_unique(model, texts, batch_size).astype(np.float64)
        sim = images_emb.astype(np.float64) @ text_emb.T  # (images, texts); text j belongs to image j
        for relevance in RELEVANCE:
            keys = images.keys(relevance)
            out[(prompt, "image_to_text", relevance)] = precision_recall_at_k(sim, keys, keys, ks)
            out[(prompt, "text_to_image", relevance)] = precision_recall_at_k(sim.T, keys, keys, ks)
    return out


def _round(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), 4)


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _replicates(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) weighted means of per-query values (NaN queries left out of each replicate)."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights[:, ok] @ values[ok]) / weights[:, ok].sum(axis=1)


def table_rows(
    scores: dict[str, dict],
    images: RetrievalImages,
    ks: Sequence[int],
    *,
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
    reference: str = REFERENCE_RUN,
    text_variants: dict[str, dict[str, str | None]] | None = None,
) -> list[dict]:
    """Rows of retrieval.csv: one per (run, prompt, direction, relevance), runs in the order given;
    ``text_variants``: ``{run: {prompt: text form}}`` for the ``text_variant`` column."""
    runs = list(scores)
    reference = reference if reference in scores else None
    weights = (
        resample_weights(resample_indices(len(images), bootstrap.n_resamples, bootstrap.seed), len(images))
        if len(images)
        else None
    )
    n_categories = len(set(images.keys("category"))) if len(images) else 0
    rows = []
    for run in runs:
        for (prompt, direction, relevance), by_k in scores[run].items():
            row: dict = {
                "run": run,
                "prompt": prompt,
                "direction": direction,
                "relevance": relevance,
                "n_images": len(images),
                "n_eligible": images.n_eligible,
                "n_categories": n_categories,
            }
            for k in ks:
                for metric, j in (("p", 0), ("r", 1)):
                    name = f"{metric}_at_{k}"
                    values = by_k[k][j]
                    estimate = _mean(values)
                    iv = interval_from_replicates(estimate, _replicates(values, weights))
                    row[name], row[f"{name}_low"], row[f"{name}_high"] = (
                        _round(estimate),
                        _round(iv.low),
                        _round(iv.high),
                    )
            if reference and run != reference and (prompt, direction, relevance) in scores[reference]:
                ref = scores[reference][(prompt, direction, relevance)]
                for k in ks:
                    for metric, j in (("p", 0), ("r", 1)):
                        name = f"delta_{metric}_at_{k}_vs_{reference}"
                        a, b = by_k[k][j], ref[k][j]
                        both = np.isfinite(a) & np.isfinite(b)
                        diff = np.where(both, a - b, np.nan)
                        iv = interval_from_replicates(_mean(diff), _replicates(diff, weights))
                        row[name], row[f"{name}_low"], row[f"{name}_high"] = (
                            _round(iv.estimate),
                            _round(iv.low),
                            _round(iv.high),
                        )
            row["text_variant"] = ((text_variants or {}).get(run) or {}).get(prompt)
            row["note"] = None
            rows.append(row)
    return rows


def evaluate_retrieval(
    run_dirs: Sequence[str | Path],
    store: Any,
    explain: Callable[[str], str],
    *,
    max_images: int = 1000,
    ks: Sequence[int] = (1, 5, 10),
    text_variant: str = ClassTextVariant.triplet_explanation.value,
    baseline_prompt: str = "This is an X-ray image of {category}",
    bootstrap: BootstrapSettings = DEFAULT_BOOTSTRAP,
    reference: str = REFERENCE_RUN,
    batch_size: int = 64,
    device: str = "cpu",
    load_model: Callable[[Path, str], Any] | None = None,
    progress: bool = False,
    image_embeddings: Sequence[str | Path] | None = None,
    own_texts: Sequence[str | None] | None = None,
) -> list[dict]:
    """The rows of retrieval.csv for every run folder (run name = folder name); ``image_embeddings``:
    each run's stored image embeddings (medfilip.evaluation.zeroshot.write_image_embeddings);
    ``own_texts``: each run's own text form (None: no ``own`` rows for that run)."""
    from medfilip.devices import resolve_device
    from medfilip.evaluation.zeroshot import encode_store_images, stored_rows

    if load_model is None:
        from medfilip.training.model import load_trained as load_model
    device = resolve_device(device, "evaluation.device")
    images = retrieval_images(store, max_images, bootstrap.seed)
    if not len(images):
        reason = f"{store.root}: no held-out image with exactly one finding"
        log.warning(reason)
        return [{"run": Path(r).name, "n_images": 0, "n_eligible": 0, "note": f"skipped: {reason}"} for r in run_dirs]
    log.info(
        "retrieval: %d of %d held-out images with exactly one finding, %d categories",
        len(images),
        images.n_eligible,
        len(set(images.keys("category"))),
    )
    if own_texts is not None and len(own_texts) != len(run_dirs):
        raise ValueError(f"{len(own_texts)} own texts for {len(run_dirs)} runs")
    scores, variants = {}, {}
    for j, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        started = time.perf_counter()
        model = load_model(run_dir, device)
        if hasattr(model, "eval"):
            model.eval()
        if image_embeddings is not None:
            emb = stored_rows(image_embeddings[j], store, images.rows)
        else:
            emb = encode_store_images(
                model,
                store,
                images.rows,
                batch_size=batch_size,
                device=device,
                progress=progress,
                desc=f"{run_dir.name} images",
            )
        scores[run_dir.name] = run_scores(
            model,
            emb,
            images,
            explain=explain,
            text_variant=text_variant,
            baseline_prompt=baseline_prompt,
            ks=ks,
            batch_size=batch_size,
            own_text=own_texts[j] if own_texts is not None else None,
        )
        variants[run_dir.name] = {
            "template": str(text_variant),
            "baseline": None,
            OWN_PROMPT: own_texts[j] if own_texts is not None else None,
        }
        log.info("retrieval %s: %.1fs", run_dir.name, time.perf_counter() - started)
        del model
    return table_rows(scores, images, ks, bootstrap=bootstrap, reference=reference, text_variants=variants)


def write_table(rows: Sequence[dict], path: str | Path) -> Path:
    from medfilip.io import write_csv_atomic

    columns = list(dict.fromkeys(k for r in rows for k in r if k != "note")) + ["note"]
    write_csv_atomic(list(rows), path, fieldnames=columns)
    return Path(path)
