"""Score extracted entities against the IU-Xray human MeSH annotations.

For each category both sides share, "finding present in the report" is a
binary decision per report: precision, recall and F1 over reports, a
micro-averaged row, and agreement of location and severity on the reports
where both sides give one.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from medfilip.extraction.vocabulary import Vocabulary

log = logging.getLogger(__name__)

SCORED_POLARITIES = ("present",)


@dataclass(frozen=True)
class MeshRule:
    head: str
    modifier: str | None
    category: str


@dataclass(frozen=True)
class MeshLabel:
    category: str
    lateralities: frozenset[str]
    regions: frozenset[str]
    severity_levels: frozenset[int]


class MeshMapping:
    def __init__(self, rules: list[MeshRule], ignore: set[str], vocabulary: Vocabulary):
        self.rules = rules
        self.ignore = ignore
        self.vocab = vocabulary
        self.categories = sorted({r.category for r in rules})

    @classmethod
    def load(cls, path: str | Path, vocabulary: Vocabulary) -> MeshMapping:
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        rules = []
        for i, r in enumerate(data.get("rules") or []):
            if r.get("category") not in vocabulary.by_name:
                raise ValueError(
                    f"{path}: rules[{i}] ({r.get('head')!r}): category {r.get('category')!r} is not in the vocabulary"
                )
            rules.append(
                MeshRule(r["head"].lower(), (r.get("modifier") or None) and r["modifier"].lower(), r["category"])
            )
        return cls(rules, {h.lower() for h in data.get("ignore") or []}, vocabulary)

    def label(self, term: str) -> MeshLabel | None | str:
        """A MeshLabel, None for an ignored term, or the head string when no rule maps it."""
        parts = [p.strip().lower() for p in term.split("/")]
        head, modifiers = parts[0], parts[1:]
        if head in self.ignore:
            return None
        for rule in self.rules:
            if rule.head in (head, "*") and (rule.modifier is None or rule.modifier in modifiers):
                lats, regions, levels = set(), set(), set()
                for mod in modifiers:
                    if mod in self.vocab.laterality_of:
                        lats.add(self.vocab.laterality_of[mod])
                    if mod in self.vocab.severity_of:
                        levels.add(self.vocab.severity_of[mod].level)
                    for _, _, reg in self.vocab.region_of(mod):
                        regions.add(reg)
                return MeshLabel(rule.category, frozenset(lats), frozenset(regions), frozenset(levels))
        return head


def _split_location(location: str | None) -> tuple[str | None, str | None]:
    if not location:
        return None, None
    first, _, rest = location.partition(" ")
    if first in ("right", "left", "bilateral"):
        return first, rest or None
    return None, location


def score_extraction(
    reports: pa.Table,
    entities: pa.Table,
    mapping: MeshMapping,
    polarities: tuple[str, ...] = SCORED_POLARITIES,
) -> tuple[list[dict], dict]:
    """Per-category rows plus a micro row; also returns diagnostics (unmapped MeSH heads, counts)."""
    vocab = mapping.vocab
    truth: dict[str, dict[str, list[MeshLabel]]] = {}
    unmapped: Counter[str] = Counter()
    for rid, terms in zip(reports["report_id"].to_pylist(), reports["annotations"].to_pylist()):
        if not terms or any(a.strip().lower() == "no indexing" for a in terms):
            continue  # not annotated: cannot be scored
        labels: dict[str, list[MeshLabel]] = defaultdict(list)
        for term in terms:
            lab = mapping.label(term)
            if isinstance(lab, MeshLabel):
                labels[lab.category].append(lab)
            elif isinstance(lab, str):
                unmapped[lab] += 1
        truth[rid] = labels

    pred: dict[str, dict[str, list[tuple[str | None, str | None]]]] = defaultdict(lambda: defaultdict(list))
    shared = set(mapping.categories)
    for rid, cat, pol, loc, sev in zip(
        entities["report_id"].to_pylist(),
        entities["category"].to_pylist(),
        entities["polarity"].to_pylist(),
        entities["location"].to_pylist(),
        entities["severity"].to_pylist(),
    ):
        if rid in truth and cat in shared and pol in polarities:
            pred[rid][cat].append((loc, sev))

    counts = {c: Counter() for c in mapping.categories}
    for rid, labels in truth.items():
        predicted = pred.get(rid, {})
        for cat in mapping.categories:
            t, p = cat in labels, cat in predicted
            c = counts[cat]
            c["tp"] += t and p
            c["fp"] += p and not t
            c["fn"] += t and not p
            if not (t and p):
                continue
            lats = set().union(*(lab.lateralities for lab in labels[cat]))
            regions = set().union(*(lab.regions for lab in labels[cat]))
            levels = set().union(*(lab.severity_levels for lab in labels[cat]))
            loc_compared = loc_agree = False
            for loc, _ in predicted[cat]:
                lat, reg = _split_location(loc)
                axes = []
                if lat and lats:
                    axes.append(lat in lats)
                if reg and regions:
                    axes.append(reg in regions)
                if axes:
                    loc_compared = True
                    loc_agree = loc_agree or all(axes)
            c["loc_n"] += loc_compared
            c["loc_agree"] += loc_agree
            pred_levels = {vocab.severity_levels[s] for _, s in predicted[cat] if s in vocab.severity_levels}
            if pred_levels and levels:
                c["sev_n"] += 1
                c["sev_agree"] += bool(pred_levels & levels)

    rows = [_row(cat, vocab.groups.get(cat), counts[cat]) for cat in mapping.categories]
    rows.sort(key=lambda r: (-r["support"], r["category"]))
    total = sum(counts.values(), Counter())
    micro = _row("micro-average", None, total)
    scored = [r for r in rows if r["support"] > 0]
    macro = dict.fromkeys(micro)
    macro.update(category="macro-average", support=micro["support"], predicted=micro["predicted"])
    for k in ("precision", "recall", "f1"):
        macro[k] = round(sum(r[k] for r in scored) / len(scored), 4) if scored else None
    diagnostics = {"n_reports_scored": len(truth), "unmapped_mesh_heads": dict(unmapped.most_common())}
    return rows + [micro, macro], diagnostics


def _row(category: str, group: str | None, c: Counter) -> dict:
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "category": category,
        "chexpert_group": group,
        "support": tp + fn,
        "predicted": tp + fp,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(f, 4),
        "location_pairs": c["loc_n"],
        "location_agreement": round(c["loc_agree"] / c["loc_n"], 4) if c["loc_n"] else None,
        "severity_pairs": c["sev_n"],
        "severity_agreement": round(c["sev_agree"] / c["sev_n"], 4) if c["sev_n"] else None,
    }


def read_reports(paths: list[str | Path]) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=["report_id", "annotations", "split"]) for p in paths])


def write_quality(rows: list[dict], diagnostics: dict, out_csv: str | Path, figure: str | Path | None = None) -> None:
    """Write the quality table (CSV) and, optionally, a per-category F1 bar chart."""
    from medfilip.io import write_csv_atomic

    write_csv_atomic(rows, out_csv)
    if diagnostics.get("unmapped_mesh_heads"):
        top = list(diagnostics["unmapped_mesh_heads"].items())[:8]
        log.info("MeSH heads without a mapping (left out of the score): %s", ", ".join(f"{k} x{v}" for k, v in top))
    if figure is not None:
        plot_quality(rows, figure)


def plot_quality(rows: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfilip.io import save_figure

    cats = [r for r in rows if r["support"] >= 5 and not r["category"].endswith("-average")]
    micro = next(r for r in rows if r["category"] == "micro-average")
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(cats) + 1.4))
    y = range(len(cats))
    ax.barh(y, [r["f1"] for r in cats], color="#3b75af", label="F1")
    ax.scatter([r["precision"] for r in cats], y, marker="|", color="black", s=60, label="precision", zorder=3)
    ax.scatter([r["recall"] for r in cats], y, marker="x", color="#c0392b", s=18, label="recall", zorder=3)
    ax.set_yticks(list(y), [f"{r['category']} (n={r['support']})" for r in cats], fontsize=7)
    ax.set_ylim(max(len(cats), 1) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.axvline(micro["f1"], color="grey", ls="--", lw=1)
    ax.set_xlabel("score against IU-Xray MeSH annotations (finding present)")
    ax.set_title(f"rules extraction quality: micro F1 {micro['f1']:.3f}", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
