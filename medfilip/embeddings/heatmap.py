"""Figure: the SSM target of one batch, images down the side, the batch's label texts across."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.names import ClassTextVariant, values

log = logging.getLogger(__name__)

PREFERRED_VARIANTS = values(ClassTextVariant)  # the fullest entity text first


@dataclass(frozen=True)
class LabelBatch:
    """One batch in the shape ``ssm_target`` takes: label ids index ``texts`` (and their vectors)."""

    report_ids: list[str]
    image_label_ids: list[list[int]]
    texts: list[str]  # full label strings (what was embedded)
    short_texts: list[str]  # "mild left base atelectasis" (no explanation)
    categories: list[str | None]
    negated: list[bool]  # "no pneumothorax" (labels.negated: keep)


def short_label(row: dict) -> str:
    """The label without its explanation: "[no ]{severity} {location} {category}", or the text up to ", where"."""
    if row.get("category"):
        words = " ".join(w for w in (row.get("severity"), row.get("location"), row["category"]) if w)
        return f"no {words}" if row.get("polarity") == "negated" else words
    text = row["label"].split(", where ", 1)[0]
    return text if len(text) <= 40 else text[:39] + "…"


def pick_variant(labels: pa.Table, variant: str | None) -> str:
    present = set(labels.column("variant").to_pylist())
    if variant is not None:
        if variant not in present:
            raise ValueError(f"labels: no rows of variant {variant!r} (present: {', '.join(sorted(present))})")
        return variant
    return preferred_variant(present)


def preferred_variant(present) -> str:
    """The variant the heatmap draws when none is named: the fullest label form that was written."""
    for v in PREFERRED_VARIANTS:
        if v in present:
            return v
    return min(present)


def train_report_ids(images_dir: str | Path | None) -> list[str] | None:
    """Report ids of the image store's train split in index order (None when there is no store)."""
    if images_dir is None or not (Path(images_dir) / "index.parquet").exists():
        return None
    index = pq.read_table(Path(images_dir) / "index.parquet", columns=["report_id", "split"])
    ids = [
        r
        for r, s in zip(index.column("report_id").to_pylist(), index.column("split").to_pylist())
        if s == "train" and r
    ]
    return list(dict.fromkeys(ids))


def select_batch(
    labels: pa.Table, variant: str, n_images: int = 16, max_normal: int = 4, candidates: list[str] | None = None
) -> LabelBatch:
    """The first ``n_images`` reports (of ``candidates``, else in file order) with labels of ``variant``;
    at most ``max_normal`` of them normal, so the picture shows findings."""
    rows = [r for r in labels.to_pylist() if r["variant"] == variant]
    by_report: dict[str, list[dict]] = {}
    for r in rows:
        by_report.setdefault(r["report_id"], []).append(r)
    order = [rid for rid in candidates if rid in by_report] if candidates is not None else list(by_report)
    chosen, n_normal = [], 0
    for rid in order:
        normal = all(r["is_normal"] for r in by_report[rid])
        if normal and n_normal >= max_normal:
            continue
        chosen.append(rid)
        n_normal += normal
        if len(chosen) == n_images:
            break
    if not chosen:
        raise ValueError(f"labels: no report has labels of variant {variant!r}")
    texts: dict[str, int] = {}
    short, categories, negated, image_label_ids = [], [], [], []
    for rid in chosen:
        ids = []
        for r in by_report[rid]:
            if r["label"] not in texts:
                texts[r["label"]] = len(texts)
                short.append(short_label(r))
                categories.append(r["category"])
                negated.append(r.get("polarity") == "negated")
            ids.append(texts[r["label"]])
        image_label_ids.append(ids)
    return LabelBatch(chosen, image_label_ids, list(texts), short, categories, negated)


def draw_ssm_heatmap(
    target: np.ndarray | list[tuple[np.ndarray, str]],
    batch: LabelBatch,
    text_ids: list[int],
    positives: np.ndarray,
    out: str | Path,
    title: str,
) -> Path:
    """Heatmap of ``target`` (N, M), or side by side of several ``(target, subtitle)`` panels (raw and
    calibrated): rows = images (report id: its labels), columns = the batch texts; a dot marks the
    image's own labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfilip.io import save_figure

    panels = target if isinstance(target, list) else [(target, "")]
    n, m = panels[0][0].shape
    col_names = [batch.short_texts[t] for t in text_ids]
    row_names = []
    for rid, ids in zip(batch.report_ids, batch.image_label_ids):
        own = "; ".join(dict.fromkeys(batch.short_texts[i] for i in ids))
        row_names.append(f"{rid}: {own if len(own) <= 38 else own[:37] + '…'}")
    width = 2.8 + 0.32 * m
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(6.0, width * len(panels)), max(4.0, 3.4 + 0.34 * n)),
        squeeze=False,
        layout="constrained",
    )
    vmin = min(0.0, min(float(t.min()) for t, _ in panels))
    rows, cols = np.nonzero(positives)
    for k, (ax, (matrix, subtitle)) in enumerate(zip(axes[0], panels)):
        image = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.scatter(cols, rows, s=10, c="white", edgecolors="black", linewidths=0.4)
        ax.set_xticks(range(m), col_names, rotation=70, ha="right", fontsize=7)
        ax.set_yticks(range(n), row_names if k == 0 else [""] * n, fontsize=7)
        ax.set_xlabel("batch texts (explanation part omitted); dot = the image's own label", fontsize=8)
        if subtitle:
            ax.set_title(subtitle, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.01, label="S[i, j]: max over image i's labels")
    return save_figure(fig, out, dpi=130)
