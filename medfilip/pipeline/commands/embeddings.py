"""``medfilip embed`` (labels -> E_sim vectors through the cache) and ``medfilip ssm-heatmap``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfilip.names import LabelVariant, values
from medfilip.pipeline import paths
from medfilip.pipeline.config import PipelineConfig


def _label_texts(labels_path: Path, variants: list[str] | None) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(labels_path, columns=["variant", "label"])
    if variants:
        table = table.filter(pc.is_in(table["variant"], value_set=pa.array(variants)))
    texts = table.column("label").to_pylist()
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{labels_path}: row {bad[0]}: field 'label' is null")
    return texts


def _masked_forms(labels_path: Path, variants: list[str] | None) -> list[str]:
    """Every masked form (severity, location, explanation each kept or dropped) of the labels of the
    masked variants among ``variants`` (all when None): the texts a run with masked_targets entailment
    is matched by."""
    import pyarrow.parquet as pq

    from medfilip.training.data import MASKABLE_VARIANTS, TextTable, read_label_table

    present = set(pq.read_table(labels_path, columns=["variant"]).column("variant").to_pylist())
    out: list[str] = []
    for variant in sorted(present & set(variants or present) & set(MASKABLE_VARIANTS)):
        labels, _ = read_label_table(labels_path, variant)
        out += TextTable.build(labels).texts
    return out


def cmd_embed(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    import torch

    from medfilip.embeddings.calibration import calibration_path, write_calibration
    from medfilip.embeddings.model import model_slug
    from medfilip.embeddings.store import embed_texts, write_label_embeddings

    emb = cfg.embeddings
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = _label_texts(args.labels, args.variants)
    if str(cfg.training.masked_targets) == "entailment":
        forms = _masked_forms(args.labels, args.variants)
        print(f"training.masked_targets entailment: {len(set(forms) - set(texts))} masked forms of labels added")
        texts += forms
    cache = args.cache or Path(paths.EMBEDDINGS_CACHE_DIR.format(slug=model_slug(emb.model)))
    summary = embed_texts(
        texts,
        emb.model,
        cache,
        batch_size=emb.batch_size,
        max_length=emb.max_length,
        device=emb.device,
        progress=not args.no_progress,
    )
    table = write_label_embeddings(texts, emb.model, cache, args.out)
    print(
        f"{summary.n_unique} unique labels: {summary.n_unique - summary.n_new} cached, {summary.n_new} embedded "
        f"in {summary.seconds:.1f}s (dim {summary.dim}) -> {args.out} ({table.num_rows} vectors)"
    )
    calibrations = _calibrate(args.labels, args.out, args.variants, emb.calibration, args.reports)
    out = args.calibration or calibration_path(args.out)
    write_calibration(calibrations, out)
    print(
        "SSM calibration (label statistics only): "
        + "; ".join(f"{v} {c.describe()}" for v, c in calibrations.items())
        + f" -> {out}"
    )
    return 0


def _calibrate(
    labels: Path, embeddings: Path, variants: list[str] | None, settings, report_shards: list[Path] | None = None
) -> dict:
    import pyarrow.parquet as pq

    from medfilip.embeddings.calibration import calibrate_labels, train_report_ids

    reports = None
    if settings.split == "train":
        if not report_shards:
            raise ValueError("embeddings.calibration.split is 'train': pass the report shards (--reports)")
        reports = train_report_ids(report_shards)
    if not variants:
        variants = sorted(set(pq.read_table(labels, columns=["variant"]).column("variant").to_pylist()))
    return calibrate_labels(
        labels,
        embeddings,
        variants,
        str(settings.method),
        percentile=settings.percentile,
        share=settings.share,
        seed=settings.seed,
        reports=reports,
    )


def cmd_calibrate(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.embeddings.calibration import calibration_path, write_calibration

    calibrations = _calibrate(args.labels, args.embeddings, args.variants, cfg.embeddings.calibration, args.reports)
    out = args.out or calibration_path(args.embeddings)
    write_calibration(calibrations, out)
    for variant, c in calibrations.items():
        print(f"{variant}: {c.describe()}  {c.stats}")
    print(f"-> {out}")
    return 0


def cmd_ssm_stats(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    """The issue-11 table: what the SSM target of a batch asks of the model, raw and calibrated."""
    import numpy as np

    from medfilip.embeddings.calibration import (
        batch_statistics,
        compute_calibration,
        read_vocabulary,
    )
    from medfilip.embeddings.store import embed_texts, load_embeddings, write_label_embeddings
    from medfilip.training.ssm_stats import masked_batch_statistics, masked_batch_texts

    emb = cfg.embeddings
    vocab = read_vocabulary(args.labels, args.variant)
    # masking on (entailment targets) for the variants training masks, at training.mask_probability
    p_mask = cfg.training.mask_probability if args.mask_probability is None else args.mask_probability
    masked = masked_batch_texts(args.labels, args.variant) if args.variant in MASKED_VARIANTS and p_mask > 0 else None
    rows = []
    for model in [None if m in ("minilm", "null") else m for m in args.models] if args.models else [emb.model]:
        if args.embeddings and len(args.models or [None]) == 1:
            path = args.embeddings
        else:
            from medfilip.embeddings.model import model_slug

            cache = Path(paths.EMBEDDINGS_CACHE_DIR.format(slug=model_slug(model)))
            embed_texts(
                vocab.texts,
                model,
                cache,
                batch_size=emb.batch_size,
                max_length=emb.max_length,
                device=emb.device,
                progress=False,
            )
            path = Path(args.workdir) / f"{model_slug(model)}.{args.variant}.parquet"
            write_label_embeddings(vocab.texts, model, cache, path)
        vectors = np.asarray(load_embeddings(path, vocab.texts), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if masked is not None:  # every masked form of the labels, through the model's cache (new strings only)
            from medfilip.embeddings.model import model_slug

            forms_cache = Path(paths.EMBEDDINGS_CACHE_DIR.format(slug=model_slug(model)))
            embed_texts(
                masked[2],
                model,
                forms_cache,
                batch_size=emb.batch_size,
                max_length=emb.max_length,
                device=emb.device,
                progress=False,
            )
            forms = Path(args.workdir) / f"{model_slug(model)}.{args.variant}.masked.parquet"
            write_label_embeddings(masked[2], model, forms_cache, forms)
            m = np.asarray(load_embeddings(forms, masked[2]), dtype=np.float64)
            m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
            masked_vectors = dict(zip(masked[2], m))
        name = Path(model).name if model else "all-MiniLM-L6-v2"
        for method in ("none", "floor", "temperature"):
            c = compute_calibration(
                vectors,
                vocab,
                method,
                percentile=emb.calibration.percentile,
                share=emb.calibration.share,
                seed=emb.calibration.seed,
            )
            stats = batch_statistics(
                vectors, vocab, c, batch_size=args.batch_size, n_batches=args.n_batches, seed=args.seed
            )
            rows.append({"model": name, "calibration": c.describe(), "texts": "full labels", **stats})
            if masked is not None:  # masking on, entailment targets: what training.masked_targets entailment asks
                stats = masked_batch_statistics(
                    masked_vectors,
                    masked[0],
                    masked[1],
                    c,
                    mask_probability=p_mask,
                    batch_size=args.batch_size,
                    n_batches=args.n_batches,
                    seed=args.seed,
                )
                rows.append({"model": name, "calibration": c.describe(), "texts": f"masked p={p_mask:g}", **stats})
    header = [
        "model",
        "calibration",
        "texts",
        "same-category median",
        "cross-category median [5-95 pct]",
        "share on own categories",
        "effective texts (of ~M)",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r['model']} | {r['calibration']} | {r['texts']} | {r['same_category_median']:.3f} | "
            f"{r['cross_category_median']:.3f} [{r['cross_category_p5']:.2f}-{r['cross_category_p95']:.2f}] | "
            f"{r['own_category_share']:.2f} | {r['effective_texts']:.1f} (of {r['texts_per_row']:.0f}) |"
        )
    return 0


def cmd_ssm_heatmap(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq
    import torch

    from medfilip.embeddings.calibration import calibration_path, read_calibration
    from medfilip.embeddings.heatmap import (
        draw_ssm_heatmap,
        pick_variant,
        select_batch,
        train_report_ids,
    )
    from medfilip.embeddings.store import load_embeddings
    from medfilip.ssm import Calibration, batch_texts, ssm_target

    labels = pq.read_table(args.labels)
    variant = pick_variant(labels, args.variant)
    batch = select_batch(labels, variant, n_images=args.n_images, candidates=train_report_ids(args.images))
    vectors = torch.from_numpy(load_embeddings(args.embeddings, batch.texts))
    names = {c: i for i, c in enumerate(dict.fromkeys(batch.categories))}
    categories = torch.tensor([names[c] for c in batch.categories])
    negated = torch.tensor(batch.negated, dtype=torch.bool)
    text_ids, positives = batch_texts(batch.image_label_ids)
    cal_file = args.calibration or calibration_path(args.embeddings)
    calibration = read_calibration(cal_file, variant)  # a missing file is an error naming it

    def target_of(c: Calibration | None) -> torch.Tensor:
        return ssm_target(
            batch.image_label_ids,
            text_ids,
            vectors,
            categories,
            variant=args.ssm_variant,
            negated=negated,
            calibration=c,
            positives=positives,
        )

    raw = target_of(None)
    panels = [(raw.numpy(), "raw cosines (paper eqs. 4-5)")]
    if calibration.method != "none":
        panels.append((target_of(calibration).numpy(), f"calibrated: {calibration.describe()} (what training uses)"))
    title = (
        f"SSM target of one batch: {len(batch.report_ids)} images x {len(text_ids)} label texts "
        f"({variant} labels, E_sim {args.embeddings.stem}, {args.ssm_variant})"
    )
    draw_ssm_heatmap(panels, batch, text_ids.tolist(), positives.numpy(), args.out, title)
    for target, name in panels:
        off = torch.from_numpy(target)[~positives]
        print(f"{name}: off-label target mean {off.mean():.3f}, max {off.max():.3f}")
    print(f"{len(batch.report_ids)} images x {len(text_ids)} texts -> {args.out}")
    return 0


MASKED_VARIANTS = ("triplet", "triplet_explanation")  # the variants training masks
REPORTS_FLAG = "--reports"
REPORTS_HELP = "report shards: their split column, for embeddings.calibration.split: train"


def register(sub) -> None:
    s = sub.add_parser("embed", help="embed every unique label string once with E_sim (cached by model + text)")
    s.add_argument("--labels", type=Path, default=Path(paths.LABELS))
    s.add_argument("--variants", nargs="+", default=None, help="embed only these label variants (default: all)")
    s.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder that outlives the run (default results/cache/embeddings/<model slug>)",
    )
    s.add_argument("--out", type=Path, required=True, help="vectors of exactly the current labels (Parquet)")
    s.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="SSM calibration file (default: beside --out, <stem>.calibration.json)",
    )
    s.add_argument(REPORTS_FLAG, type=Path, nargs="+", default=None, help=REPORTS_HELP)
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("ssm-calibrate", help="(re)compute the SSM calibration of written label embeddings")
    s.add_argument("--labels", type=Path, default=Path(paths.LABELS))
    s.add_argument("--embeddings", type=Path, required=True, help="results/embeddings/<model slug>.parquet")
    s.add_argument("--variants", nargs="+", default=None, help="label variants (default: all in the labels)")
    s.add_argument("--out", type=Path, default=None, help="default: beside --embeddings")
    s.add_argument(REPORTS_FLAG, type=Path, nargs="+", default=None, help=REPORTS_HELP)
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("ssm-stats", help="what a batch's SSM target asks of the model, raw and calibrated")
    s.add_argument("--labels", type=Path, default=Path(paths.LABELS))
    s.add_argument("--variant", default=LabelVariant.triplet_explanation.value, choices=values(LabelVariant))
    s.add_argument("--embeddings", type=Path, default=None, help="written vectors of the configured model")
    s.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="E_sim models to compare: minilm (the shipped default), mpnet, local folders; embeds through the cache",
    )
    s.add_argument("--workdir", type=Path, default=Path(paths.SSM_STATS_DIR))
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--n-batches", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--mask-probability",
        type=float,
        default=None,
        help="masking on, entailment targets: each field dropped with this chance (default training.mask_probability; "
        "0 = full labels only)",
    )
    s.set_defaults(func=cmd_ssm_stats)

    s = sub.add_parser("ssm-heatmap", help="figure: the SSM soft-label target of one training batch")
    s.add_argument("--labels", type=Path, default=Path(paths.LABELS))
    s.add_argument("--embeddings", type=Path, required=True, help="results/embeddings/<model slug>.parquet")
    s.add_argument(
        "--images",
        type=Path,
        default=None,
        help="image store (results/images/corpus): batch its first train reports; default: labels order",
    )
    s.add_argument("--variant", default=None, help="label variant (default: triplet_explanation if present)")
    s.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="SSM calibration (default: <embeddings stem>.calibration.json beside --embeddings)",
    )
    s.add_argument("--ssm-variant", choices=["paper", "same_category"], default="paper")
    s.add_argument("--n-images", type=int, default=16)
    s.add_argument("--out", type=Path, default=Path(paths.SSM_HEATMAP))
    s.set_defaults(func=cmd_ssm_heatmap)
