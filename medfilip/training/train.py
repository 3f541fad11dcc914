"""The training loop of one run: data, model, SGD + cosine warm restarts, checkpoints, logs.

``train_run`` is the entry point of ``medfilip train`` and of torchrun (one call per process; the
distributed environment comes from torchrun's variables). Outputs in ``out_dir``: ``model.pt`` +
``text_encoder/`` (see :mod:`medfilip.training.model`), ``train_log.csv`` (one row per step),
``config.yaml`` (the settings used and what the run measured) and ``checkpoint.pt`` (resumable
state, every ``checkpoint_every`` steps and at the end). A run started again with ``resume``
continues from the checkpoint and, on CPU, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfilip.devices import resolve_device
from medfilip.names import SSM_TARGETS
from medfilip.training.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
    settings_fingerprint,
)
from medfilip.training.data import (
    MASKABLE_VARIANTS,
    BatchCollator,
    EpochBatchSampler,
    PretrainingDataset,
    TextTable,
    read_label_table,
    training_items,
)
from medfilip.training.distributed import (
    DistributedEnv,
    barrier,
    distributed_env,
    init_distributed,
    shutdown_distributed,
)
from medfilip.training.gather import gather_with_grad, global_batch_table
from medfilip.training.loss import ImageTextMatchingLoss, total_loss
from medfilip.training.model import DualEncoder, build_model, model_size, save_trained
from medfilip.training.precision import autocast, resolve_precision
from medfilip.training.sampling import sample_pairs
from medfilip.training.settings import RunSettings, TrainingConfig

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.csv"
RUN_CONFIG = "config.yaml"
LOG_TERMS = ("loss", "mse_loss", "ce_loss", "bce_loss")


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: int
    finished: bool
    seconds: float
    images_per_s: float
    final_loss: float
    n_images: int
    n_dropped: int
    model: DualEncoder | None = None


def training_device(setting: str, env: DistributedEnv) -> torch.device:
    """The device of this process: its local rank's GPU under CUDA."""
    if resolve_device(setting, "training.device") == "cuda":
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _file_stamp(path: Path | None) -> list[int] | None:
    if path is None or not Path(path).exists():
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def run_settings(cfg: TrainingConfig, run_name: str, run: RunSettings) -> dict[str, Any]:
    """The settings one run is trained under (the run's entry instead of the whole runs table)."""
    settings = cfg.model_dump(mode="json", exclude={"runs"})
    settings["run"] = {"name": run_name, **run.model_dump(mode="json")}
    return settings


def _fingerprint(settings: dict, world_size: int, inputs: dict[str, Path | None]) -> str:
    """What decides the result: settings (less the purely operational ones), world size, inputs' stamps."""
    relevant = {k: v for k, v in settings.items() if k not in ("checkpoint_every", "num_workers")}
    return settings_fingerprint(
        {"settings": relevant, "world_size": world_size, "inputs": {k: _file_stamp(p) for k, p in inputs.items()}}
    )


def _write_log(rows: list[dict], path: Path) -> None:
    from medfilip.io import write_csv_atomic

    if not rows:
        return
    columns = ["step", "epoch"] + [t for t in LOG_TERMS if t in rows[-1]] + ["lr", "logit_scale", "images_per_s"]
    write_csv_atomic(rows, path, columns)


def _write_run_config(path: Path, settings: dict, facts: dict) -> None:
    import yaml

    from medfilip.io import write_text_atomic

    write_text_atomic(yaml.safe_dump({**settings, "measured": facts}, sort_keys=False), path)


def _calibration_file(embeddings_path: str | Path | None, calibration_path: str | Path | None) -> Path | None:
    from medfilip.embeddings.calibration import calibration_path as beside

    if calibration_path is not None:
        return Path(calibration_path)
    return beside(embeddings_path) if embeddings_path is not None else None


def _calibration(embeddings_path: str | Path, calibration_path: str | Path | None, variant: str):
    """The SSM calibration of ``variant``: from ``calibration_path``, else the file beside the embeddings.
    A missing file is an error (the config names a calibration; raw cosines are method ``none`` in it)."""
    from medfilip.embeddings.calibration import read_calibration

    path = _calibration_file(embeddings_path, calibration_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no SSM calibration file (`medfilip embed` writes it beside {embeddings_path}, "
            "`medfilip calibrate` rewrites it)"
        )
    return read_calibration(path, variant)


def train_run(
    run_name: str,
    cfg: TrainingConfig,
    *,
    images_dir: str | Path,
    labels_path: str | Path,
    embeddings_path: str | Path | None,
    out_dir: str | Path,
    calibration_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
    return_model: bool = False,
) -> TrainResult:
    """Train run ``run_name`` of ``cfg.runs``; ``stop_after_steps`` stops early as a kill would
    (after that step's checkpoint, if one falls due), leaving no model.pt.

    SSM targets are calibrated by ``calibration_path`` (default: the file beside the embeddings,
    written by ``medfilip embed``); with no such file they are the raw cosines (logged)."""
    from tqdm import tqdm

    from medfilip.images.store import ImageStore

    if run_name not in cfg.runs:
        raise ValueError(f"run {run_name!r} is not in training.runs ({', '.join(cfg.runs)})")
    run = cfg.runs[run_name]
    if run.seed is not None and run.seed != cfg.seed:
        cfg = cfg.model_copy(update={"seed": run.seed})
    out_dir = Path(out_dir)
    env = distributed_env()
    device = training_device(cfg.device, env)
    precision = resolve_precision(cfg.precision, device)
    owns_group = env.is_distributed and not torch.distributed.is_initialized()
    init_distributed(env, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seed_everything(cfg.seed)

    # -- data ---------------------------------------------------------------------------------
    store = ImageStore.open(images_dir)
    labels, by_report = read_label_table(labels_path, run.label_variant)
    positions, image_label_ids, n_dropped = training_items(store, by_report)
    if cfg.max_pairs is not None and cfg.max_pairs < len(positions):
        # a seeded uniform sample of the pairs (by image id: independent of the store's order)
        image_ids = store.index.column("image_id").to_pylist()
        chosen = sample_pairs([image_ids[int(p)] for p in positions], cfg.max_pairs, seed=cfg.seed)
        log.info(
            "run %s: training.max_pairs = %d of %d pairs (seed %d)", run_name, len(chosen), len(positions), cfg.seed
        )
        positions, image_label_ids = positions[chosen], [image_label_ids[int(i)] for i in chosen]
    if n_dropped:
        log.warning(
            "%d training images have no label rows of variant %s and are left out", n_dropped, run.label_variant
        )
    log.info(
        "run %s: %d training images, %d unique %s labels", run_name, len(positions), len(labels), run.label_variant
    )
    text_table = None
    if cfg.masked_targets == "entailment" and labels.variant in MASKABLE_VARIANTS:
        # every masked form of every label, each with its own vector and the images that entail it
        text_table = TextTable.build(labels)
        log.info(
            "run %s: masked targets by entailment over %d texts of %d labels", run_name, len(text_table), len(labels)
        )
    vectors, calibration = None, None
    if run.target in SSM_TARGETS:
        if embeddings_path is None:
            raise ValueError(f"run {run_name!r}: target {run.target} needs --embeddings")
        from medfilip.embeddings import load_embeddings

        strings = labels.texts + (text_table.texts if text_table is not None else [])
        vectors = torch.from_numpy(np.ascontiguousarray(load_embeddings(embeddings_path, strings), dtype=np.float32))
        calibration = _calibration(embeddings_path, calibration_path, run.label_variant)
        log.info("run %s: SSM target %s", run_name, calibration.describe())

    per_rank_batch = cfg.batch_size // env.world_size
    if per_rank_batch * env.world_size != cfg.batch_size:
        log.warning(
            "batch_size %d is not a multiple of %d processes: %d per process",
            cfg.batch_size,
            env.world_size,
            per_rank_batch,
        )
    dataset = PretrainingDataset(
        store,
        positions,
        image_label_ids,
        labels,
        mask_probability=cfg.mask_probability,
        augment=cfg.augment,
        seed=cfg.seed,
    )
    sampler = EpochBatchSampler(len(dataset), per_rank_batch, seed=cfg.seed, rank=env.rank, world_size=env.world_size)

    # -- model, optimiser -----------------------------------------------------------------------
    model = build_model(cfg.model, store.size, seed=cfg.seed).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.image.to(memory_format=torch.channels_last)
        model.channels_last = True
    if cfg.compile:
        model.image.compile()
    text_cache = None
    if cfg.text_cache:
        depth = len(model.text.transformer_layers())
        if cfg.model.text_trainable_layers >= depth:
            log.warning("training.text_cache: all %d text layers are trained, nothing frozen to cache (ignored)", depth)
        else:
            text_cache = model.text.enable_cache()
            log.info(
                "run %s: text_cache on: the embeddings and %d of %d text layers run once per distinct string",
                run_name,
                text_cache.n_frozen,
                depth,
            )
    sizes = model_size(model)
    log.info("model: %(parameters)d parameters, %(trainable)d trained", sizes)
    collator = BatchCollator(
        run.target,
        model.text.tokenizer,
        cfg.model.max_length,
        vectors=vectors,
        categories=labels.category_ids(),
        negated=labels.negated(),
        calibration=calibration,
        seed=cfg.seed,
        text_table=text_table,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=4 if cfg.num_workers > 0 else None,  # batches ready ahead per worker
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    network: torch.nn.Module = model
    if env.is_distributed:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    params = model.trainable_parameters()
    o = cfg.optimiser
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    steps_per_epoch = sampler.batches_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, round(o.t_0 * steps_per_epoch)), T_mult=o.t_mult, eta_min=o.eta_min
    )
    loss_fn = ImageTextMatchingLoss(run.loss)

    # -- resume ---------------------------------------------------------------------------------
    settings = run_settings(cfg, run_name, run)
    fingerprint = _fingerprint(
        settings,
        env.world_size,
        {
            "images": Path(images_dir) / "index.parquet",
            "labels": Path(labels_path),
            "embeddings": Path(embeddings_path) if embeddings_path and vectors is not None else None,
            "calibration": _calibration_file(embeddings_path, calibration_path) if vectors is not None else None,
        },
    )
    checkpoint_path = out_dir / CHECKPOINT_FILE
    step, epoch, position, rows = 0, 0, 0, []
    state = load_checkpoint(checkpoint_path, fingerprint) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"])
        step, epoch, position, rows = state["step"], state["epoch"], state["position"], state["log"]
        log.info("resuming %s from step %d (epoch %d, batch %d)", checkpoint_path, step, epoch, position)

    def checkpoint() -> None:
        if env.is_main:
            save_checkpoint(
                checkpoint_path,
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "position": position,
                    "log": rows,
                },
            )
            _write_log(rows, out_dir / TRAIN_LOG)

    # -- loop -----------------------------------------------------------------------------------
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    # a fractional number of epochs ends inside the last epoch (the demo's schedule fits its time budget)
    total_steps = max(1, round(steps_per_epoch * cfg.epochs))
    global_batch = per_rank_batch * env.world_size
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and env.is_main), desc=run_name, unit="step")
    log_every = max(1, steps_per_epoch // 10)
    network.train()
    started = time.perf_counter()
    steps_this_session, images_seen = 0, 0
    last = time.perf_counter()
    stopped = False
    # losses are summed on the device and read once a row (training.log_every steps): the host never
    # waits for the GPU inside a window (no .item(), no isfinite branch per step)
    window_loss: torch.Tensor | None = None
    window_terms: dict[str, torch.Tensor] = {}
    window_steps = 0

    def log_row(lr: float, now: float) -> None:
        nonlocal window_loss, window_terms, window_steps, last
        mean_loss = (window_loss / window_steps).item()
        if not math.isfinite(mean_loss):
            first = step - window_steps + 1
            where = f"step {step}" if window_steps == 1 else f"steps {first}-{step}"
            raise FloatingPointError(f"run {run_name}: loss is {mean_loss} at {where}")
        rate = global_batch * window_steps / max(now - last, 1e-9)
        last = now
        rows.append(
            {
                "step": step,
                "epoch": epoch,
                "loss": round(mean_loss, 6),
                **{k: round((v / window_steps).item(), 6) for k, v in window_terms.items()},
                "lr": lr,
                "logit_scale": round(float(model.logit_scale.detach()), 4),
                "images_per_s": round(rate, 2),
            }
        )
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.1f}", epoch=epoch)
        if bar.disable and env.is_main and (step % log_every == 0 or step == total_steps):
            # no progress bar (rules, batch jobs): a log line about ten times an epoch instead
            done = images_seen / max(now - started, 1e-9)
            log.info(
                "run %s: step %d/%d, epoch %d, loss %.4f, lr %.2e, %.1f images/s",
                run_name,
                step,
                total_steps,
                epoch,
                mean_loss,
                lr,
                done,
            )
        window_loss, window_terms, window_steps = None, {}, 0

    # training.validate_every: the validate AUC curve (medfilip/training/curve.py), main process only
    probe, check_every = None, 0
    if cfg.validate_every is not None and env.is_main:
        from medfilip.labels.templates import run_eval_text
        from medfilip.training.curve import CURVE_FILE, ValidateProbe, append_curve

        probe = ValidateProbe(store, labels, by_report, run_eval_text(run), cfg.validate_images)
        check_every = max(1, round(cfg.validate_every * steps_per_epoch))
        if not probe:
            log.warning("run %s: validate_every: no category with enough validate images; no curve", run_name)
            probe = None
        elif step == 0:
            (out_dir / CURVE_FILE).unlink(missing_ok=True)

    def validate_check() -> None:
        value = probe.score(model, device)
        append_curve(
            out_dir / CURVE_FILE,
            {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "validate_auc": round(value, 6),
                "n_images": int(probe.rows.size),
                "n_classes": len(probe.classes),
            },
        )
        log.info("run %s: step %d, validate AUC %.4f (%d images)", run_name, step, value, probe.rows.size)

    while step < total_steps and not stopped:
        sampler.set_epoch(epoch, position)
        for batch in loader:
            images = batch.images.to(device, non_blocking=True)
            input_ids = batch.input_ids.to(device, non_blocking=True)
            attention_mask = batch.attention_mask.to(device, non_blocking=True)
            target = batch.target.to(device, non_blocking=True)
            with autocast(precision, device):
                out = network(images, input_ids, attention_mask)
            image_features, text_features = out["image_features"], out["text_features"]
            if env.is_distributed:
                # the loss of the global batch: features gathered across ranks (with gradient), the
                # target rebuilt from every rank's batch table (medfilip/training/gather.py)
                image_sizes, text_sizes, all_ids, all_own, keep, kept_ids = global_batch_table(
                    batch.image_label_ids, batch.own, batch.texts, batch.text_label_ids.tolist()
                )
                image_features = gather_with_grad(image_features, image_sizes)
                text_features = gather_with_grad(text_features, text_sizes)[torch.tensor(keep, device=device)]
                target = collator.target_of(all_ids, torch.tensor(kept_ids, dtype=torch.long), all_own, len(keep)).to(
                    device, non_blocking=True
                )
            terms = loss_fn(image_features, text_features, out["logit_scale"], target)
            loss = total_loss(terms)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            position += 1
            steps_this_session += 1
            images_seen += global_batch
            window_loss = loss.detach() if window_loss is None else window_loss + loss.detach()
            for k, v in terms.items():
                window_terms[k] = v.detach() if k not in window_terms else window_terms[k] + v.detach()
            window_steps += 1
            bar.update(1)
            last_of_run = step >= total_steps or (stop_after_steps is not None and step >= stop_after_steps)
            if step % cfg.log_every == 0 or last_of_run or step % cfg.checkpoint_every == 0:
                log_row(lr, time.perf_counter())
            if probe is not None and (step % check_every == 0 or step >= total_steps):
                validate_check()
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            if stop_after_steps is not None and step >= stop_after_steps:
                stopped = True
                break
            if step >= total_steps and position < steps_per_epoch:
                break  # the end of a fractional last epoch
        else:
            epoch += 1
            position = 0
    bar.close()
    seconds = time.perf_counter() - started
    rate = images_seen / seconds if seconds > 0 else 0.0
    finished = not stopped or step >= total_steps
    final_loss = rows[-1]["loss"] if rows else float("nan")

    if finished and env.is_main:
        checkpoint()
        save_trained(model, out_dir, extra={"run": settings["run"], "steps": step})
        facts = {
            "steps": step,
            "epochs": cfg.epochs,
            "steps_per_epoch": steps_per_epoch,
            "n_images": len(positions),
            "n_dropped": n_dropped,
            "n_labels": len(labels),
            "image_size": store.size,
            "device": str(device),
            "precision": precision,
            "world_size": env.world_size,
            "seconds_this_session": round(seconds, 2),
            "images_per_s": round(rate, 2),
            "final_loss": final_loss,
            **sizes,
        }
        if text_cache is not None:
            facts["text_cache"] = text_cache.describe()
            log.info("run %s: text_cache %s", run_name, text_cache.describe())
        _write_run_config(out_dir / RUN_CONFIG, settings, facts)
        log.info("run %s: %d steps, final loss %.4f, %.1f images/s; %s", run_name, step, final_loss, rate, out_dir)
    barrier(env)
    if owns_group:
        shutdown_distributed()
    return TrainResult(
        out_dir,
        step,
        epoch,
        finished,
        seconds,
        rate,
        final_loss,
        len(positions),
        n_dropped,
        model if return_model else None,
    )
