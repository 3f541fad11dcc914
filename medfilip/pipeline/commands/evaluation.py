"""``medfilip zeroshot``: the zero-shot table of trained runs on evaluation stores."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medfilip.names import ClassTextVariant
from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


def cmd_zeroshot(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.report import write_figure, write_per_class, write_table
    from medfilip.evaluation.sets import load_eval_sets, stated_severities
    from medfilip.evaluation.zeroshot import evaluate_runs, run_eval_text_of_folder
    from medfilip.extraction.vocabulary import load_severity_scale
    from medfilip.knowledge import load_knowledge

    ev = cfg.evaluation
    # a file stands for its folder: the workflow passes model.pt and index.parquet (its inputs)
    runs = [p.parent if p.is_file() else p for p in args.runs]
    # the severities the reports state, on the one scale (corpus_severity; None: reported as skipped)
    stated = (
        stated_severities(args.labels, load_severity_scale(cfg.extraction.rules.vocabulary_dir))
        if args.labels is not None
        else None
    )
    sets = load_eval_sets([p.parent if p.is_file() else p for p in args.sets], ev, stated)
    if not sets:
        raise ValueError(f"no evaluation set with test images in {', '.join(map(str, args.sets))}")
    categories = sorted({c for s in sets for c in s.categories})
    # each run's own evaluation text (training.runs.*.eval_text, else its label variant's), beside the common one
    own_texts = [run_eval_text_of_folder(r, cfg.training.runs) for r in runs]
    explained = ClassTextVariant.triplet_explanation.value
    knowledge_path = args.knowledge or cfg.knowledge.path
    knowledge = load_knowledge(
        knowledge_path, required=categories if explained in {ev.text_variant, *own_texts} else ()
    )
    for s in sets:
        log.info(
            "set %s: %s, %d classes, %d validate / %d test images",
            s.name,
            s.kind,
            len(s.classes),
            s.n("validate"),
            s.n("test"),
        )
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
        bootstrap=ev.bootstrap,
        image_embeddings=args.image_embeddings,
        own_texts=own_texts,
    )
    rows = write_table(result.summaries, args.out, ev.reference_run)
    if args.per_class:
        write_per_class(result.per_class, args.per_class)
    if args.figure:
        write_figure(result.summaries, args.figure)
    for row in rows:
        print(f"{row['run']}: mean AUC {row['mean_auc']} over {len(sets)} sets")
    print(f"-> {args.out}")
    return 0


def cmd_embed_images(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    import torch

    from medfilip.devices import resolve_device
    from medfilip.evaluation.zeroshot import write_image_embeddings
    from medfilip.images.store import ImageStore
    from medfilip.training.model import load_trained

    if args.threads:
        torch.set_num_threads(args.threads)
    ev = cfg.evaluation
    run = args.run.parent if args.run.is_file() else args.run
    if not (run / "model.pt").is_file():
        raise FileNotFoundError(f"trained model not found: {run / 'model.pt'} (train the run first)")
    device = resolve_device(ev.device, "evaluation.device")
    stores = [ImageStore.open(p.parent if p.is_file() else p) for p in args.stores]
    model = load_trained(run, device)
    out = write_image_embeddings(
        model, stores, args.out, batch_size=ev.batch_size, device=device, progress=not args.no_progress
    )
    print(f"{run.name}: held-out images of {len(stores)} stores -> {out}")
    return 0


def _runs_and_corpus(args: argparse.Namespace, cfg: PipelineConfig):
    from medfilip.images.store import ImageStore
    from medfilip.knowledge import load_knowledge

    runs = [p.parent if p.is_file() else p for p in args.runs]
    missing = [str(r / "model.pt") for r in runs if not (r / "model.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"trained model not found: {', '.join(missing)} (train the run first)")
    if args.image_embeddings is not None and len(args.image_embeddings) != len(runs):
        raise ValueError(f"--image-embeddings: {len(args.image_embeddings)} files for {len(runs)} runs")
    corpus = args.corpus.parent if args.corpus.is_file() else args.corpus
    store = ImageStore.open(corpus)
    knowledge = load_knowledge(args.knowledge or cfg.knowledge.path)
    return runs, store, knowledge


def cmd_retrieval(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.retrieval import evaluate_retrieval, write_table
    from medfilip.evaluation.zeroshot import run_eval_text_of_folder

    runs, store, knowledge = _runs_and_corpus(args, cfg)
    ev = cfg.evaluation
    rows = evaluate_retrieval(
        runs,
        store,
        knowledge.explanation,
        image_embeddings=args.image_embeddings,
        max_images=ev.retrieval.max_images,
        ks=ev.retrieval.ks,
        text_variant=ev.text_variant,
        baseline_prompt=ev.retrieval.baseline_prompt,
        own_texts=[run_eval_text_of_folder(r, cfg.training.runs) for r in runs],
        bootstrap=ev.bootstrap,
        reference=ev.reference_run,
        batch_size=ev.batch_size,
        device=ev.device,
        progress=not args.no_progress,
    )
    write_table(rows, args.out)
    print(f"retrieval: {rows[0].get('n_images', 0)} images, {len(runs)} runs -> {args.out}")
    return 0


def cmd_case_study(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.case_study import case_study_rows, write_case_study

    runs, store, knowledge = _runs_and_corpus(args, cfg)
    ev = cfg.evaluation
    rows = case_study_rows(
        runs,
        store,
        knowledge.explanation,
        n_images=ev.case_study.n_images,
        baseline_prompt=ev.retrieval.baseline_prompt,
        device=ev.device,
        image_embeddings=args.image_embeddings,
    )
    write_case_study(rows, store, args.figure, args.table)
    print(f"case study: {len({r['image_id'] for r in rows})} images, {len(runs)} runs -> {args.figure}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "zeroshot", help="zero-shot AUC / F1 / accuracy of trained runs on evaluation stores (CSV + figure)"
    )
    s.add_argument(
        "--runs", type=Path, nargs="+", required=True, help="run folders (results/models/<run>) or their model.pt"
    )
    s.add_argument(
        "--sets",
        type=Path,
        nargs="+",
        required=True,
        help="image store folders (results/images/<dataset>) or their index.parquet; the corpus store gives "
        "the corpus_* sets",
    )
    s.add_argument("--out", type=Path, default=Path(paths.ZEROSHOT_TABLE))
    s.add_argument("--per-class", type=Path, default=None, help="long-form per-class CSV")
    s.add_argument("--figure", type=Path, default=None, help="grouped bar chart of mean AUC (PNG)")
    s.add_argument("--knowledge", type=Path, default=None, help="IKI dictionary (default: knowledge.path)")
    s.add_argument(
        "--image-embeddings",
        type=Path,
        nargs="+",
        default=None,
        help="each run's stored image embeddings (medfilip embed-images), in the order of --runs",
    )
    s.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels.parquet: the severities the reports state, for corpus_severity (without it the set is "
        "reported as skipped)",
    )
    s.set_defaults(func=cmd_zeroshot)

    s = sub.add_parser(
        "embed-images", help="encode the held-out images of evaluation stores once with a trained run (.npz)"
    )
    s.add_argument("--run", type=Path, required=True, help="run folder (results/models/<run>) or its model.pt")
    s.add_argument("--stores", type=Path, nargs="+", required=True, help="image store folders or their index.parquet")
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_embed_images)

    for name, func, helptext in (
        ("retrieval", cmd_retrieval, "image-text retrieval P@K / R@K of trained runs on held-out corpus images (CSV)"),
        ("case-study", cmd_case_study, "cosine similarity of a few test images and three texts of their finding (PNG)"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument(
            "--runs", type=Path, nargs="+", required=True, help="run folders (results/models/<run>) or their model.pt"
        )
        s.add_argument(
            "--corpus", type=Path, required=True, help="corpus image store (results/images/corpus) or its index.parquet"
        )
        s.add_argument("--knowledge", type=Path, default=None, help="IKI dictionary (default: knowledge.path)")
        s.add_argument(
            "--image-embeddings",
            type=Path,
            nargs="+",
            default=None,
            help="each run's stored image embeddings (medfilip embed-images), in the order of --runs",
        )
        if name == "retrieval":
            s.add_argument("--out", type=Path, default=Path(paths.RETRIEVAL_TABLE))
        else:
            s.add_argument("--figure", type=Path, default=Path(paths.CASE_STUDY_FIGURE))
            s.add_argument("--table", type=Path, default=Path(paths.CASE_STUDY_TABLE))
        s.set_defaults(func=func)
