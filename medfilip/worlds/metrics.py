"""The metrics of one trained arm on a world's held-out images (clean labels, other patients).

Scores are cosines between image and label-text embeddings; a category's score is the mean over
its label texts (every severity and location: zero-shot knows neither).

- ``cat_auc``: mean one-vs-rest AUC of the 12 trained categories; ``auc_frequent`` / ``auc_rare``:
  the family's 1st / 3rd (rarest trained) categories apart.
- ``close_auc``: for the ``close_pairs`` trained category pairs that look most alike in this world
  (rendered distance), the AUC of score_a - score_b on the images of a and b; mean.
- ``severity_tau``: per trained category, Kendall τ (scipy) between the true severity and
  cos(severe text) - cos(mild text) at the image's location; mean over categories.
- ``combo_auc``: the held-out (category, severity) combinations, never trained: AUC of the mean
  score of the combination's texts, positives its images, negatives every other test image.
- ``heldout_auc``: the held-out category of each family (no training image): its one-vs-rest AUC.
- ``probe_acc``: a linear probe (closed-form ridge on one-hot categories) on frozen image features
  (train images, clean labels), accuracy on test images of the trained categories.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from medfilip.evaluation.metrics import MetricWarning, auc
from medfilip.worlds.settings import METRICS
from medfilip.worlds.world import CATEGORIES, SEVERITIES, Sample, World, held_out_combos, role, trained_categories

__all__ = ["METRICS", "close_pairs", "embed", "probe_accuracy", "world_metrics"]


def _mean(values) -> float:
    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


@torch.no_grad()
def embed(model, images: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image embeddings, text embeddings, image body features) as numpy."""
    from medfilip.worlds.train import to_tensor

    x = to_tensor(images)
    feats = model.image.features(x)
    img = torch.nn.functional.normalize(model.image.head(feats), dim=-1)
    txt = model.encode_text(torch.from_numpy(vectors.astype(np.float32)))
    return img.numpy(), txt.numpy(), feats.numpy()


def close_pairs(world: World, k: int) -> list[tuple[str, str]]:
    cats = trained_categories()
    idx = [CATEGORIES.index(c) for c in cats]
    vis = world.category_visual()[np.ix_(idx, idx)]
    iu = np.triu_indices(len(cats), k=1)
    order = np.argsort(vis[iu], kind="stable")[:k]
    return [(cats[iu[0][o]], cats[iu[1][o]]) for o in order]


def world_metrics(
    world: World,
    model,
    test: list[Sample],
    test_images: np.ndarray,
    train_images: np.ndarray,
    train_categories: list[str],
) -> dict[str, float]:
    text = world.text
    img, txt, feats = embed(model, test_images, text.vectors)
    sims = img @ txt.T  # (n_test, L)
    labels = text.labels
    cat_of_label = np.array([CATEGORIES.index(c) for c, _, _ in labels])
    cat_scores = np.stack([sims[:, cat_of_label == k].mean(1) for k in range(len(CATEGORIES))], 1)
    truth = np.array([CATEGORIES.index(s.category) for s in test])
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        per_cat = {c: auc(cat_scores[:, k], truth == k, c) for k, c in enumerate(CATEGORIES)}
        trained = trained_categories()
        out["cat_auc"] = _mean(per_cat[c] for c in trained)
        out["auc_frequent"] = _mean(per_cat[c] for c in trained if role(c) == "frequent")
        out["auc_rare"] = _mean(per_cat[c] for c in trained if role(c) == "rare")
        out["heldout_auc"] = _mean(per_cat[c] for c in CATEGORIES if role(c) == "held_out")

        pair_aucs = []
        for a, b in close_pairs(world, world.cfg.close_pairs):
            ia, ib = CATEGORIES.index(a), CATEGORIES.index(b)
            keep = (truth == ia) | (truth == ib)
            pair_aucs.append(auc(cat_scores[keep, ia] - cat_scores[keep, ib], truth[keep] == ia, f"{a} vs {b}"))
        out["close_auc"] = _mean(pair_aucs)

        combo = []
        sev_of_label = np.array([s for _, s, _ in labels])
        for c, s in sorted(held_out_combos()):
            cols = (cat_of_label == CATEGORIES.index(c)) & (sev_of_label == s)
            positive = np.array([t.category == c and t.placement.severity == s for t in test])
            combo.append(auc(sims[:, cols].mean(1), positive, f"{s} {c}"))
        out["combo_auc"] = _mean(combo)

    from scipy.stats import kendalltau

    taus = []
    for c in trained:
        rows = [i for i, t in enumerate(test) if t.category == c]
        if len(rows) < 3:
            continue
        diff = [
            sims[i, text.index[(c, "severe", test[i].placement.location)]]
            - sims[i, text.index[(c, "mild", test[i].placement.location)]]
            for i in rows
        ]
        level = [SEVERITIES.index(test[i].placement.severity) for i in rows]
        if len(set(level)) > 1:
            taus.append(kendalltau(level, diff).statistic)
    out["severity_tau"] = _mean(taus)
    out["probe_acc"] = probe_accuracy(model, train_images, train_categories, feats, test)
    return out


def probe_accuracy(model, train_images, train_categories, test_feats, test, ridge: float = 1.0) -> float:
    """A linear probe in closed form: ridge regression of one-hot categories on standardised frozen
    features (train images, clean labels); accuracy of its argmax on test images of trained categories."""
    from medfilip.worlds.train import to_tensor

    with torch.no_grad():
        x = model.image.features(to_tensor(train_images)).numpy().astype(np.float64)
    classes = sorted(set(train_categories))
    y = np.zeros((len(train_categories), len(classes)))
    y[np.arange(len(train_categories)), [classes.index(c) for c in train_categories]] = 1
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    w = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ y)
    keep = [i for i, t in enumerate(test) if t.category in classes]
    xt = np.hstack([(test_feats[keep].astype(np.float64) - mu) / sd, np.ones((len(keep), 1))])
    pred = np.argmax(xt @ w, axis=1)
    return float(np.mean([classes[p] == test[i].category for p, i in zip(pred, keep, strict=True)]))
