"""The fine-tuned baselines of Table II, trained by the same code on the same train subsets.

- ``{arch}_random``: the config's ResNet (``training.model.image_arch``, 1-channel stem as our
  encoder) from random init, every layer fine-tuned;
- ``{arch}_imagenet``: the same from local torchvision ImageNet weights
  (``evaluation.linear_probe.baselines.imagenet_weights``, else ``training.model.image_weights``),
  loaded by :meth:`medfilip.training.model.ImageEncoder.load_backbone_weights` (RGB stem summed
  to grey). Without a weights file there is no job: the table has a row "skipped: no weights
  configured";
- ``convnext_tiny_random``: torchvision ConvNeXt-Tiny from random init (the grey image repeated
  to 3 channels).

Each model gets a linear head over the store's classes and is trained with AdamW for ``epochs``
epochs over the subset (cross-entropy over the classes on single-label sets, binary cross-entropy
per class on multi-label ones) at ``image_size`` px (the store images resized once). No choice is
made on test; validate serves the honest threshold only. Scores: the softmax / sigmoid outputs of
the evaluated classes, in the same :class:`ProbeScores` form as the linear probe.

Sizing (embedded default, 2 CPU cores): 32 px, 1 epoch, batch 64, one subset per fraction
(``baselines.seeds: 1``). The numbers measure whether the pipeline trains them, not what a ResNet
or ConvNeXt reaches at full resolution (paper config: raise image_size, epochs and seeds).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from medfilip.evaluation.probe.fit import ProbeData, fraction_label, subset, subset_seeds
from medfilip.evaluation.probe.scores import Fit, ProbeScores
from medfilip.names import SPLITS

log = logging.getLogger(__name__)


def baseline_names(arch: str, *, imagenet: bool, convnext: bool) -> list[str]:
    """Names of the baselines that get a job (the ImageNet one only with weights)."""
    names = [f"{arch}_random"]
    if imagenet:
        names.append(f"{arch}_imagenet")
    if convnext:
        names.append("convnext_tiny_random")
    return names


def build_baseline(name: str, arch: str, n_classes: int, weights: Path | None, seed: int):
    """(module, channels) of a baseline, with a fresh ``n_classes`` head."""
    import torch
    import torchvision
    from torch import nn

    from medfilip.training.model import ImageEncoder

    torch.manual_seed(seed)
    if name == "convnext_tiny_random":
        return torchvision.models.convnext_tiny(weights=None, num_classes=n_classes), 3
    if name == f"{arch}_random":
        return ImageEncoder(arch, 1, n_classes), 1
    if name == f"{arch}_imagenet":
        if weights is None:
            raise ValueError(f"{name}: no ImageNet weights configured")
        encoder = ImageEncoder(arch, 1, n_classes)
        encoder.load_backbone_weights(Path(weights))
        encoder.proj = nn.Linear(encoder.feature_dim, n_classes)  # a fresh head after loading
        return encoder, 1
    raise ValueError(f"unknown baseline {name!r}")


def prepare_images(store, rows: np.ndarray, size: int, batch: int = 256) -> torch.Tensor:  # noqa: F821
    """Normalised float (n, 1, size, size) of ``store[rows]`` (resized once, antialiased)."""
    import torch
    import torch.nn.functional as F

    from medfilip.training.model import IMAGE_MEAN, IMAGE_STD

    parts = []
    for start in range(0, len(rows), batch):
        x = torch.from_numpy(store.get_batch(rows[start : start + batch])).unsqueeze(1).float().div_(255.0)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        parts.append(x.sub_(IMAGE_MEAN).div_(IMAGE_STD))
    return torch.cat(parts) if parts else torch.zeros((0, 1, size, size))


def _predict(model, x, channels: int, task: str, batch: int = 256) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            xb = x[start : start + batch]
            logits = model(xb.expand(-1, channels, -1, -1) if channels == 3 else xb)
            out.append((logits.softmax(dim=1) if task == "single_label" else logits.sigmoid()).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def train_baseline(
    name: str,
    store,
    data: ProbeData,
    *,
    arch: str,
    settings,
    fractions,
    seeds: int,
    weights: Path | None = None,
    device: str = "cpu",
) -> ProbeScores:
    """Every (fraction, seed) fine-tuning of one baseline on one dataset (seeds: ``settings.seeds``
    of the probe's ``seeds`` subsets)."""
    import torch
    import torch.nn.functional as F

    classes, cols = data.classes, data.class_columns
    out = ProbeScores(
        name,
        "baseline",
        data.dataset,
        data.task,
        classes,
        data.rows["test"],
        data.eval_labels("test"),
        data.eval_labels("validate"),
        info={
            "image_size": settings.image_size,
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "optimiser": "AdamW",
            "weights": str(weights) if weights else None,
        },
    )
    if data.labels["train"].shape[0] == 0:
        out.note = f"skipped: the {data.dataset} store has no train split (datasets.{data.dataset}.n_train = 0?)"
        return out
    size = settings.image_size
    x = {s: prepare_images(store, data.rows[s], size).to(device) for s in SPLITS}
    train_labels = data.labels["train"]
    n_all = len(data.label_names)
    for fraction in fractions:
        for seed in subset_seeds(fraction, min(seeds, settings.seeds)):
            started = time.perf_counter()
            pick = subset(train_labels, data.task, fraction, seed, data.dataset)
            y_sub = train_labels[pick]
            n_pos = [int(np.nansum(y_sub[:, c] == 1)) for c in cols]
            where = f"{fraction_label(fraction)} of train ({pick.size} images, seed {seed})"
            skipped = {c: f"no positive train image of {c} in {where}" for c, p in zip(classes, n_pos) if p == 0}
            model, channels = build_baseline(name, arch, n_all, weights, seed)
            model = model.to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
            gen = torch.Generator().manual_seed(seed)
            xt = x["train"][torch.from_numpy(pick)]
            yt = torch.from_numpy(np.nan_to_num(y_sub, nan=0.0)).float().to(device)
            known = torch.from_numpy(~np.isnan(y_sub)).float().to(device)
            steps = 0
            for _ in range(settings.epochs):
                model.train()
                order = torch.randperm(len(pick), generator=gen)
                for start in range(0, len(pick), settings.batch_size):
                    idx = order[start : start + settings.batch_size]
                    if idx.numel() < 2 and len(pick) >= 2:
                        continue  # a batch of one breaks BatchNorm statistics
                    xb = xt[idx]
                    logits = model(xb.expand(-1, channels, -1, -1) if channels == 3 else xb)
                    if data.task == "single_label":
                        loss = F.cross_entropy(logits, yt[idx].argmax(dim=1))
                    else:
                        loss = (
                            F.binary_cross_entropy_with_logits(logits, yt[idx], reduction="none") * known[idx]
                        ).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    steps += 1
            val = (
                _predict(model, x["validate"], channels, data.task)[:, cols]
                if x["validate"].shape[0]
                else np.zeros((0, len(cols)))
            )
            test = _predict(model, x["test"], channels, data.task)[:, cols]
            for j, c in enumerate(classes):
                if c in skipped:
                    val[:, j] = np.nan
                    test[:, j] = np.nan
            fit = Fit(
                fraction,
                seed,
                int(pick.size),
                n_pos,
                [None] * len(classes),
                skipped,
                round(time.perf_counter() - started, 3),
            )
            out.add(fit, val, test)
            log.info(
                "%s/%s %s seed %d: %d images, %d steps in %.1fs",
                name,
                data.dataset,
                fraction_label(fraction),
                seed,
                pick.size,
                steps,
                fit.seconds,
            )
    return out
