"""Sub-commands of the real-image rules (workflow/rules/real.smk): real-covid-adult, real-eval,
real-gap, real-notes. Stores are given as name=folder pairs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medfilip.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


def _named(pairs: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected name=folder, got {pair!r}")
        path = Path(path)
        out[name] = path.parent if path.is_file() else path
    return out


def _runs(paths: list[Path]) -> list[Path]:
    return [p.parent if p.is_file() else p for p in paths]


def _sets(stores: dict[str, Path], min_positives: int):
    from medfilip.evaluation.real.tables import named_set
    from medfilip.images.store import ImageStore

    sets = []
    for name, folder in stores.items():
        s, dropped = named_set(ImageStore.open(folder), name, min_positives)
        if dropped:
            log.info("%s: classes left out (< %d test positives): %s", name, min_positives, dropped)
        if s is not None:
            sets.append(s)
    return sets


def _explain(cfg, sets):
    from medfilip.knowledge import load_knowledge

    return load_knowledge(cfg.knowledge.path, required=sorted({c for s in sets for c in s.categories})).explanation


def cmd_real_covid_adult(args: argparse.Namespace) -> int:
    from medfilip.datasets.ieee8023 import read_ieee8023, write_covid_adult_layout

    counts = write_covid_adult_layout(read_ieee8023(args.ieee8023), args.out, args.min_age)
    (args.out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(f"adult-only COVID set {counts} -> {args.out}")
    return 0


def cmd_real_eval(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.evaluation.real.tables import evaluate_real, write_real_tables

    sets = _sets(_named(args.sets), args.min_positives)
    unknown = set(args.probe_sets) - {s.name for s in sets}
    if unknown:
        raise ValueError(f"--probe-sets {sorted(unknown)} are not among --sets")
    result = evaluate_real(
        _runs(args.runs),
        sets,
        args.probe_sets,
        _explain(cfg, sets),
        evaluation=cfg.evaluation,
        runs=cfg.training.runs,
    )
    outputs = {
        "zeroshot": args.zeroshot,
        "zeroshot_per_class": args.zeroshot_per_class,
        "probe": args.probe,
        "probe_per_class": args.probe_per_class,
        "probe_figure": args.probe_figure,
        "retrieval": args.retrieval,
    }
    write_real_tables(
        result, bootstrap=cfg.evaluation.bootstrap, reference=cfg.evaluation.reference_run, outputs=outputs
    )
    print(f"{len(result['summaries'])} zero-shot summaries, {len(result['probe'])} probes -> {args.zeroshot}")
    return 0


def cmd_real_gap(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    import numpy as np

    from medfilip.datasets.ieee8023 import read_ieee8023
    from medfilip.evaluation.real import gap
    from medfilip.images.store import ImageStore
    from medfilip.io import write_csv_atomic

    phantom = _named(args.phantom)
    real = _named(args.real)
    if list(phantom) != list(real):
        raise ValueError(f"--phantom {list(phantom)} and --real {list(real)} must name the same sets, in order")
    rng = np.random.default_rng(0)
    pairs, stores = [], {}
    for name in phantom:
        both = []
        for kind, folder in (("phantom", phantom[name]), ("real", real[name])):
            store = ImageStore.open(folder)
            rows = np.sort(rng.permutation(len(store))[: args.max_images])
            both.append(gap.image_stats(name, store.get_batch(rows)))
            stores[(kind, name)] = (store, rows)
        pairs.append(tuple(both))
    meta = read_ieee8023(args.ieee8023)
    with_mask = meta[meta["lung_mask"].map(lambda p: p is not None and Path(p).is_file())]
    real_masks = [gap.read_mask(p) for p in with_mask["lung_mask"]]
    real_shapes = [gap.lung_shape(m) for m in real_masks]
    side = cfg.images.size
    phantoms = gap.phantom_masks(args.n_phantom, side, cfg.phantom)
    phantom_shapes = [gap.lung_shape(m) for m, _, _ in phantoms]
    phantom_lung_shapes = [gap.lung_shape(m) for _, m, _ in phantoms]
    rows = gap.gap_rows(pairs, real_shapes, phantom_shapes, phantom_lung_shapes, [c for _, _, c in phantoms])
    write_csv_atomic(rows, args.table)
    from PIL import Image

    first = next(iter(phantom))
    p_store, p_rows = stores[("phantom", first)]
    r_store, r_rows = stores[("real", first)]
    example = with_mask.iloc[0]
    with Image.open(example["path"]) as img:
        real_img = np.asarray(img.convert("L"))
    from medfilip.phantom.render import render_phantom

    examples = [
        (f"phantom {first} (twin)", p_store[int(p_rows[0])], None),
        (f"real {first}", r_store[int(r_rows[0])], None),
        ("phantom + its hemithorax mask", render_phantom([], size=side, seed=0, settings=cfg.phantom), phantoms[0][0]),
        ("real ieee8023 + lung mask", real_img, real_masks[0]),
    ]
    gap.gap_figure(pairs, real_shapes, phantom_shapes, examples, args.figure)
    for r in rows:
        print(f"{r['statistic']} [{r['sets']}]: phantom {r['phantom']} real {r['real']} gap {r['gap']}")
    print(f"-> {args.table}, {args.figure}")
    return 0


def cmd_real_notes(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.datasets.ieee8023 import read_ieee8023
    from medfilip.evaluation.real.notes import agreement, extract_notes
    from medfilip.extraction.rules import RulesBackend
    from medfilip.extraction.vocabulary import configured_vocabulary
    from medfilip.io import write_csv_atomic
    from medfilip.pipeline.commands.extraction import make_backend

    vocabulary = configured_vocabulary(cfg)
    notes = read_ieee8023(args.ieee8023)
    backends = [RulesBackend(cfg.extraction.rules.vocabulary_dir)]
    if cfg.extraction.backend != "rules":
        backends.append(make_backend(cfg))  # e.g. the local LLM of config/local_llm.yaml
    tables = [extract_notes(notes, b, vocabulary.normalise) for b in backends]
    rows = [r for t in tables for r in t.to_dict("records")]
    write_csv_atomic(rows, args.out)
    summary = agreement(tables)
    write_csv_atomic(summary.to_dict("records"), args.summary)
    print(summary.to_string(index=False))
    print(f"{len(rows)} notes -> {args.out}, {args.summary}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("real-covid-adult", help="the adult-only COVID vs other-pneumonia set of ieee8023 (folders)")
    s.add_argument("--ieee8023", type=Path, required=True, help="the pack's ieee8023/ folder (metadata.csv)")
    s.add_argument("--out", type=Path, required=True, help="folder for COVID/ and Pneumonia/ (symbolic links)")
    s.add_argument("--min-age", type=int, default=18)
    s.set_defaults(func=cmd_real_covid_adult)

    s = sub.add_parser(
        "real-eval", help="every run (+ a random-init encoder) on named stores: zero-shot, probe, retrieval"
    )
    s.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders or their model.pt")
    s.add_argument("--sets", nargs="+", required=True, help="name=store folder (or its index.parquet)")
    s.add_argument("--probe-sets", nargs="*", default=[], help="names among --sets to probe (need a train split)")
    s.add_argument("--min-positives", type=int, default=10, help="multi-label classes need this many in test")
    s.add_argument("--zeroshot", type=Path, required=True)
    s.add_argument("--zeroshot-per-class", type=Path, default=None)
    s.add_argument("--probe", type=Path, required=True)
    s.add_argument("--probe-per-class", type=Path, default=None)
    s.add_argument("--probe-figure", type=Path, default=None)
    s.add_argument("--retrieval", type=Path, required=True)
    s.set_defaults(func=cmd_real_eval)

    s = sub.add_parser("real-gap", help="phantom-to-real gap: intensity, power spectrum, lung-mask geometry")
    s.add_argument("--phantom", nargs="+", required=True, help="name=phantom store")
    s.add_argument("--real", nargs="+", required=True, help="name=real store (same names, same order)")
    s.add_argument("--ieee8023", type=Path, required=True, help="the pack's ieee8023/ folder (lung masks)")
    s.add_argument("--max-images", type=int, default=300)
    s.add_argument("--n-phantom", type=int, default=100, help="phantom patients for the lung geometry")
    s.add_argument("--table", type=Path, required=True)
    s.add_argument("--figure", type=Path, required=True)
    s.set_defaults(func=cmd_real_gap)

    s = sub.add_parser("real-notes", help="the ieee8023 clinical notes through the extraction backends")
    s.add_argument("--ieee8023", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--summary", type=Path, required=True)
    s.set_defaults(func=cmd_real_notes)
