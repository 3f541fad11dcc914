"""``medfilip embed`` (labels -> E_sim vectors through the cache) and ``medfilip ssm-heatmap``."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def cmd_embed(args: argparse.Namespace) -> int:
    import torch

    from medfilip.config import load_config
    from medfilip.embeddings.model import model_slug
    from medfilip.embeddings.store import embed_texts, write_label_embeddings

    cfg = load_config(args.config).embeddings
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = _label_texts(args.labels, args.variants)
    cache = args.cache or Path("results/cache/embeddings") / model_slug(cfg.model)
    summary = embed_texts(texts, cfg.model, cache, batch_size=cfg.batch_size, max_length=cfg.max_length,
                          device=cfg.device, progress=not args.no_progress)
    table = write_label_embeddings(texts, cfg.model, cache, args.out)
    print(f"{summary.n_unique} unique labels: {summary.n_unique - summary.n_new} cached, {summary.n_new} embedded "
          f"in {summary.seconds:.1f}s (dim {summary.dim}) -> {args.out} ({table.num_rows} vectors)")
    return 0


def cmd_ssm_heatmap(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq
    import torch

    from medfilip.embeddings.heatmap import (
        draw_ssm_heatmap,
        pick_variant,
        select_batch,
        train_report_ids,
    )
    from medfilip.embeddings.store import load_embeddings
    from medfilip.ssm import batch_texts, ssm_target

    labels = pq.read_table(args.labels)
    variant = pick_variant(labels, args.variant)
    batch = select_batch(labels, variant, n_images=args.n_images, candidates=train_report_ids(args.images))
    vectors = torch.from_numpy(load_embeddings(args.embeddings, batch.texts))
    names = {c: i for i, c in enumerate(dict.fromkeys(batch.categories))}
    categories = torch.tensor([names[c] for c in batch.categories])
    text_ids, positives = batch_texts(batch.image_label_ids)
    target = ssm_target(batch.image_label_ids, text_ids, vectors, categories, variant=args.ssm_variant)
    title = (f"SSM target of one batch: {len(batch.report_ids)} images x {len(text_ids)} label texts "
             f"({variant} labels, E_sim {args.embeddings.stem}, {args.ssm_variant})")
    draw_ssm_heatmap(target.numpy(), batch, text_ids.tolist(), positives.numpy(), args.out, title)
    off = target[~positives]
    print(f"{len(batch.report_ids)} images x {len(text_ids)} texts; off-label similarity mean {off.mean():.3f}, "
          f"max {off.max():.3f} -> {args.out}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("embed", help="embed every unique label string once with E_sim (cached by model + text)")
    s.add_argument("--labels", type=Path, default=Path("results/labels.parquet"))
    s.add_argument("--variants", nargs="+", default=None, help="embed only these label variants (default: all)")
    s.add_argument("--cache", type=Path, default=None,
                   help="cache folder that outlives the run (default results/cache/embeddings/<model slug>)")
    s.add_argument("--out", type=Path, required=True, help="vectors of exactly the current labels (Parquet)")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("ssm-heatmap", help="figure: the SSM soft-label target of one training batch")
    s.add_argument("--labels", type=Path, default=Path("results/labels.parquet"))
    s.add_argument("--embeddings", type=Path, required=True, help="results/embeddings/<model slug>.parquet")
    s.add_argument("--images", type=Path, default=None,
                   help="image store (results/images/corpus): batch its first train reports; default: labels order")
    s.add_argument("--variant", default=None, help="label variant (default: triplet_explanation if present)")
    s.add_argument("--ssm-variant", choices=["paper", "same_category"], default="paper")
    s.add_argument("--n-images", type=int, default=16)
    s.add_argument("--out", type=Path, default=Path("results/figures/ssm_heatmap.png"))
    s.set_defaults(func=cmd_ssm_heatmap)
