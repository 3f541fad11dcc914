"""Agreement between two extraction backends on the same reports.

For every canonical category (raw categories normalised with
:meth:`Vocabulary.normalise`), "finding present in the report" is a binary
decision per report on each side: the 2x2 counts (both / only A / only B /
neither), Cohen's kappa, and precision, recall and F1 of B taking A as the
reference. On the (report, category) pairs both sides mention (any polarity),
polarity, severity and location are compared too. A micro row pools the 2x2
tables and the pairs of every category.

Only reports that both sides extracted successfully are compared; the others
are counted in the diagnostics.

Per (report, category) and side:

- polarity: ``present`` if any triplet of the category is present, else
  ``uncertain`` if any is uncertain, else ``negated``;
- severity: the set of severity levels of its triplets (``mild`` and ``small``
  are both level 1, see ``modifiers.yaml``; a word the vocabulary does not know
  stands for itself); a pair counts when both sides give one, and agrees when
  the sets meet;
- location: each location string becomes (laterality, regions) with the
  vocabulary's words (a string with neither stands for itself); two locations
  agree when their lateralities are equal and their regions meet (or neither
  has a region); a pair counts when both sides give one, and agrees when any
  location of A agrees with any of B.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from medfilip.extraction.vocabulary import Vocabulary
from medfilip.io import write_csv_atomic

log = logging.getLogger(__name__)

POLARITY_RANK = {"present": 2, "uncertain": 1, "negated": 0}
MICRO = "micro-average"
COLUMNS = [
    "category",
    "chexpert_group",
    "n_reports",
    "both",
    "only_a",
    "only_b",
    "neither",
    "kappa",
    "precision_b",
    "recall_b",
    "f1_b",
    "polarity_pairs",
    "polarity_agreement",
    "severity_pairs",
    "severity_agreement",
    "location_pairs",
    "location_agreement",
]


@dataclass
class Mentions:
    """What one side says about one category in one report."""

    polarity: str = "negated"
    severities: set = field(default_factory=set)
    locations: list = field(default_factory=list)


def extraction_files(paths: Iterable[str | Path]) -> list[Path]:
    """Extraction shard files: a folder stands for its ``*.parquet`` files (not recursively)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"{p}: no extraction shards (*.parquet) in this folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such extraction shard or folder")
    return files


def read_side(paths: Iterable[str | Path]) -> tuple[dict[str, list[dict]], set[str], str]:
    """report_id -> triplets of the reports extracted ok, the ids of failed ones, and the backend name(s)."""
    ok: dict[str, list[dict]] = {}
    failed: set[str] = set()
    backends: set[str] = set()
    for path in extraction_files(paths):
        table = pq.read_table(path, columns=["report_id", "backend", "status", "triplets"])
        for rec in table.to_pylist():
            backends.add(rec["backend"])
            if rec["status"] == "ok":
                ok[rec["report_id"]] = rec["triplets"] or []
                failed.discard(rec["report_id"])
            elif rec["report_id"] not in ok:
                failed.add(rec["report_id"])
    return ok, failed, "+".join(sorted(b for b in backends if b))


class _Normaliser:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._categories: dict[str, str | None] = {}
        self._locations: dict[str, tuple] = {}

    def category(self, raw: str | None) -> str | None:
        if raw not in self._categories:
            self._categories[raw] = self.vocab.normalise(raw)
        return self._categories[raw]

    def severity(self, word: str | None):
        if not word:
            return None
        word = " ".join(word.lower().split())
        sev = self.vocab.severity_of.get(word)
        return sev.level if sev is not None else word

    def location(self, text: str | None) -> tuple | None:
        """(laterality or None, frozenset of regions), or ('raw', text) when no vocabulary word is found."""
        if not text:
            return None
        text = " ".join(text.lower().split())
        if text in self._locations:
            return self._locations[text]
        lats: set[str] = set()
        regions: set[str] = set()
        if self.vocab.compound_regex is not None:
            for m in self.vocab.compound_regex.finditer(text):
                spec = self.vocab.compounds[m.group(0)]
                lats.add(spec["laterality"])
                regions.add(spec["region"])
        lats.update(self.vocab.laterality_of[m.group(0)] for m in self.vocab.laterality_regex.finditer(text))
        regions.update(_longest_regions(self.vocab.region_of(text)))
        if len(lats) > 1:  # "left and right" is bilateral
            lats = {"bilateral"}
        if lats or regions:
            key = (next(iter(lats)) if lats else None, frozenset(regions))
        else:
            key = ("raw", text)
        self._locations[text] = key
        return key


def _longest_regions(found: list[tuple[int, int, str]]) -> set[str]:
    """Canonical regions of the longest non-overlapping region matches ('lung base' is a base, not a lung)."""
    chosen: list[tuple[int, int, str]] = []
    for start, end, name in sorted(found, key=lambda f: (-(f[1] - f[0]), f[0])):
        if all(end <= s or start >= e for s, e, _ in chosen):
            chosen.append((start, end, name))
    return {name for _, _, name in chosen}


def _locations_agree(a: tuple, b: tuple) -> bool:
    if a[0] == "raw" or b[0] == "raw":
        return a == b
    if a[0] != b[0]:
        return False
    return bool(a[1] & b[1]) or (not a[1] and not b[1])


def _by_category(triplets: list[dict], norm: _Normaliser, unmapped: Counter) -> dict[str, Mentions]:
    out: dict[str, Mentions] = {}
    for t in triplets:
        cat = norm.category(t.get("category"))
        if cat is None:
            unmapped[t.get("category")] += 1
            continue
        m = out.get(cat)
        if m is None:
            m = out[cat] = Mentions(polarity=t.get("polarity") or "present")
        elif POLARITY_RANK.get(t.get("polarity"), 2) > POLARITY_RANK.get(m.polarity, 2):
            m.polarity = t.get("polarity")
        sev = norm.severity(t.get("severity"))
        if sev is not None:
            m.severities.add(sev)
        loc = norm.location(t.get("location"))
        if loc is not None and loc not in m.locations:
            m.locations.append(loc)
    return out


def compare_extractions(
    a: dict[str, list[dict]], b: dict[str, list[dict]], vocab: Vocabulary
) -> tuple[list[dict], dict]:
    """Agreement rows (one per canonical category either side mentions, then the micro row) and diagnostics.

    ``a`` and ``b`` map report_id -> triplet dicts of the reports each side extracted successfully;
    only the reports in both are compared.
    """
    norm = _Normaliser(vocab)
    shared_ids = sorted(set(a) & set(b))
    unmapped: dict[str, Counter] = {"a": Counter(), "b": Counter()}
    counts: dict[str, Counter] = defaultdict(Counter)
    for rid in shared_ids:
        ma = _by_category(a[rid], norm, unmapped["a"])
        mb = _by_category(b[rid], norm, unmapped["b"])
        for cat in set(ma) | set(mb):
            c = counts[cat]
            pa_, pb_ = ma.get(cat), mb.get(cat)
            in_a = pa_ is not None and pa_.polarity == "present"
            in_b = pb_ is not None and pb_.polarity == "present"
            c["both"] += in_a and in_b
            c["only_a"] += in_a and not in_b
            c["only_b"] += in_b and not in_a
            if pa_ is None or pb_ is None:
                continue
            c["pol_n"] += 1
            c["pol_agree"] += pa_.polarity == pb_.polarity
            if pa_.severities and pb_.severities:
                c["sev_n"] += 1
                c["sev_agree"] += bool(pa_.severities & pb_.severities)
            if pa_.locations and pb_.locations:
                c["loc_n"] += 1
                c["loc_agree"] += any(_locations_agree(x, y) for x in pa_.locations for y in pb_.locations)
    n = len(shared_ids)
    rows = [_row(cat, vocab.groups.get(cat), n, c) for cat, c in counts.items()]
    rows.sort(key=lambda r: (-(r["both"] + r["only_a"] + r["only_b"]), r["category"]))
    total = sum(counts.values(), Counter())
    # the micro row pools every (report, category) decision of the categories listed
    micro = _row(MICRO, None, n * len(counts), total)
    diagnostics = {
        "n_compared": n,
        "n_categories": len(counts),
        "unmapped_a": dict(unmapped["a"].most_common()),
        "unmapped_b": dict(unmapped["b"].most_common()),
    }
    return rows + [micro], diagnostics


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def cohen_kappa(both: int, only_a: int, only_b: int, neither: int) -> float | None:
    """Cohen's kappa of a 2x2 table; None when chance agreement is 1 (both sides constant and equal)."""
    n = both + only_a + only_b + neither
    if n == 0:
        return None
    po = (both + neither) / n
    pe = ((both + only_a) * (both + only_b) + (only_b + neither) * (only_a + neither)) / (n * n)
    if pe >= 1.0:
        return None
    return round((po - pe) / (1 - pe), 4)


def _row(category: str, group: str | None, n_reports: int, c: Counter) -> dict:
    both, only_a, only_b = c["both"], c["only_a"], c["only_b"]
    neither = n_reports - both - only_a - only_b
    return {
        "category": category,
        "chexpert_group": group,
        "n_reports": n_reports,
        "both": both,
        "only_a": only_a,
        "only_b": only_b,
        "neither": neither,
        "kappa": cohen_kappa(both, only_a, only_b, neither),
        "precision_b": _ratio(both, both + only_b),
        "recall_b": _ratio(both, both + only_a),
        "f1_b": _ratio(2 * both, 2 * both + only_a + only_b),
        "polarity_pairs": c["pol_n"],
        "polarity_agreement": _ratio(c["pol_agree"], c["pol_n"]),
        "severity_pairs": c["sev_n"],
        "severity_agreement": _ratio(c["sev_agree"], c["sev_n"]),
        "location_pairs": c["loc_n"],
        "location_agreement": _ratio(c["loc_agree"], c["loc_n"]),
    }


def write_agreement(rows: list[dict], out_csv: str | Path) -> Path:
    return write_csv_atomic(rows, out_csv, COLUMNS)


def compare_paths(
    a_paths: Iterable[str | Path], b_paths: Iterable[str | Path], vocab: Vocabulary, out_csv: str | Path
) -> tuple[list[dict], dict]:
    """Read two sides' extraction shards, compare them and write the CSV table."""
    a, failed_a, name_a = read_side(a_paths)
    b, failed_b, name_b = read_side(b_paths)
    rows, diag = compare_extractions(a, b, vocab)
    ids_a, ids_b = set(a) | failed_a, set(b) | failed_b
    diag.update(
        a=name_a,
        b=name_b,
        n_only_in_a=len(ids_a - ids_b),
        n_only_in_b=len(ids_b - ids_a),
        n_failed_a=len(failed_a & ids_b),
        n_failed_b=len(failed_b & ids_a),
    )
    if not diag["n_compared"]:
        raise ValueError(f"no report was extracted successfully by both sides ({name_a or 'A'} and {name_b or 'B'})")
    for side in ("a", "b"):
        if diag[f"unmapped_{side}"]:
            top = list(diag[f"unmapped_{side}"].items())[:5]
            log.warning(
                "%s: %d raw categories have no canonical name and are left out: %s",
                diag[side],
                len(diag[f"unmapped_{side}"]),
                ", ".join(f"{k!r} x{v}" for k, v in top),
            )
    write_agreement(rows, out_csv)
    return rows, diag
