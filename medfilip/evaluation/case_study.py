"""Case study (paper Fig. 5): how similar each run finds a test image and three texts of its finding.

Images: test images of the corpus store with exactly one finding, one per category, the most common
categories first (``evaluation.case_study.n_images``; within a category the first image in store
order: a fixed choice, not a favourable one). Texts of the image's finding:

- ``template + category``: the baselines' prompt, ``evaluation.retrieval.baseline_prompt``
  ("This is an X-ray image of {category}");
- ``severity + category``: "{severity} {category}" (the fine-grained triplet without location);
- ``explanation``: the full eq. 10 label with the image-specific knowledge,
  "{severity} {location} {category}, where {category} is {explanation}".

Bars: the cosine similarity of the image and text embeddings, one bar per run. Cosines of different
runs are on different scales (each learnt its own); compare the pattern across texts within a run,
and the ranking of runs with care. ``case_study.csv`` holds the numbers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.evaluation.sets import EvaluationSetError
from medfilip.labels.templates import render_label
from medfilip.names import LabelVariant

log = logging.getLogger(__name__)

TEXT_KINDS = ("template + category", "severity + category", "explanation")
COLUMNS = ["image_id", "category", "severity", "location", "text_kind", "text", "run", "cosine"]


def _clean(value: Any) -> str | None:
    value = " ".join(str(value).split()).lower() if value is not None else ""
    return value or None


def case_images(store: Any, n_images: int) -> list[tuple[int, dict]]:
    """(store row, finding) of up to ``n_images`` test images, one per category, most common first."""
    if "findings" not in store.index.column_names:
        raise EvaluationSetError(f"{store.root}: index has no 'findings' column (not a corpus store)")
    findings = store.index.column("findings").to_pylist()
    single: list[tuple[int, dict]] = []
    for i in store.indices("test"):
        fs = [f for f in (findings[int(i)] or []) if _clean(f.get("category"))]
        if len(fs) == 1:
            f = fs[0]
            single.append(
                (
                    int(i),
                    {
                        "category": _clean(f["category"]),
                        "severity": _clean(f.get("severity")),
                        "location": _clean(f.get("location")),
                    },
                )
            )
    counts = Counter(f["category"] for _, f in single)
    order = sorted(counts, key=lambda c: (-counts[c], c))[:n_images]
    first = {}
    for row, f in sorted(single, key=lambda x: x[0]):
        first.setdefault(f["category"], (row, f))
    return [first[c] for c in order]


def case_texts(finding: dict, explain: Callable[[str], str], baseline_prompt: str) -> dict[str, str]:
    c, sev, loc = finding["category"], finding["severity"], finding["location"]
    return {
        "template + category": baseline_prompt.format(category=c),
        "severity + category": render_label(c, severity=sev, variant=LabelVariant.triplet.value),
        "explanation": render_label(
            c, severity=sev, location=loc, explanation=explain(c), variant=LabelVariant.triplet_explanation.value
        ),
    }


def case_study_rows(
    run_dirs: Sequence[str | Path],
    store: Any,
    explain: Callable[[str], str],
    *,
    n_images: int = 4,
    baseline_prompt: str = "This is an X-ray image of {category}",
    device: str = "cpu",
    load_model: Callable[[Path, str], Any] | None = None,
    image_embeddings: Sequence[str | Path] | None = None,
) -> list[dict]:
    """One row per (image, text kind, run) with the cosine similarity (COLUMNS); ``image_embeddings``:
    each run's stored image embeddings (medfilip.evaluation.zeroshot.write_image_embeddings)."""
    import torch

    from medfilip.devices import resolve_device

    if load_model is None:
        from medfilip.training.model import load_trained as load_model
    device = resolve_device(device, "evaluation.device")
    cases = case_images(store, n_images)
    if not cases:
        log.warning("%s: no test image with exactly one finding; the case study is empty", store.root)
        return []
    ids = store.image_ids
    batch = torch.from_numpy(store.get_batch(np.array([r for r, _ in cases], dtype=np.int64))).to(device)
    texts = [case_texts(f, explain, baseline_prompt) for _, f in cases]
    flat = [t[k] for t in texts for k in TEXT_KINDS]
    rows = []
    for j, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        model = load_model(run_dir, device)
        if hasattr(model, "eval"):
            model.eval()
        with torch.inference_mode():
            if image_embeddings is not None:
                from medfilip.evaluation.zeroshot import stored_rows

                img = stored_rows(image_embeddings[j], store, np.array([r for r, _ in cases])).astype(np.float64)
            else:
                img = model.encode_image(batch).float().cpu().numpy().astype(np.float64)
            txt = model.encode_text(flat).float().cpu().numpy().astype(np.float64)
        txt = txt.reshape(len(cases), len(TEXT_KINDS), -1)
        cos = np.einsum("id,ikd->ik", img, txt)
        for i, (row, f) in enumerate(cases):
            for k, kind in enumerate(TEXT_KINDS):
                rows.append(
                    {
                        "image_id": ids[row],
                        "category": f["category"],
                        "severity": f["severity"],
                        "location": f["location"],
                        "text_kind": kind,
                        "text": texts[i][kind],
                        "run": run_dir.name,
                        "cosine": round(float(cos[i, k]), 4),
                    }
                )
        del model
    return rows


def write_case_study(rows: Sequence[dict], store: Any, figure: str | Path, table: str | Path | None = None) -> Path:
    """The figure (image | bars per text kind, one bar per run, for each case) and its CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfilip.io import save_figure, write_csv_atomic

    if table is not None:
        write_csv_atomic(list(rows), table, fieldnames=COLUMNS)
    images = list(dict.fromkeys(r["image_id"] for r in rows))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    if not images:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no test image with exactly one finding", ha="center", va="center")
        return save_figure(fig, figure, dpi=120)
    where = {image_id: i for i, image_id in enumerate(store.image_ids)}
    pixels = store.get_batch(np.array([where[i] for i in images], dtype=np.int64))
    value = {(r["image_id"], r["text_kind"], r["run"]): r["cosine"] for r in rows}
    first = {r["image_id"]: r for r in rows}
    fig, axes = plt.subplots(
        len(images), 2, figsize=(11, 2.6 * len(images)), squeeze=False, gridspec_kw={"width_ratios": [1, 3.2]}
    )
    colours = plt.get_cmap("tab10")
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(TEXT_KINDS))
    for i, image_id in enumerate(images):
        pic = pixels[i]
        axes[i, 0].imshow(pic if pic.ndim == 2 else np.moveaxis(pic, 0, -1), cmap="gray")
        axes[i, 0].axis("off")
        f = first[image_id]
        axes[i, 0].set_title(" ".join(p for p in (f["severity"], f["location"], f["category"]) if p), fontsize=8)
        ax = axes[i, 1]
        for j, run in enumerate(runs):
            heights = [value.get((image_id, kind, run), np.nan) for kind in TEXT_KINDS]
            bars = ax.bar(
                x - 0.4 + width * (j + 0.5), heights, width, label=run if i == 0 else None, color=colours(j % 10)
            )
            for b, h in zip(bars, heights):
                ax.annotate(
                    f"{h:.2f}",
                    (b.get_x() + b.get_width() / 2, max(h, 0)),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    xytext=(0, 1),
                    textcoords="offset points",
                )
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(x)
        ax.set_xticklabels(TEXT_KINDS, fontsize=8)
        ax.set_ylabel("cosine", fontsize=8)
    axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle("Case study: image-text cosine similarity per run (paper Fig. 5)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, figure, dpi=120)
