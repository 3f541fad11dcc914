"""Build ``results/labels.parquet`` from report shards, entities and the knowledge dictionary.

One row per (report, variant, distinct label text). A report whose extraction succeeded and whose
entities hold no positive finding gets one ``normal`` label. A report whose extraction failed (or
that no extraction shard holds) gets no label at all: it is counted and left out, never taken for
normal, and training drops its image.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.io import atomic_path
from medfilip.labels.settings import LabelsConfig
from medfilip.labels.templates import LabelVariant, render_label

log = logging.getLogger(__name__)

NORMAL = "normal"

LABEL_SCHEMA = pa.schema(
    [
        ("report_id", pa.string()),
        ("variant", pa.string()),
        ("label", pa.string()),
        ("label_key", pa.string()),  # sha256(label)[:16]
        ("category", pa.string()),  # null for the report variant
        ("severity", pa.string()),
        ("location", pa.string()),
        ("polarity", pa.string()),
        ("explanation", pa.string()),
        ("fine_grained_key", pa.string()),  # "{severity}|{category}"
        ("is_normal", pa.bool_()),
    ]
)


# rows per row group of labels.parquet: pyarrow's default maximum, what pq.write_table uses
ROW_GROUP = 1024 * 1024


def _iter_rows(path: str | Path, columns: list[str], batch_size: int = 65_536):
    """A Parquet file's rows as dicts, a batch at a time (the whole table is never in Python objects)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
        yield from batch.to_pylist()


def label_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class LabelSummary:
    n_reports: int
    n_rows: int
    n_normal_reports: int
    unique_labels: dict[str, int]
    n_failed_reports: int = 0  # extraction failed or missing: no labels


def _location(location: str | None, default: str | None, omit_default: bool) -> str | None:
    if not location:
        return None
    if omit_default and default and location.strip().lower() == default.strip().lower():
        return None
    return location


def _variant_labels(variant, report_text, items, knowledge, default_locations, settings, location_text=None):
    """The label rows (text + fields) of one report in one variant, duplicates included; the items'
    categories are canonical already."""
    if variant == LabelVariant.report.value:
        text = render_label("", variant=variant, report_text=report_text or NORMAL)
        yield {
            "label": text,
            "category": None,
            "severity": None,
            "location": None,
            "polarity": None,
            "explanation": None,
        }
        return
    for e in items:
        category = e["category"]
        explanation = knowledge.explanation(category)
        location = e["location"]
        if location_text is not None:  # the vocabulary's wording: no "bilateral pleura pleural effusion"
            location = location_text(location, category)
        location = _location(location, default_locations.get(category), settings.omit_default_location)
        text = render_label(category, e["severity"], location, explanation, variant, negated=e["polarity"] == "negated")
        yield {
            "label": text,
            "category": category,
            "severity": e["severity"],
            "location": location,
            "polarity": e["polarity"],
            "explanation": explanation,
        }


def _read_reports(report_paths: Iterable[str | Path]) -> dict[str, str]:
    """report_id -> report text ("" where it has none), over every report shard."""
    reports: dict[str, str] = {}
    for path in report_paths:
        table = pq.read_table(path, columns=["report_id", "text"])
        for rid, text in zip(table.column("report_id").to_pylist(), table.column("text").to_pylist()):
            reports[rid] = text or ""
    return reports


def _drop_unextracted(reports: dict[str, str], extractions: Iterable[str | Path]) -> int:
    """Remove from ``reports`` those no extraction shard holds with status ``ok`` (failed, or in no
    shard), with a warning naming the first few; their count."""
    extracted: set[str] = set()
    for path in extractions:
        table = pq.read_table(path, columns=["report_id", "status"])
        for rid, status in zip(table.column("report_id").to_pylist(), table.column("status").to_pylist()):
            if status == "ok":
                extracted.add(rid)
    failed = sorted(set(reports) - extracted)
    if failed:
        log.warning(
            "%d of %d reports have no successful extraction (failed, or in no extraction shard) and get "
            "no labels (first: %s)",
            len(failed),
            len(reports),
            ", ".join(failed[:5]),
        )
        for rid in failed:
            del reports[rid]
    return len(failed)


def _kept_polarities(settings: LabelsConfig) -> set[str]:
    """The entity polarities that become labels: present, and uncertain / negated as the settings say."""
    keep = {"present"} | ({"uncertain"} if settings.uncertain == "present" else set())
    if settings.negated == "keep":
        keep.add("negated")
    return keep


def _findings(
    entities_path: str | Path,
    reports: dict[str, str],
    knowledge,
    settings: LabelsConfig,
    severity_scale: dict[str, str] | None,
) -> dict[str, list[dict]]:
    """report_id -> the entities that become its labels (kept polarity, a category, a report of
    ``reports``), each with its canonical category and its severity on ``severity_scale``.

    Raises ValueError naming the entities file and every category the dictionary has no entry for.
    """
    keep_polarity = _kept_polarities(settings)
    findings: dict[str, list[dict]] = {}
    unknown: Counter[str] = Counter()
    off_scale: Counter[str] = Counter()
    not_in_corpus = 0
    for ent in _iter_rows(entities_path, ["report_id", "severity", "location", "category", "polarity"]):
        if ent["category"] is None or ent["polarity"] not in keep_polarity:
            continue
        if ent["report_id"] not in reports:
            not_in_corpus += 1
            continue
        category = knowledge.resolve(ent["category"])
        if category is None:
            unknown[ent["category"]] += 1
            continue
        severity = ent["severity"]
        if severity_scale is not None and severity:
            word = " ".join(severity.lower().split())
            if word in severity_scale:
                severity = severity_scale[word]
            else:
                off_scale[word] += 1
        findings.setdefault(ent["report_id"], []).append({**ent, "category": category, "severity": severity})
    if unknown:
        raise ValueError(
            f"{entities_path}: categories with no knowledge-dictionary entry: {sorted(unknown)} "
            "(add them to the dictionary; see knowledge.path)"
        )
    if off_scale:
        log.warning("severity words not on the severity scale, kept as written: %s", dict(off_scale.most_common(10)))
    if not_in_corpus:
        log.warning("%d entities of reports not in the report shards were ignored", not_in_corpus)
    return findings


def _is_normal(findings: list[dict]) -> bool:
    """A report with no positive finding is normal (kept negations, "no pneumothorax", stay beside it)."""
    return not any(e["polarity"] != "negated" for e in findings)


def _label_records(
    reports: dict[str, str],
    findings: dict[str, list[dict]],
    normal: dict,
    variants: Iterable[str],
    variant_labels,
    unique: dict[str, set[str]],
) -> Iterator[dict]:
    """The labels.parquet records, report by report (sorted ids), then variant by variant: each
    variant's distinct label texts of the report, in order. ``variant_labels(variant, report_text,
    items)`` gives a variant's labels, duplicates included; ``findings`` is emptied as it goes, and
    ``unique`` (variant -> label texts) collects every text written."""
    for rid in sorted(reports):
        ents = findings.pop(rid, [])
        is_normal = _is_normal(ents)
        items = ents + ([normal] if is_normal else [])
        for variant in variants:
            seen: set[str] = set()
            for label in variant_labels(variant, reports[rid], items):
                text = label["label"]
                if text in seen:
                    continue
                seen.add(text)
                unique[variant].add(text)
                category = label["category"]
                yield {
                    **label,
                    "report_id": rid,
                    "variant": variant,
                    "label_key": label_key(text),
                    "fine_grained_key": None if category is None else f"{label['severity'] or ''}|{category}",
                    "is_normal": is_normal,
                }


def _write_records(out_path: str | Path, records: Iterable[dict]) -> int:
    """Write labels.parquet atomically, streamed: the records go to the file a row group at a time
    (pyarrow's default row-group length, so the file is the one a single write_table would give),
    never all of them in lists at once. The number of rows written."""
    rows: dict[str, list] = {name: [] for name in LABEL_SCHEMA.names}
    n_rows = 0
    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, LABEL_SCHEMA, compression="zstd") as writer:

        def flush() -> None:
            writer.write_table(pa.Table.from_pydict(rows, schema=LABEL_SCHEMA))
            for column in rows.values():
                column.clear()

        for record in records:
            for name in LABEL_SCHEMA.names:
                rows[name].append(record[name])
            n_rows += 1
            if len(rows["report_id"]) == ROW_GROUP:
                flush()
        if rows["report_id"] or n_rows == 0:
            flush()
    return n_rows


def build_labels(
    report_paths: Iterable[str | Path],
    entities_path: str | Path,
    knowledge,
    settings: LabelsConfig,
    out_path: str | Path,
    *,
    default_locations: dict[str, str | None] | None = None,
    extractions: Iterable[str | Path] | None = None,
    location_text=None,
    severity_scale: dict[str, str] | None = None,
) -> LabelSummary:
    """Write labels.parquet; ``knowledge`` is a KnowledgeDictionary (explanations per category).

    ``extractions`` are the extraction shards (their ``status`` per report): only reports extracted
    with status ``ok`` get labels. None takes every report as extracted (for entities made elsewhere).
    ``location_text(location, category)`` words a location for the label text
    (:meth:`~medfilip.extraction.vocabulary.Vocabulary.label_location`); None keeps it as it is.
    ``severity_scale`` (word -> mild / moderate / severe,
    :func:`~medfilip.extraction.vocabulary.load_severity_scale`) rewrites each stated severity on the
    scale (``labels.severity_scale: three_level``); a word not on it is kept as written (counted in
    the log); None keeps every word as written. An unstated severity stays None.
    """
    default_locations = default_locations or {}
    reports = _read_reports(report_paths)
    n_failed = _drop_unextracted(reports, extractions) if extractions is not None else 0
    findings = _findings(entities_path, reports, knowledge, settings, severity_scale)

    normal = {"category": knowledge.resolve(NORMAL), "severity": None, "location": None, "polarity": "present"}
    n_normal = sum(_is_normal(findings.get(rid, [])) for rid in reports)
    unique: dict[str, set[str]] = {v: set() for v in settings.variants}
    variant_labels = partial(
        _variant_labels,
        knowledge=knowledge,
        default_locations=default_locations,
        settings=settings,
        location_text=location_text,
    )
    records = _label_records(reports, findings, normal, settings.variants, variant_labels, unique)
    n_rows = _write_records(out_path, records)
    summary = LabelSummary(len(reports), n_rows, n_normal, {v: len(s) for v, s in unique.items()}, n_failed)
    log.info(
        "%d label rows for %d reports (%d normal, %d left out for failed extraction); unique labels per variant: %s",
        summary.n_rows,
        summary.n_reports,
        summary.n_normal_reports,
        summary.n_failed_reports,
        summary.unique_labels,
    )
    return summary


def label_statistics(labels_path: str | Path, top: int = 15) -> list[dict]:
    """Rows of label_stats.csv: unique labels and labels per report per variant, top categories."""
    import duckdb

    con = duckdb.connect()
    con.register("labels", pq.read_table(labels_path))
    out: list[dict] = []
    for variant, n_unique, n_rows, n_reports in con.execute(
        "select variant, count(distinct label), count(*), count(distinct report_id) from labels group by 1 order by 1"
    ).fetchall():
        out += [
            {"statistic": "unique_labels", "variant": variant, "key": "", "value": n_unique},
            {"statistic": "label_rows", "variant": variant, "key": "", "value": n_rows},
            {"statistic": "reports", "variant": variant, "key": "", "value": n_reports},
        ]
    for variant, mean, median, mx, normal in con.execute(
        """select variant, avg(n), median(n), max(n), avg(normal::int) from (
               select variant, report_id, count(*) n, bool_or(is_normal) normal from labels group by 1, 2)
           group by 1 order by 1"""
    ).fetchall():
        out += [
            {"statistic": "labels_per_report_mean", "variant": variant, "key": "", "value": round(mean, 3)},
            {"statistic": "labels_per_report_median", "variant": variant, "key": "", "value": median},
            {"statistic": "labels_per_report_max", "variant": variant, "key": "", "value": mx},
            {"statistic": "normal_report_fraction", "variant": variant, "key": "", "value": round(normal, 4)},
        ]
    variant = con.execute(
        "select variant from labels where variant <> 'report' group by 1 order by (variant = 'triplet_explanation') desc, 1 limit 1"
    ).fetchone()
    if variant:
        for category, n in con.execute(
            "select category, count(distinct report_id) n from labels where variant = ? group by 1 order by 2 desc, 1 limit ?",
            [variant[0], top],
        ).fetchall():
            out.append({"statistic": "top_category_reports", "variant": variant[0], "key": category, "value": n})
    return out
