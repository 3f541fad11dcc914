"""One segmentation job: a run's encoder (or the random-init baseline) fine-tuned on every fraction.

Outputs (``results/segmentation/runs/{run}/`` or ``results/segmentation/baseline/random_init/``):
``scores.parquet``, ``summary.json``, ``examples.npz`` (medfilip.evaluation.segmentation.finetune).
A store that cannot be fine-tuned on for a documented reason (no train or validate split) gives
skip records with the reason, so ``snakemake all`` finishes and the table says why.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

from medfilip.evaluation.segmentation.finetune import (
    BASELINE,
    evaluate_encoder,
    write_run_result,
    write_skipped_run,
)

log = logging.getLogger(__name__)


def segmentation_settings(cfg):
    """``evaluation.segmentation`` of a validated PipelineConfig."""
    return cfg.evaluation.segmentation


def run_segmentation(
    run: str,
    store_root: str | Path,
    out_dir: str | Path,
    cfg,
    *,
    run_dir: str | Path | None = None,
) -> Path:
    """Fine-tune and score the UNet of ``run`` (its trained encoder from ``run_dir``; the seeded
    random encoder of training.model's architecture when ``run_dir`` is None) on every fraction."""
    import torch

    from medfilip.devices import resolve_device
    from medfilip.evaluation.segmentation.data import SegmentationSkip, example_rows, load_segmentation_data
    from medfilip.evaluation.segmentation.unet import build_unet, unet_from_run
    from medfilip.training.model import MODEL_FILE, ModelError
    from medfilip.training.precision import resolve_precision

    settings = segmentation_settings(cfg)
    started = time.perf_counter()
    if run_dir is not None:
        model_file = Path(run_dir) / MODEL_FILE
        if not model_file.is_file():  # before any work
            raise ModelError(f"{model_file}: no trained model for run {run!r} (run `medfilip train --run {run}` first)")
    device = torch.device(resolve_device(settings.device, "evaluation.segmentation.device"))
    precision = resolve_precision(settings.precision, device)
    meta: dict[str, Any] = {
        "store": str(store_root),
        "image_size": settings.image_size,
        "settings": settings.model_dump(mode="json"),
        "device": device.type,
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
    }
    if run_dir is None:
        arch, channels = cfg.training.model.image_arch, cfg.training.model.image_channels
        template = build_unet(arch, channels, settings.decoder_channels, seed=settings.seed)
        encoder = f"{arch}, random init (seed {settings.seed})"
    else:
        template, info = unet_from_run(run_dir, settings.decoder_channels, seed=settings.seed)
        arch, channels = info["image_arch"], info["image_channels"]
        encoder = f"{arch}, pretrained ({Path(run_dir) / MODEL_FILE})"
    meta.update(image_arch=arch, image_channels=channels)
    try:
        data = load_segmentation_data(store_root, settings.image_size)
    except SegmentationSkip as skip:
        log.warning("%s: skipped: %s", run, skip)
        meta["wall_seconds"] = round(time.perf_counter() - started, 2)
        return write_skipped_run(run, encoder, settings.fractions, str(skip), out_dir, meta)
    log.info("%s: %s", store_root, data.summary())
    test = data.splits["test"]
    examples = example_rows(
        test.positive, test.masks.reshape(len(test), -1).sum(axis=1), settings.examples, settings.seed
    )
    result = evaluate_encoder(
        run,
        encoder,
        lambda: copy.deepcopy(template),
        data,
        settings,
        channels=channels,
        device=device,
        precision=precision,
        example_rows=examples,
    )
    meta["n_images"] = {name: len(split) for name, split in data.splits.items()}
    meta["n_positive"] = {name: int(split.positive.sum()) for name, split in data.splits.items()}
    meta["wall_seconds"] = round(time.perf_counter() - started, 2)
    return write_run_result(result, out_dir, meta)


__all__ = ["BASELINE", "run_segmentation"]
