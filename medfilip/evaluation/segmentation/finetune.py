"""Fine-tune one UNet per (encoder, fraction) and score it on test.

For each fraction of the train split (medfilip.evaluation.segmentation.data.fraction_subsets) a UNet
starts from the same weights — the run's pretrained encoder (or the seeded random one) and the
seeded decoder — and is trained with AdamW (cosine-decayed learning rate) on BCE + soft Dice for
``clip(epochs x batches, min_steps, max_steps)`` steps of ``batch_size`` images drawn from seeded
shuffles. At ``checks`` evenly spaced steps the UNet predicts the validate images, and the
(checkpoint, threshold, minimum area) with the best validate Dice (mean over images) is kept. Only
that one predicts test. Nothing is chosen on test.

Every encoder sees the same subsets, decoder init and batch order: the runs differ by their encoder
weights only.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfilip.evaluation.segmentation.metrics import dice_per_image, iou_per_image, mean_over_images

log = logging.getLogger(__name__)

BASELINE = "random_init"
SCORE_COLUMNS = ("run", "fraction", "image_id", "dice", "iou", "truth_area", "pred_area")


@dataclass
class FractionResult:
    """What one fraction's fine-tuning did (one record of summary.json)."""

    fraction: float
    status: str  # ok | skipped
    reason: str = ""
    n_train: int = 0
    n_train_positive: int = 0
    steps: int = 0
    batch_size: int = 0
    checkpoint_step: int = 0
    threshold: float = float("nan")
    min_area: float = float("nan")
    validate_dice: float = float("nan")
    train_seconds: float = 0.0
    train_images_per_s: float = float("nan")
    test_seconds: float = 0.0
    final_loss: float = float("nan")


@dataclass
class RunResult:
    run: str
    encoder: str
    fractions: list[FractionResult] = field(default_factory=list)
    scores: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)  # fraction -> per-image arrays
    test_image_ids: list[str] = field(default_factory=list)
    examples: dict[str, np.ndarray] = field(default_factory=dict)  # rows + predicted masks at the largest fraction


def steps_for(n_images: int, settings) -> tuple[int, int]:
    """(steps, batch size) of a fraction with n_images training images."""
    batch = max(1, min(settings.batch_size, n_images))
    steps = settings.epochs * math.ceil(n_images / batch)
    steps = max(settings.min_steps, steps)
    if settings.max_steps is not None:
        steps = min(settings.max_steps, steps)
    return steps, batch


def _cycle(rows: np.ndarray, need: int, rng: np.random.Generator) -> np.ndarray:
    """``need`` entries of ``rows``: consecutive seeded shuffles of them, one after the other."""
    if need <= 0 or rows.size == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([rng.permutation(rows) for _ in range(math.ceil(need / rows.size))])[:need]


def batch_stream(
    n_images: int,
    batch: int,
    steps: int,
    seed: int,
    positive: np.ndarray | None = None,
    positive_share: float | None = None,
) -> np.ndarray:
    """(steps, batch) row numbers, every batch full: slices of consecutive seeded shuffles.

    With ``positive_share`` (and ``positive``, a bool per image), each batch holds round(share x batch)
    images with pneumothorax and the rest without, each kind cycled through its own shuffles (as
    Kaggle SIIM solutions oversample the rarer positives); a kind the subset lacks is not forced."""
    rng = np.random.default_rng([int(seed), 31337])
    if positive_share is None or positive is None:
        return _cycle(np.arange(n_images), steps * batch, rng).reshape(steps, batch)
    positive = np.asarray(positive, dtype=bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    n_pos = int(round(positive_share * batch)) if neg.size else batch
    n_pos = min(batch, n_pos) if pos.size else 0
    n_neg = batch - n_pos
    stream = np.concatenate(
        [_cycle(pos, steps * n_pos, rng).reshape(steps, n_pos), _cycle(neg, steps * n_neg, rng).reshape(steps, n_neg)],
        axis=1,
    )
    return stream.astype(np.int64)


def check_steps(steps: int, checks: int) -> list[int]:
    """Evenly spaced steps (1-based, the last is ``steps``) at which validate is scored."""
    checks = max(1, min(checks, steps))
    return sorted({int(round(steps * (k + 1) / checks)) for k in range(checks)})


def choose_on_validate(prob: np.ndarray, truth: np.ndarray, thresholds, min_areas) -> tuple[float, float, float]:
    """(best mean Dice, threshold, min_area) over the candidates; ties go to the first (lowest) ones."""
    n_pixels = prob.shape[1] * prob.shape[2]
    best = (-1.0, float(thresholds[0]), float(min_areas[0]))
    for t in thresholds:
        pred = prob > t
        area = pred.reshape(len(pred), -1).sum(axis=1)
        for a in min_areas:
            kept = pred & (area >= a * n_pixels)[:, None, None] if a > 0 else pred
            score = mean_over_images(dice_per_image(kept, truth))
            if score > best[0] + 1e-12:
                best = (score, float(t), float(a))
    return best


def apply_choice(prob: np.ndarray, threshold: float, min_area: float) -> np.ndarray:
    pred = prob > threshold
    if min_area > 0:
        area = pred.reshape(len(pred), -1).sum(axis=1)
        pred &= (area >= min_area * prob.shape[1] * prob.shape[2])[:, None, None]
    return pred


def predict(unet, images, batch_size: int, device, precision: str) -> np.ndarray:
    """Sigmoid probabilities float32 (N, H, W) of normalised images (N, C, H, W) (CPU tensor)."""
    import torch

    from medfilip.training.precision import autocast

    unet.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = (
                images[start : start + batch_size]
                .to(device, non_blocking=True)
                .contiguous(memory_format=torch.channels_last)
            )
            with autocast(precision, device):
                logits = unet(x)
            out.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[-2:]), np.float32)


def make_optimiser(unet, settings):
    """AdamW, fused (one kernel over all tensors: 7x faster a step than the default on CPU) where torch has it."""
    import torch

    try:
        return torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, foreach=True)


def finetune_fraction(
    unet,
    x_train,
    y_train,
    x_val,
    val_truth,
    settings,
    *,
    seed: int,
    device,
    precision: str,
    fraction: float,
    n_positive: int,
) -> tuple[Any, FractionResult]:
    """Train ``unet`` in place on (x_train, y_train); returns the best-on-validate state dict and the record."""
    import torch
    import torch.nn.functional as F
    from segmentation_models_pytorch.losses import DiceLoss

    from medfilip.training.precision import autocast

    n = len(x_train)
    steps, batch = steps_for(n, settings)
    positive = y_train.flatten(1).amax(dim=1).numpy() > 0
    stream = batch_stream(n, batch, steps, seed, positive, settings.positive_share)
    checks = set(check_steps(steps, settings.checks))
    unet.to(device, memory_format=torch.channels_last)  # faster convolutions on CPU and GPU alike
    optimiser = make_optimiser(unet, settings)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    dice_loss = DiceLoss(mode="binary", from_logits=True)
    best_state, best = None, (-1.0, float("nan"), float("nan"), 0)
    train_s, loss_value = 0.0, float("nan")
    infer_batch = max(settings.batch_size, 64)
    for step in range(1, steps + 1):
        unet.train()
        started = time.perf_counter()
        rows = torch.from_numpy(stream[step - 1])
        x = x_train[rows].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y_train[rows].to(device, non_blocking=True)
        with autocast(precision, device):
            logits = unet(x)
        logits = logits.float()
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice_loss(logits, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - started
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise ValueError(
                f"segmentation, fraction {fraction:g}: the loss is {loss_value} at step {step} "
                "(lower evaluation.segmentation.lr)"
            )
        if step in checks:
            prob = predict(unet, x_val, infer_batch, device, precision)
            score, threshold, min_area = choose_on_validate(prob, val_truth, settings.thresholds, settings.min_area)
            log.info(
                "fraction %g step %d/%d: loss %.4f, validate Dice %.4f (threshold %.2f, min area %.3f)",
                fraction,
                step,
                steps,
                loss_value,
                score,
                threshold,
                min_area,
            )
            if score > best[0] + 1e-12:
                best = (score, threshold, min_area, step)
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in unet.state_dict().items()})
    record = FractionResult(
        fraction=fraction,
        status="ok",
        n_train=n,
        n_train_positive=n_positive,
        steps=steps,
        batch_size=batch,
        checkpoint_step=best[3],
        threshold=best[1],
        min_area=best[2],
        validate_dice=best[0],
        train_seconds=round(train_s, 3),
        train_images_per_s=round(steps * batch / train_s, 2) if train_s > 0 else float("nan"),
        final_loss=loss_value,
    )
    return best_state, record


def evaluate_encoder(
    run: str,
    encoder: str,
    make_unet,
    data,
    settings,
    *,
    channels: int,
    device,
    precision: str,
    example_rows: np.ndarray | None = None,
) -> RunResult:
    """Fine-tune fresh copies of ``make_unet()`` on every fraction and score each on test."""
    import torch

    from medfilip.evaluation.segmentation.data import fraction_subsets, prepare_images

    size = settings.image_size
    train, val, test = data.splits["train"], data.splits["validate"], data.splits["test"]
    x_train_all = prepare_images(train.images, size, channels)
    y_train_all = torch.from_numpy(train.masks).unsqueeze(1).float()
    x_val = prepare_images(val.images, size, channels)
    x_test = prepare_images(test.images, size, channels)
    subsets = fraction_subsets(train.positive, settings.fractions, settings.seed)
    result = RunResult(run=run, encoder=encoder, test_image_ids=list(test.image_ids))
    infer_batch = max(settings.batch_size, 64)
    largest = max(settings.fractions)
    for k, fraction in enumerate(settings.fractions):
        rows = subsets[fraction]
        n_pos = int(train.positive[rows].sum())
        if n_pos == 0:
            reason = (
                f"no image with pneumothorax among the {rows.size} train images of this fraction "
                f"(the train split has {int(train.positive.sum())} of {len(train)})"
            )
            log.warning("%s, fraction %g: skipped: %s", run, fraction, reason)
            result.fractions.append(
                FractionResult(fraction=fraction, status="skipped", reason=reason, n_train=int(rows.size))
            )
            continue
        unet = make_unet()
        fraction_seed = settings.seed * 1000 + k
        state, record = finetune_fraction(
            unet,
            x_train_all[torch.from_numpy(rows)],
            y_train_all[torch.from_numpy(rows)],
            x_val,
            val.masks,
            settings,
            seed=fraction_seed,
            device=device,
            precision=precision,
            fraction=fraction,
            n_positive=n_pos,
        )
        unet.load_state_dict(state)
        started = time.perf_counter()
        prob = predict(unet, x_test, infer_batch, device, precision)
        pred = apply_choice(prob, record.threshold, record.min_area)
        record.test_seconds = round(time.perf_counter() - started, 3)
        result.scores[fraction] = {
            "dice": dice_per_image(pred, test.masks),
            "iou": iou_per_image(pred, test.masks),
            "truth_area": test.masks.reshape(len(test), -1).sum(axis=1).astype(np.int64),
            "pred_area": pred.reshape(len(test), -1).sum(axis=1).astype(np.int64),
        }
        if fraction == largest and example_rows is not None:
            result.examples = {
                "rows": np.asarray(example_rows, np.int64),
                "pred": pred[example_rows],
                "prob": prob[example_rows].astype(np.float16),
            }
        log.info(
            "%s, fraction %g: %d train images (%d with pneumothorax), %d steps at %.1f images/s; test Dice %.4f "
            "(checkpoint step %d, threshold %.2f, min area %.3f chosen on validate)",
            run,
            fraction,
            record.n_train,
            n_pos,
            record.steps,
            record.train_images_per_s,
            float(result.scores[fraction]["dice"].mean()),
            record.checkpoint_step,
            record.threshold,
            record.min_area,
        )
        result.fractions.append(record)
        del unet
    return result


# -- writing one run's results ------------------------------------------------------------------
def write_run_result(result: RunResult, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """``scores.parquet`` (one row per test image and fraction), ``summary.json`` (one record per fraction
    + meta), ``examples.npz`` (the figure's predictions), each written atomically."""
    import json

    import pyarrow as pa

    from medfilip.io import atomic_path, write_parquet_atomic, write_text_atomic

    out_dir = Path(out_dir)
    rows: dict[str, list] = {c: [] for c in SCORE_COLUMNS}
    for fraction, arrays in result.scores.items():
        n = len(result.test_image_ids)
        rows["run"] += [result.run] * n
        rows["fraction"] += [float(fraction)] * n
        rows["image_id"] += list(result.test_image_ids)
        for c in ("dice", "iou", "truth_area", "pred_area"):
            rows[c] += arrays[c].tolist()
    schema = pa.schema(
        [
            ("run", pa.string()),
            ("fraction", pa.float64()),
            ("image_id", pa.string()),
            ("dice", pa.float64()),
            ("iou", pa.float64()),
            ("truth_area", pa.int64()),
            ("pred_area", pa.int64()),
        ]
    )
    write_parquet_atomic(pa.table(rows, schema=schema), out_dir / "scores.parquet")
    with atomic_path(out_dir / "examples.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **(result.examples or {"rows": np.zeros(0, np.int64)}))
    summary = {
        "run": result.run,
        "encoder": result.encoder,
        **meta,
        "test_image_ids": len(result.test_image_ids),
        "fractions": [_json_safe(asdict(r)) for r in result.fractions],
    }
    write_text_atomic(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
    return out_dir / "summary.json"


def _json_safe(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def write_skipped_run(
    run: str, encoder: str, fractions: list[float], reason: str, out_dir: str | Path, meta: dict[str, Any]
) -> Path:
    """The outputs of a run that could not be fine-tuned at all: every fraction a skip record with the reason."""
    result = RunResult(
        run=run,
        encoder=encoder,
        fractions=[FractionResult(fraction=f, status="skipped", reason=reason) for f in fractions],
    )
    return write_run_result(result, out_dir, meta)
