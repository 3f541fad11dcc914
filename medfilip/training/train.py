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
from collections.abc import Callable
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
    LabelTable,
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


@dataclass
class RunData:
    """What one run trains on (the setup): the corpus store, its labels, the chosen (image, labels) pairs,
    the SSM vectors and calibration (SSM targets only), and the per-process batches over them."""

    store: Any
    labels: LabelTable
    by_report: Any
    positions: np.ndarray
    image_label_ids: list
    n_dropped: int
    text_table: TextTable | None
    vectors: torch.Tensor | None
    calibration: Any
    dataset: PretrainingDataset
    sampler: EpochBatchSampler
    per_rank_batch: int


def setup_run_data(
    run_name: str,
    run: RunSettings,
    cfg: TrainingConfig,
    env: DistributedEnv,
    *,
    images_dir: str | Path,
    labels_path: str | Path,
    embeddings_path: str | Path | None,
    calibration_path: str | Path | None,
) -> RunData:
    """Read the run's data: the pairs of the store and label table (a seeded sample with
    ``training.max_pairs``), every masked form of the labels (entailment targets), the label vectors and
    their calibration (SSM targets), and the dataset and batch sampler of this process."""
    from medfilip.images.store import ImageStore

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
    return RunData(
        store,
        labels,
        by_report,
        positions,
        image_label_ids,
        n_dropped,
        text_table,
        vectors,
        calibration,
        dataset,
        sampler,
        per_rank_batch,
    )


@dataclass
class RunParts:
    """What one run trains with (the build): the model (and its DDP wrapper), the batch collator and
    loader, the optimiser, its schedule and the loss."""

    model: DualEncoder
    network: torch.nn.Module
    text_cache: Any
    sizes: dict
    collator: BatchCollator
    loader: torch.utils.data.DataLoader
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: ImageTextMatchingLoss


def build_run(
    run_name: str, run: RunSettings, cfg: TrainingConfig, data: RunData, env: DistributedEnv, device: torch.device
) -> RunParts:
    """Build the model on ``device`` (channels_last, compile and the text cache as configured), the
    collator that turns batches into texts and targets, the seeded loader, SGD and its cosine warm
    restarts (``t_0`` in epochs), and the loss of ``run.loss``."""
    model = build_model(cfg.model, data.store.size, seed=cfg.seed).to(device)
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
        vectors=data.vectors,
        categories=data.labels.category_ids(),
        negated=data.labels.negated(),
        calibration=data.calibration,
        seed=cfg.seed,
        text_table=data.text_table,
    )
    loader = torch.utils.data.DataLoader(
        data.dataset,
        batch_sampler=data.sampler,
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
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, round(o.t_0 * data.sampler.batches_per_epoch)), T_mult=o.t_mult, eta_min=o.eta_min
    )
    return RunParts(
        model,
        network,
        text_cache,
        sizes,
        collator,
        loader,
        params,
        optimizer,
        scheduler,
        ImageTextMatchingLoss(run.loss),
    )


class _Session:
    """The loop of one run: its position (step, epoch, batch in the epoch), the log rows, the loss summed
    on the device over a log window, checkpoints and the validate curve; :meth:`train_epoch` runs (the
    rest of) one epoch."""

    def __init__(
        self,
        run_name: str,
        cfg: TrainingConfig,
        env: DistributedEnv,
        device: torch.device,
        precision: str,
        data: RunData,
        parts: RunParts,
        out_dir: Path,
        fingerprint: str,
        *,
        progress: bool,
        stop_after_steps: int | None,
        validate_probe: Callable[..., Any] | None,
    ):

        self.run_name, self.cfg, self.env, self.device, self.precision = run_name, cfg, env, device, precision
        self.data, self.parts, self.out_dir, self.fingerprint = data, parts, out_dir, fingerprint
        self.stop_after_steps = stop_after_steps
        self.validate_probe = validate_probe
        self.checkpoint_path = out_dir / CHECKPOINT_FILE
        self.step, self.epoch, self.position, self.rows = 0, 0, 0, []
        self.steps_per_epoch = data.sampler.batches_per_epoch
        # a fractional number of epochs ends inside the last epoch (the demo's schedule fits its time budget)
        self.total_steps = max(1, round(self.steps_per_epoch * cfg.epochs))
        self.global_batch = data.per_rank_batch * env.world_size
        self.progress = progress
        self.bar = None
        self.log_every = max(1, self.steps_per_epoch // 10)
        self.started = self.last = 0.0
        self.images_seen = 0
        self.stopped = False
        # losses are summed on the device and read once a row (training.log_every steps): the host never
        # waits for the GPU inside a window (no .item(), no isfinite branch per step)
        self.window_loss: torch.Tensor | None = None
        self.window_terms: dict[str, torch.Tensor] = {}
        self.window_steps = 0
        self.probe, self.check_every = None, 0

    def resume(self, state: dict) -> None:
        parts = self.parts
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"])
        self.step, self.epoch, self.position, self.rows = state["step"], state["epoch"], state["position"], state["log"]
        log.info(
            "resuming %s from step %d (epoch %d, batch %d)", self.checkpoint_path, self.step, self.epoch, self.position
        )

    def start(self) -> None:
        """The progress bar, the clocks and (training.validate_every) the validate probe."""
        from tqdm import tqdm

        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.progress and self.env.is_main),
            desc=self.run_name,
            unit="step",
        )
        self.parts.network.train()
        self.started = time.perf_counter()
        self.last = time.perf_counter()
        # training.validate_every: the validate AUC curve (medfilip/training/curve.py), main process only
        cfg = self.cfg
        if cfg.validate_every is not None and self.env.is_main:
            from medfilip.labels.templates import run_eval_text
            from medfilip.training.curve import CURVE_FILE

            run = cfg.runs[self.run_name]
            data = self.data
            probe = self.validate_probe(
                data.store, data.labels, data.by_report, run_eval_text(run), cfg.validate_images
            )
            self.check_every = max(1, round(cfg.validate_every * self.steps_per_epoch))
            if not probe:
                log.warning("run %s: validate_every: no category with enough validate images; no curve", self.run_name)
            else:
                self.probe = probe
                if self.step == 0:
                    (self.out_dir / CURVE_FILE).unlink(missing_ok=True)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps or self.stopped

    def checkpoint(self) -> None:
        if self.env.is_main:
            parts = self.parts
            save_checkpoint(
                self.checkpoint_path,
                {
                    "fingerprint": self.fingerprint,
                    "model": parts.model.state_dict(),
                    "optimizer": parts.optimizer.state_dict(),
                    "scheduler": parts.scheduler.state_dict(),
                    "step": self.step,
                    "epoch": self.epoch,
                    "position": self.position,
                    "log": self.rows,
                },
            )
            _write_log(self.rows, self.out_dir / TRAIN_LOG)

    def log_row(self, lr: float, now: float) -> None:
        step, window_steps = self.step, self.window_steps
        mean_loss = (self.window_loss / window_steps).item()
        if not math.isfinite(mean_loss):
            first = step - window_steps + 1
            where = f"step {step}" if window_steps == 1 else f"steps {first}-{step}"
            raise FloatingPointError(f"run {self.run_name}: loss is {mean_loss} at {where}")
        rate = self.global_batch * window_steps / max(now - self.last, 1e-9)
        self.last = now
        self.rows.append(
            {
                "step": step,
                "epoch": self.epoch,
                "loss": round(mean_loss, 6),
                **{k: round((v / window_steps).item(), 6) for k, v in self.window_terms.items()},
                "lr": lr,
                "logit_scale": round(float(self.parts.model.logit_scale.detach()), 4),
                "images_per_s": round(rate, 2),
            }
        )
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.1f}", epoch=self.epoch)
        if self.bar.disable and self.env.is_main and (step % self.log_every == 0 or step == self.total_steps):
            # no progress bar (rules, batch jobs): a log line about ten times an epoch instead
            done = self.images_seen / max(now - self.started, 1e-9)
            log.info(
                "run %s: step %d/%d, epoch %d, loss %.4f, lr %.2e, %.1f images/s",
                self.run_name,
                step,
                self.total_steps,
                self.epoch,
                mean_loss,
                lr,
                done,
            )
        self.window_loss, self.window_terms, self.window_steps = None, {}, 0

    def validate_check(self) -> None:
        from medfilip.training.curve import CURVE_FILE, append_curve

        probe = self.probe
        value = probe.score(self.parts.model, self.device)
        append_curve(
            self.out_dir / CURVE_FILE,
            {
                "step": self.step,
                "epoch": round(self.step / self.steps_per_epoch, 4),
                "validate_auc": round(value, 6),
                "n_images": int(probe.rows.size),
                "n_classes": len(probe.classes),
            },
        )
        log.info("run %s: step %d, validate AUC %.4f (%d images)", self.run_name, self.step, value, probe.rows.size)

    def train_step(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """One optimiser step on one batch: (loss, its terms, the learning rate it used)."""
        parts, device, env = self.parts, self.device, self.env
        images = batch.images.to(device, non_blocking=True)
        input_ids = batch.input_ids.to(device, non_blocking=True)
        attention_mask = batch.attention_mask.to(device, non_blocking=True)
        target = batch.target.to(device, non_blocking=True)
        with autocast(self.precision, device):
            out = parts.network(images, input_ids, attention_mask)
        image_features, text_features = out["image_features"], out["text_features"]
        if env.is_distributed:
            # the loss of the global batch: features gathered across ranks (with gradient), the
            # target rebuilt from every rank's batch table (medfilip/training/gather.py)
            image_sizes, text_sizes, all_ids, all_own, keep, kept_ids = global_batch_table(
                batch.image_label_ids, batch.own, batch.texts, batch.text_label_ids.tolist()
            )
            image_features = gather_with_grad(image_features, image_sizes)
            text_features = gather_with_grad(text_features, text_sizes)[torch.tensor(keep, device=device)]
            target = parts.collator.target_of(all_ids, torch.tensor(kept_ids, dtype=torch.long), all_own, len(keep)).to(
                device, non_blocking=True
            )
        terms = parts.loss_fn(image_features, text_features, out["logit_scale"], target)
        loss = total_loss(terms)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parts.params, self.cfg.grad_clip)
        lr = parts.optimizer.param_groups[0]["lr"]
        parts.optimizer.step()
        parts.scheduler.step()
        return loss, terms, lr

    def train_epoch(self) -> None:
        """The rest of the current epoch (from ``position``), until the run ends or is stopped."""
        cfg, stop_after_steps = self.cfg, self.stop_after_steps
        self.data.sampler.set_epoch(self.epoch, self.position)
        for batch in self.parts.loader:
            loss, terms, lr = self.train_step(batch)
            self.step += 1
            self.position += 1
            self.images_seen += self.global_batch
            self.window_loss = loss.detach() if self.window_loss is None else self.window_loss + loss.detach()
            for k, v in terms.items():
                self.window_terms[k] = v.detach() if k not in self.window_terms else self.window_terms[k] + v.detach()
            self.window_steps += 1
            self.bar.update(1)
            step = self.step
            last_of_run = step >= self.total_steps or (stop_after_steps is not None and step >= stop_after_steps)
            if step % cfg.log_every == 0 or last_of_run or step % cfg.checkpoint_every == 0:
                self.log_row(lr, time.perf_counter())
            if self.probe is not None and (step % self.check_every == 0 or step >= self.total_steps):
                self.validate_check()
            if step % cfg.checkpoint_every == 0:
                self.checkpoint()
            if stop_after_steps is not None and step >= stop_after_steps:
                self.stopped = True
                return
            if step >= self.total_steps and self.position < self.steps_per_epoch:
                return  # the end of a fractional last epoch
        self.epoch += 1
        self.position = 0


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
    validate_probe: Callable[..., Any] | None = None,
) -> TrainResult:
    """Train run ``run_name`` of ``cfg.runs``: set up its data (:func:`setup_run_data`), build its model
    and optimiser (:func:`build_run`), resume from a checkpoint of the same settings and inputs, then
    train epoch by epoch. ``stop_after_steps`` stops early as a kill would (after that step's
    checkpoint, if one falls due), leaving no model.pt.

    SSM targets are calibrated by ``calibration_path`` (default: the file beside the embeddings,
    written by ``medfilip embed``); a missing file is an error naming it. ``training.validate_every``
    scores the model on validate images with ``validate_probe`` (called with the store, the label
    table, report -> label ids, the run's text form and ``validate_images``;
    :class:`medfilip.evaluation.curve.ValidateProbe`, which ``medfilip train`` passes)."""
    if run_name not in cfg.runs:
        raise ValueError(f"run {run_name!r} is not in training.runs ({', '.join(cfg.runs)})")
    if cfg.validate_every is not None and validate_probe is None:
        raise ValueError(f"run {run_name!r}: training.validate_every needs a validate_probe (ValidateProbe)")
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

    data = setup_run_data(
        run_name,
        run,
        cfg,
        env,
        images_dir=images_dir,
        labels_path=labels_path,
        embeddings_path=embeddings_path,
        calibration_path=calibration_path,
    )
    parts = build_run(run_name, run, cfg, data, env, device)

    settings = run_settings(cfg, run_name, run)
    fingerprint = _fingerprint(
        settings,
        env.world_size,
        {
            "images": Path(images_dir) / "index.parquet",
            "labels": Path(labels_path),
            "embeddings": Path(embeddings_path) if embeddings_path and data.vectors is not None else None,
            "calibration": _calibration_file(embeddings_path, calibration_path) if data.vectors is not None else None,
        },
    )
    session = _Session(
        run_name,
        cfg,
        env,
        device,
        precision,
        data,
        parts,
        out_dir,
        fingerprint,
        progress=progress,
        stop_after_steps=stop_after_steps,
        validate_probe=validate_probe,
    )
    state = load_checkpoint(session.checkpoint_path, fingerprint) if resume else None
    if state is not None:
        session.resume(state)
    session.start()
    while not session.done:
        session.train_epoch()
    session.bar.close()
    seconds = time.perf_counter() - session.started
    rate = session.images_seen / seconds if seconds > 0 else 0.0
    step, rows = session.step, session.rows
    finished = not session.stopped or step >= session.total_steps
    final_loss = rows[-1]["loss"] if rows else float("nan")

    if finished and env.is_main:
        session.checkpoint()
        save_trained(parts.model, out_dir, extra={"run": settings["run"], "steps": step})
        facts = {
            "steps": step,
            "epochs": cfg.epochs,
            "steps_per_epoch": session.steps_per_epoch,
            "n_images": len(data.positions),
            "n_dropped": data.n_dropped,
            "n_labels": len(data.labels),
            "image_size": data.store.size,
            "device": str(device),
            "precision": precision,
            "world_size": env.world_size,
            "seconds_this_session": round(seconds, 2),
            "images_per_s": round(rate, 2),
            "final_loss": final_loss,
            **parts.sizes,
        }
        if parts.text_cache is not None:
            facts["text_cache"] = parts.text_cache.describe()
            log.info("run %s: text_cache %s", run_name, parts.text_cache.describe())
        _write_run_config(out_dir / RUN_CONFIG, settings, facts)
        log.info("run %s: %d steps, final loss %.4f, %.1f images/s; %s", run_name, step, final_loss, rate, out_dir)
    barrier(env)
    if owns_group:
        shutdown_distributed()
    return TrainResult(
        out_dir,
        step,
        session.epoch,
        finished,
        seconds,
        rate,
        final_loss,
        len(data.positions),
        data.n_dropped,
        parts.model if return_model else None,
    )
