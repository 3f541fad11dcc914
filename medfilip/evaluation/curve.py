"""Validate AUC during training (``training.validate_every``): is the run still improving when it stops?

``medfilip train`` hands :class:`ValidateProbe` to :func:`medfilip.training.train.train_run`, which writes
each check to the curve file (:mod:`medfilip.training.curve`).

Every ``validate_every`` epochs (and at the last step) training scores up to ``validate_images``
validate images of the corpus store against one text per category, in the run's own text form
(:func:`medfilip.labels.templates.run_eval_text`: the template for MedFILIP, the category name,
the triplet, a report-style sentence for report-text runs), and writes the mean AUC over the
categories (of the images' reports' labels) with at least ``MIN_POSITIVES`` positives and as many
negatives among those images to ``validate_curve.csv``
beside ``train_log.csv``. The images are the first validate images of the store (a fixed set, the
same for every run and check); the model is put in eval mode for the check (no batch-norm update,
no random number drawn) and back in train mode after. The train_curves figure draws the curves.
Validate images only: nothing here sees the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_POSITIVES = 5
MAX_CLASSES = 12


class ValidateProbe:
    """The fixed validate images, their category labels and the class texts of one run."""

    def __init__(self, store: Any, labels: Any, by_report: Any, eval_text_form: str, n_images: int):
        """``labels``, ``by_report``: the run's label table and report -> label ids
        (:func:`medfilip.training.data.read_label_table`): an image's categories are its report's."""
        from medfilip.labels.templates import eval_text

        rows = np.sort(np.asarray(store.indices("validate"), dtype=np.int64))[:n_images]
        report_ids = store.index.column("report_id").to_pylist()
        cats = []
        for i in rows:
            ids = by_report.get(report_ids[int(i)]) if report_ids[int(i)] in by_report else []
            cats.append(
                {labels.categories[j] for j in ids if labels.categories[j] and labels.polarities[j] != "negated"}
                - {"normal"}
            )
        counts: dict[str, int] = {}
        for cs in cats:
            for c in cs:
                counts[c] = counts.get(c, 0) + 1
        explanations: dict[str, str] = {}
        for c, e in zip(labels.categories, labels.explanations):
            if c and e and c not in explanations:
                explanations[c] = e
        usable = [c for c, k in counts.items() if MIN_POSITIVES <= k <= len(rows) - MIN_POSITIVES]
        self.classes = sorted(usable, key=lambda c: (-counts[c], c))[:MAX_CLASSES]
        self.rows = rows
        self.store = store
        self.targets = np.array([[float(c in cs) for c in self.classes] for cs in cats], dtype=np.float32).reshape(
            len(rows), len(self.classes)
        )
        self.texts = [eval_text(c, explanation=explanations.get(c), variant=eval_text_form) for c in self.classes]

    def __bool__(self) -> bool:
        return bool(self.classes) and self.rows.size > 0

    def score(self, model: Any, device: Any, batch_size: int = 64) -> float:
        """Mean validate AUC over the classes; the model is left in the mode it was in."""
        import torch

        from medfilip.evaluation.metrics import auc

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = [
                    model.encode_image(torch.from_numpy(self.store.get_batch(self.rows[s : s + batch_size])).to(device))
                    .float()
                    .cpu()
                    .numpy()
                    for s in range(0, self.rows.size, batch_size)
                ]
                text = model.encode_text(self.texts).float().cpu().numpy()
        finally:
            model.train(was_training)
        image = np.concatenate(parts)
        image /= np.maximum(np.linalg.norm(image, axis=1, keepdims=True), 1e-12)
        text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        cos = image @ text.T
        return float(np.nanmean([auc(cos[:, k], self.targets[:, k]) for k in range(len(self.classes))]))
