"""``medfilip train`` (one run of training.runs) and ``medfilip train-curves`` (their loss curves)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig


def cmd_train(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.curve import ValidateProbe
    from medfilip.training.train import train_run

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = train_run(
        args.run,
        cfg.training,
        images_dir=args.images,
        labels_path=args.labels,
        embeddings_path=args.embeddings,
        calibration_path=args.calibration,
        out_dir=args.out,
        resume=args.resume,
        progress=not args.no_progress,
        validate_probe=ValidateProbe,
    )
    if result.finished:
        print(
            f"run {args.run}: {result.steps} steps over {result.n_images} images, final loss {result.final_loss:.4f}, "
            f"{result.images_per_s:.1f} images/s -> {result.run_dir}"
        )
    return 0


def cmd_train_curves(args: argparse.Namespace) -> int:
    from medfilip.training.curves import plot_train_curves

    out = plot_train_curves(args.runs, args.out, window=args.window)
    print(f"training curves of {len(args.runs)} run(s) -> {out}")
    return 0


def cmd_ablation(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.ablation import write_ablation

    rows = write_ablation(args.zeroshot, cfg.training.runs, args.out, cfg.evaluation.reference_run)
    have = [r for r in rows if not r["note"]]
    print(f"ablation (Table VI shape): {len(have)} of {len(rows)} rows have a trained run -> {args.out}")
    for r in rows:
        print(f"  {r['row']:<18} run {r['run'] or '-':<12} downstream mean AUC {r.get('downstream_mean_auc') or '-'}")
    return 0


def cmd_seeds(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.seeds import seeds_column, write_seed_summary

    rows = write_seed_summary(
        args.zeroshot,
        cfg.training.runs,
        args.out,
        default_seed=cfg.training.seed,
        endpoint=cfg.evaluation.primary_endpoint if cfg.evaluation.primary_endpoint.enabled else None,
        reference_run=cfg.evaluation.reference_run,
    )
    metric = "downstream_mean_auc"
    delta = f"delta_{metric}_vs_{cfg.evaluation.reference_run}"

    def num(x) -> str:
        return "-" if x == "" else f"{x:+.4f}"

    for r in rows:
        if r["method"] == "primary_endpoint":
            print(
                f"  primary endpoint {r['endpoint_metric']}, {r['endpoint_contrast']}: {num(r['endpoint_difference'])} "
                f"[{num(r['endpoint_low'])}, {num(r['endpoint_high'])}] over {r['n_seeds']} seed(s), p "
                f"{r['endpoint_p'] or '-'}; seeds for {r['endpoint_difference_that_matters']:g} at "
                f"{r['endpoint_power']:g} power: {r['endpoint_seeds_needed'] or '-'}"
            )
            continue
        line = f"  {r['method']:<12} {r['n_seeds']} seed(s)  downstream mean AUC {r[metric]}"
        if r[delta] != "":
            line += f"  vs medfilip {num(r[delta])} [{num(r[delta + '_low'])}, {num(r[delta + '_high'])}]"
            line += f"  seeds for 0.01 at 80 % power: {r[seeds_column(metric)] or '-'}"
        print(line)
    print(f"-> {args.out}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("train", help="pretrain the dual encoder for one run of training.runs")
    s.add_argument("--run", required=True, help="run name (a key of training.runs)")
    s.add_argument("--images", type=Path, default=Path(paths.CORPUS_STORE_DIR), help="corpus image store")
    s.add_argument("--labels", type=Path, default=Path(paths.LABELS))
    s.add_argument("--embeddings", type=Path, default=None, help="label embeddings (needed by SSM targets)")
    s.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="SSM calibration (default: <embeddings stem>.calibration.json beside --embeddings)",
    )
    s.add_argument("--out", type=Path, required=True, help="run folder (results/models/RUN)")
    s.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the run folder's checkpoint.pt when it was written under the same settings",
    )
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("ablation", help="the cumulative ablation table (paper Table VI) from the zero-shot table")
    s.add_argument("--zeroshot", type=Path, default=Path(paths.ZEROSHOT_TABLE))
    s.add_argument("--out", type=Path, default=Path(paths.ABLATION_TABLE))
    s.set_defaults(func=cmd_ablation)

    s = sub.add_parser(
        "seeds-summary", help="means over seeds with Student-t intervals and paired differences (per method)"
    )
    s.add_argument("--zeroshot", type=Path, default=Path(paths.ZEROSHOT_TABLE))
    s.add_argument("--out", type=Path, default=Path(paths.SEEDS_TABLE))
    s.set_defaults(func=cmd_seeds)

    s = sub.add_parser("train-curves", help="loss curves of trained runs (PNG)")
    s.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders (results/models/*)")
    s.add_argument("--out", type=Path, default=Path(paths.TRAIN_CURVES))
    s.add_argument("--window", type=int, default=10, help="moving-average window in steps")
    s.set_defaults(func=cmd_train_curves)
