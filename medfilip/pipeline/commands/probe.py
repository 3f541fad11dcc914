"""``medfilip features`` (frozen features of a run on a store), ``medfilip probe-fit`` (the linear
probes of one run on one dataset), ``medfilip probe-baseline`` (one fine-tuned baseline on one
dataset) and ``medfilip linear-probe`` (the Table II CSVs and figure from their scores)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medfilip.names import SPLITS
from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


def _folder(p: Path) -> Path:
    return p.parent if p.suffix else p


def _device(cfg) -> str:
    from medfilip.devices import resolve_device

    return resolve_device(cfg.evaluation.linear_probe.device, "evaluation.linear_probe.device")


def _threads(threads: int) -> None:
    """torch CPU threads: --threads, or (0, the default) every available core."""
    import os

    import torch

    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))


def cmd_features(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.features import extract_features

    _threads(args.threads)
    out = extract_features(
        _folder(args.run),
        _folder(args.store),
        args.out,
        splits=args.splits,
        batch_size=cfg.evaluation.linear_probe.batch_size,
        device=_device(cfg),
    )
    for split, f in out.items():
        print(f"{split}: {f.n} x {f.vectors.shape[1]} features ({f.meta['seconds']}s) -> {args.out}/{split}.npy")
    return 0


def cmd_probe_fit(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.features import load_features
    from medfilip.evaluation.probe.fit import probe_data_from_store, probe_fits
    from medfilip.evaluation.probe.scores import ProbeInputError
    from medfilip.images.store import ImageStore

    p = cfg.evaluation.linear_probe
    store = ImageStore.open(_folder(args.store))
    data = probe_data_from_store(store)
    feats = {}
    for split in SPLITS:
        f = load_features(args.features, split, model_file=args.model)
        if list(map(int, f.rows)) != list(map(int, data.rows[split])):
            raise ProbeInputError(
                f"{args.features}/{split}.json: features of other {split} images than the store "
                f"{store.root} holds (re-run features)"
            )
        feats[split] = f.vectors
    run = args.name or Path(args.features).parent.name
    scores = probe_fits(
        feats, data, name=run, fractions=p.fractions, seeds=p.seeds, c_grid=p.c_grid, max_iter=p.max_iter
    )
    scores.save(args.out)
    print(f"{run}/{data.dataset}: {len(scores.fits)} fits {scores.note} -> {args.out}")
    return 0


def cmd_probe_baseline(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.probe.baselines import train_baseline
    from medfilip.evaluation.probe.fit import probe_data_from_store
    from medfilip.images.store import ImageStore
    from medfilip.pipeline.workflows.probe import image_arch, imagenet_weights

    p = cfg.evaluation.linear_probe
    _threads(args.threads)
    store = ImageStore.open(_folder(args.store))
    data = probe_data_from_store(store)
    scores = train_baseline(
        args.name,
        store,
        data,
        arch=image_arch(cfg),
        settings=p.baselines,
        fractions=p.fractions,
        seeds=p.seeds,
        weights=imagenet_weights(cfg),
        device=_device(cfg),
    )
    scores.save(args.out)
    print(f"{args.name}/{data.dataset}: {len(scores.fits)} fits {scores.note} -> {args.out}")
    return 0


def cmd_linear_probe(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.probe.scores import ProbeScores
    from medfilip.evaluation.probe.table import build_tables, write_outputs
    from medfilip.pipeline.workflows.probe import dataset_skips, runs, skipped_baselines

    scores = [ProbeScores.load(p) for p in args.scores or []]
    skips = [
        {
            "run": name,
            "kind": "baseline",
            "note": "skipped: no weights configured (evaluation.linear_probe.baselines."
            "imagenet_weights or training.model.image_weights: a local torchvision ImageNet state dict)",
        }
        for name in skipped_baselines(cfg)
    ]
    dataset_notes = list(dataset_skips(cfg).values())
    scored = {s.name for s in scores}
    skips = [
        {"run": r, "kind": "pretrained", "note": " | ".join(dataset_notes) or "no probe scores"}
        for r in runs(cfg)
        if r not in scored
    ] + skips
    table, per_class, long = build_tables(
        scores, bootstrap=cfg.evaluation.bootstrap, skip_rows=skips, reference=cfg.evaluation.reference_run
    )
    for row in table:
        if row.get("run") in scored:
            row["note"] = " | ".join([*dataset_notes, row["note"]] if row["note"] else dataset_notes)
    write_outputs(table, per_class, long, args.out, args.per_class, args.figure)
    for row in table:
        aucs = {k: v for k, v in row.items() if k.endswith("_auc") and not k.startswith("delta")}
        print(
            f"{row['run']}: "
            + ", ".join(f"{k} {v}" for k, v in aucs.items())
            + (f" [{row['note']}]" if row["note"] else "")
        )
    print(f"-> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("features", help="frozen image-encoder features of a run on a store, per split (.npy + .json)")
    s.add_argument("--run", type=Path, required=True, help="run folder (results/models/<run>) or its model.pt")
    s.add_argument("--store", type=Path, required=True, help="image store folder or its index.parquet")
    s.add_argument("--out", type=Path, required=True, help="folder for <split>.npy + <split>.json")
    s.add_argument("--splits", nargs="+", default=list(SPLITS))
    s.set_defaults(func=cmd_features)

    s = sub.add_parser("probe-fit", help="logistic-regression probes of one run's cached features on one dataset")
    s.add_argument("--features", type=Path, required=True, help="results/features/<run>/<dataset>")
    s.add_argument("--store", type=Path, required=True, help="image store folder or its index.parquet (labels)")
    s.add_argument("--model", type=Path, default=None, help="the run's model.pt: features are checked against it")
    s.add_argument("--name", default=None, help="run name (default: the features folder's parent)")
    s.add_argument("--out", type=Path, required=True, help="scores.npz (+ scores.json beside it)")
    s.set_defaults(func=cmd_probe_fit)

    s = sub.add_parser(
        "probe-baseline", help="fine-tune one Table II baseline on the probe's train subsets of a dataset"
    )
    s.add_argument("--name", required=True, help="<arch>_random, <arch>_imagenet or convnext_tiny_random")
    s.add_argument("--store", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True, help="scores.npz (+ scores.json beside it)")
    s.set_defaults(func=cmd_probe_baseline)

    s = sub.add_parser("linear-probe", help="the linear-probe table (Table II), per-class table and figure from scores")
    s.add_argument("--scores", type=Path, nargs="*", default=[], help="scores.npz files of runs and baselines")
    s.add_argument("--out", type=Path, default=Path(paths.LINEAR_PROBE_TABLE))
    s.add_argument("--per-class", type=Path, default=None)
    s.add_argument("--figure", type=Path, default=None)
    s.set_defaults(func=cmd_linear_probe)
