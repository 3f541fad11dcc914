"""What the SSM target of a training batch asks of the model with masking on (``medfilip ssm-stats``):
the batch statistics of :mod:`medfilip.embeddings.calibration` over texts masked as training masks
them, with entailment targets (``training.masked_targets: entailment``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfilip.embeddings.calibration import RowStatistics
from medfilip.ssm import Calibration, ssm_target
from medfilip.training.data import TextTable, masked_text, read_label_table


def masked_batch_texts(labels_path: str | Path, variant: str) -> tuple[Any, Any, list[str]]:
    """(LabelTable, ReportLabels, every string a masked batch can hold: the label texts, then every
    masked form of each label (:class:`medfilip.training.data.TextTable`))."""
    labels, reports = read_label_table(labels_path, variant)
    table = TextTable.build(labels)
    return labels, reports, list(dict.fromkeys([*labels.texts, *table.texts]))


def masked_batch_statistics(
    vector_of: dict[str, np.ndarray],
    labels: Any,
    reports: Any,
    calibration: Calibration | None = None,
    *,
    mask_probability: float = 0.5,
    batch_size: int = 32,
    n_batches: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`medfilip.embeddings.calibration.batch_statistics` with masking on and entailment targets (``training.masked_targets:
    entailment``): each label's text has severity, location and explanation each dropped with
    ``mask_probability`` (as training does); a text's target is the calibrated cosine between the
    image's labels and the text's own vector, and 1 for every image with a label that entails it.
    ``vector_of``: string -> L2-normalised vector (labels and their masked forms, :func:`masked_batch_texts`)."""
    table = TextTable.build(labels)
    n_labels = len(labels)
    v = torch.from_numpy(np.stack([vector_of[t] for t in [*labels.texts, *table.texts]]).astype(np.float64))
    negated = torch.tensor(
        [p == "negated" for p in labels.polarities] + [labels.polarities[s] == "negated" for s in table.sources]
    )
    keys = np.array([k or "" for k in labels.category_keys()], dtype=object)
    report_ids = [r for r in reports if reports[r]]
    if len(report_ids) < batch_size:
        batch_size = len(report_ids)
    rng = np.random.default_rng(seed)
    stats = RowStatistics()
    for _ in range(n_batches):
        chosen = [list(reports[report_ids[i]]) for i in rng.choice(len(report_ids), batch_size, replace=False)]
        texts: dict[str, None] = {}
        for ids in chosen:
            for lid in ids:
                texts.setdefault(masked_text(labels, lid, mask_probability, rng), None)
        rows = table.ids(list(texts))
        positives = table.entailment(chosen, rows)
        target = ssm_target(
            chosen,
            [n_labels + r for r in rows],
            v,
            negated=negated,
            calibration=calibration,
            positives=positives,
        ).numpy()
        stats.add(target, keys[[table.sources[r] for r in rows]], chosen, keys, positives.numpy())
    return {**stats.summary(), "positives_per_row": round(float(np.mean(stats.n_positive)), 2)}
