"""``medfilip segmentation`` (one run's UNet, or the random-init baseline) and ``medfilip
segmentation-table`` (Table IV + long form + figure from every run's outputs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig


def _folder(path: Path) -> Path:
    """A file stands for its folder: the workflow passes model.pt, index.parquet, summary.json (its inputs)."""
    return path.parent if path.suffix else path


def cmd_segmentation(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.segmentation.finetune import BASELINE
    from medfilip.evaluation.segmentation.run import run_segmentation

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if (args.model is None) == (not args.baseline):
        raise ValueError("give either --model RUN_DIR (a pretrained run) or --baseline (random-init encoder)")
    name = args.run or (BASELINE if args.baseline else _folder(args.model).name)
    summary_file = run_segmentation(
        name, _folder(args.store), args.out_dir, cfg, run_dir=None if args.baseline else _folder(args.model)
    )
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    for rec in summary["fractions"]:
        if rec["status"] == "ok":
            print(
                f"{name} {rec['fraction']:g}: {rec['n_train']} train images, {rec['steps']} steps at "
                f"{rec['train_images_per_s']} images/s; validate Dice {rec['validate_dice']:.4f}"
            )
        else:
            print(f"{name} {rec['fraction']:g}: skipped: {rec['reason']}")
    print(f"-> {args.out_dir} ({summary['wall_seconds']} s)")
    return 0


def cmd_segmentation_table(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.segmentation.table import write_figure, write_tables

    folders = [_folder(p) for p in args.results]
    rows = write_tables(folders, args.out, args.long, cfg)
    if args.figure:
        write_figure(folders, _folder(args.store), args.figure)
    for row in rows:
        cells = [
            f"{k} {row[k]:.3f}"
            for k in row
            if k.startswith(("dice_", "dice_pos_")) and not k.endswith(("_low", "_high")) and isinstance(row[k], float)
        ]
        print(f"{row['run']}: {', '.join(cells) or row.get('note', '')}")
    print(f"-> {args.out}")
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "segmentation", help="fine-tune a UNet on SIIM-ACR with a run's encoder (or random init); Dice on test"
    )
    s.add_argument("--model", type=Path, default=None, help="run folder (results/models/RUN) or its model.pt")
    s.add_argument("--baseline", action="store_true", help="the random-init encoder baseline instead of a run")
    s.add_argument("--run", default=None, help="name in the table (default: the run folder's name, or random_init)")
    s.add_argument(
        "--store", type=Path, default=Path(paths.SEGMENTATION_STORE_DIR), help="SIIM image store or its index.parquet"
    )
    s.add_argument("--out-dir", type=Path, required=True, help="folder of scores.parquet, summary.json, examples.npz")
    s.set_defaults(func=cmd_segmentation)

    s = sub.add_parser(
        "segmentation-table", help="the segmentation table (Table IV) and figure from every run's outputs"
    )
    s.add_argument(
        "--results",
        type=Path,
        nargs="+",
        required=True,
        help="folders written by `medfilip segmentation` (or their summary.json); the run named medfilip "
        "is the reference of the paired deltas",
    )
    s.add_argument(
        "--store", type=Path, default=Path(paths.SEGMENTATION_STORE_DIR), help="the SIIM store (images of the figure)"
    )
    s.add_argument("--out", type=Path, default=Path(paths.SEGMENTATION_TABLE))
    s.add_argument("--long", type=Path, default=None, help="one row per run and fraction with the validate choices")
    s.add_argument("--figure", type=Path, default=None, help="image / truth / prediction grid (PNG)")
    s.set_defaults(func=cmd_segmentation_table)
