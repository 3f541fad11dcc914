"""``medfilip zeroshot``: the zero-shot table of trained runs on evaluation stores."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from medfilip.config import load_config
    from medfilip.evaluation.report import write_figure, write_per_class, write_table
    from medfilip.evaluation.sets import load_eval_sets
    from medfilip.evaluation.zeroshot import evaluate_runs
    from medfilip.knowledge import load_knowledge

    cfg = load_config(args.config)
    ev = cfg.evaluation
    # a file stands for its folder: the workflow passes model.pt and index.parquet (its inputs)
    runs = [p.parent if p.is_file() else p for p in args.runs]
    sets = load_eval_sets([p.parent if p.is_file() else p for p in args.sets], ev)
    if not sets:
        raise ValueError(f"no evaluation set with test images in {', '.join(map(str, args.sets))}")
    categories = sorted({c for s in sets for c in s.categories})
    knowledge_path = args.knowledge or cfg.knowledge.path
    knowledge = load_knowledge(knowledge_path, required=categories if ev.text_variant == "triplet_explanation" else ())
    for s in sets:
        log.info("set %s: %s, %d classes, %d validate / %d test images", s.name, s.kind, len(s.classes), s.n("validate"), s.n("test"))
    result = evaluate_runs(
        runs,
        sets,
        knowledge.explanation,
        device=ev.device,
        text_variant=ev.text_variant,
        single_label_score=ev.single_label_score,
        protocols=list(ev.protocols),
        batch_size=ev.batch_size,
        progress=not args.no_progress,
        n_resamples=ev.bootstrap.n_resamples,
        seed=ev.bootstrap.seed,
    )
    rows = write_table(result.summaries, args.out)
    if args.per_class:
        write_per_class(result.per_class, args.per_class)
    if args.figure:
        write_figure(result.summaries, args.figure)
    for row in rows:
        print(f"{row['run']}: mean AUC {row['mean_auc']} over {len(sets)} sets")
    print(f"-> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("zeroshot", help="zero-shot AUC / F1 / accuracy of trained runs on evaluation stores (CSV + figure)")
    s.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders (results/models/<run>) or their model.pt")
    s.add_argument("--sets", type=Path, nargs="+", required=True,
                   help="image store folders (results/images/<dataset>) or their index.parquet; the corpus store gives "
                        "the corpus_* sets")
    s.add_argument("--out", type=Path, default=Path("results/tables/zeroshot.csv"))
    s.add_argument("--per-class", type=Path, default=None, help="long-form per-class CSV")
    s.add_argument("--figure", type=Path, default=None, help="grouped bar chart of mean AUC (PNG)")
    s.add_argument("--knowledge", type=Path, default=None, help="IKI dictionary (default: knowledge.path)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_zeroshot)
