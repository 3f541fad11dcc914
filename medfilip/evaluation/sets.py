"""Evaluation sets of the zero-shot table: which images, which classes, which ground truth.

- A **downstream** store (results/images/{dataset}/: rsna, nih, vinbig, siim, covid ...) is one set:
  its classes are the store's ``label_names`` (canonical category names), its ground truth the
  ``labels`` column (1 / 0 / NaN). It is *single-label* when every labelled image has exactly one
  positive class (covid: covid-19 pneumonia vs pneumonia vs normal), else multi-label (one class =
  binary).
- The **corpus** store (results/images/corpus/, the pretraining images) gives three MIMIC-style sets
  from its held-out validate/test images, ground truth = the ``findings`` each image was rendered
  from (a finding is present; anything not listed is absent):

  ``corpus_single``  images with exactly one of the single-label classes ('normal' = no finding at
                     all; findings outside the list are allowed), one-hot labels; top-1 + per class.
  ``corpus_multi``   every held-out image, one column per multi-label class.
  ``corpus_fine``    severity+category pairs ("mild cardiomegaly") with at least ``min_count`` images
                     in both splits. An image is positive for a pair when it has that finding at that
                     severity, negative when it has the category at another severity or not at all,
                     and unknown (NaN) when it has the category with no severity stated.
  ``corpus_fg``      MIMIC-FG style: the ``fg_categories`` most common categories among held-out
                     findings with a stated severity, times each one's ``fg_severities`` most common
                     severities (classes chosen from label counts, never from results). Images: the
                     held-out images with one of those categories, so a class's negatives include the
                     same category at another severity (and a positive for "mild cardiomegaly" must
                     beat "severe cardiomegaly" images, not only normal ones). Labels as corpus_fine.

  ``corpus_severity`` severity measured as severity (issue 19): severities as the *report states*
                     them (labels.parquet, put on the one scale of
                     resources/vocabulary/severity_scale.yaml: mild / moderate / severe), never the
                     phantom's drawn default ("moderate" for an unstated one). A class "mild c" is
                     positive for images with c stated mild, negative for images with c stated at
                     another severity only; every other image is unknown (NaN), so a detector of
                     the category scores 0.5. A class needs ``severity_min_count`` test images and
                     as many negatives; a set without one is reported with a note saying so. The
                     zero-shot table adds Kendall tau between the stated severity and
                     cos(image, "severe c") - cos(image, "mild c") per category (its ordinal
                     severities in ``EvalSet.ordinal``). Left out of the means over sets.

A set listed in ``evaluation.compare_category_text`` is also scored with the bare category names
as ``{set}_by_category`` (unseen classes: by category vs by explanation). A set with a class named in
``evaluation.mismatched_explanation`` is also scored as ``{set}_mismatched``: that class's text carries
another category's explanation (the unseen-class control: the phantom draws COVID-19 from its own
dictionary explanation, so a high ``covid_auc`` is partly built in; the control says how much).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfilip.names import HELD_OUT_SPLITS, ClassTextVariant

if TYPE_CHECKING:  # keep the import light: the workflow imports this module for its input lists
    from medfilip.evaluation.settings import CorpusSetsSettings, EvaluationConfig
    from medfilip.images.store import ImageStore

log = logging.getLogger(__name__)

NORMAL = "normal"
CORPUS_DATASET = "corpus"


class EvaluationSetError(ValueError):
    """A store that cannot be turned into an evaluation set; the message names the folder."""


@dataclass(frozen=True)
class ClassSpec:
    """One class of a set: its column name and what its text is rendered from."""

    name: str
    category: str
    severity: str | None = None


@dataclass
class EvalSet:
    """Images (row numbers of ``store``) and 1/0/NaN labels per split, for one list of classes."""

    name: str
    kind: str  # single_label | multi_label
    classes: list[ClassSpec]
    store: Any  # ImageStore
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    text_variant: str | None = None  # None: evaluation.text_variant
    source: str = "downstream"  # downstream | corpus
    explain_as: dict[str, str] = field(
        default_factory=dict
    )  # class name -> category whose explanation its text carries
    note: str = ""
    in_means: bool = True  # False: reported, but left out of the means over sets (corpus_severity)
    keep_empty: bool = False  # True: reported (its note) even with no class or no test image
    # per split, per category: the stated severity of each image on the ordinal scale (0 mild, 1
    # moderate, 2 severe; NaN when the category is absent or its severity unstated): Kendall tau
    ordinal: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # the COVID control: class name -> the name its text uses instead of the category ("condition x")
    text_names: dict[str, str] = field(default_factory=dict)
    focus: tuple[str, ...] = ()  # classes also scored alone ({set}_class_auc): the controlled class

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def categories(self) -> list[str]:
        return sorted({c.category for c in self.classes})

    def n(self, split: str) -> int:
        return int(self.rows.get(split, np.empty(0)).size)


# -- building sets from stores ------------------------------------------------------------------
def _split_rows(store: ImageStore) -> dict[str, np.ndarray]:
    return {split: store.indices(split) for split in HELD_OUT_SPLITS}


def _is_single_label(labels: np.ndarray) -> bool:
    if labels.shape[1] < 2 or labels.shape[0] == 0 or np.isnan(labels).any():
        return False
    return bool((labels.sum(axis=1) == 1).all())


def downstream_set(store: ImageStore, name: str | None = None) -> EvalSet:
    """The set of a labelled downstream store (classes = label_names)."""
    names = store.label_names
    if not names:
        raise EvaluationSetError(f"{store.root}: meta.json has no label_names (not a labelled downstream store)")
    labels = store.labels()
    rows = _split_rows(store)
    held_out = np.concatenate([rows[s] for s in HELD_OUT_SPLITS])
    kind = "single_label" if _is_single_label(labels[held_out]) else "multi_label"
    return EvalSet(
        name=name or store.dataset,
        kind=kind,
        classes=[ClassSpec(n, n) for n in names],
        store=store,
        rows=rows,
        labels={s: labels[r] for s, r in rows.items()},
    )


def _findings(store: ImageStore) -> list[list[dict]]:
    if "findings" not in store.index.column_names:
        raise EvaluationSetError(f"{store.root}: index has no 'findings' column (not a corpus store)")
    return [row or [] for row in store.index.column("findings").to_pylist()]


def _clean(value: str | None) -> str | None:
    value = " ".join(str(value).split()).lower() if value is not None else ""
    return value or None


SEVERITY_SET = "corpus_severity"
SEVERITY_ORDER = {"mild": 0, "moderate": 1, "severe": 2}


def stated_severities(labels_path: str | Path, scale: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """``{report_id: {category: severity on the scale, or None}}`` from labels.parquet: what each
    report states of its present (and uncertain) findings. A category whose report states no
    severity, a word off the scale, or two different severities is None (left out of severity
    metrics, never taken for "moderate")."""
    import pyarrow.parquet as pq

    columns = ["report_id", "category", "severity", "polarity"]
    try:
        table = pq.read_table(labels_path, columns=columns)
    except (OSError, ValueError) as err:
        raise EvaluationSetError(f"{labels_path}: cannot read the columns {columns} of labels.parquet: {err}") from None
    found: dict[str, dict[str, set]] = {}
    for rid, category, severity, polarity in zip(*(table.column(c).to_pylist() for c in columns)):
        category = _clean(category)
        if category is None or polarity == "negated":
            continue
        word = _clean(severity)
        found.setdefault(rid, {}).setdefault(category, set()).add(scale.get(word) if word else None)
    out: dict[str, dict[str, str | None]] = {}
    for rid, by_category in found.items():
        out[rid] = {}
        for category, values in by_category.items():
            stated = values - {None}
            out[rid][category] = next(iter(stated)) if len(stated) == 1 and None not in values else None
    return out


def severity_set(
    store: ImageStore,
    settings: CorpusSetsSettings,
    rows: dict[str, np.ndarray],
    stated: dict[str, dict[str, str | None]] | None,
) -> EvalSet:
    """``corpus_severity`` (module doc): stated severity + category classes whose negatives are the
    same category at another stated severity only."""
    base = EvalSet(SEVERITY_SET, "multi_label", [], store, source="corpus", in_means=False, keep_empty=True)
    if stated is None:
        return replace(base, note="skipped: no labels.parquet given, the stated severities are unknown")
    findings = _findings(store)
    report_ids = store.index.column("report_id").to_pylist() if "report_id" in store.index.column_names else None
    if report_ids is None:
        return replace(base, note="skipped: the corpus store has no report_id column")
    drawn = [{_clean(f.get("category")) for f in fs} - {None} for fs in findings]

    def severity_of(i: int) -> dict[str, str]:
        # the categories drawn in the image whose severity its report states
        said = stated.get(report_ids[i]) or {}
        return {c: said[c] for c in drawn[i] if said.get(c) in SEVERITY_ORDER}

    of = {split: {int(i): severity_of(int(i)) for i in r} for split, r in rows.items()}
    minimum = settings.severity_min_count
    test = Counter((sev, c) for sevs in of["test"].values() for c, sev in sevs.items())
    per_category = Counter(c for sevs in of["test"].values() for c in sevs)
    pairs, skipped = [], []
    for sev, c in sorted(test, key=lambda p: (p[1], SEVERITY_ORDER[p[0]])):
        negatives = per_category[c] - test[(sev, c)]
        if test[(sev, c)] >= minimum and negatives >= minimum:
            pairs.append((sev, c))
        else:
            skipped.append(f"{sev} {c} ({test[(sev, c)]} test images, {negatives} negatives)")
    ranked = sorted(c for c, k in per_category.items() if k >= minimum and len({s for s, cc in test if cc == c}) >= 2)
    categories = sorted({c for _, c in pairs} | set(ranked))
    keep = {
        split: np.array([i for i in r if any(c in of[split][int(i)] for c in categories)], dtype=np.int64)
        for split, r in rows.items()
    }

    def label(i: int, split: str, sev: str, c: str) -> float:
        said = of[split][i].get(c)
        return float("nan") if said is None else float(said == sev)

    labels = {
        split: np.array([[label(int(i), split, s_, c) for s_, c in pairs] for i in r], dtype=np.float32).reshape(
            len(r), len(pairs)
        )
        for split, r in keep.items()
    }
    ordinal = {
        split: {
            c: np.array([SEVERITY_ORDER.get(of[split][int(i)].get(c), np.nan) for i in r], dtype=np.float64)
            for c in ranked
        }
        for split, r in keep.items()
    }
    note = (
        f"stated severities only, negatives = same category at another stated severity; classes need {minimum} "
        f"test images and {minimum} negatives; Kendall tau over {len(ranked)} categories"
    )
    if skipped:
        note += "; skipped: " + ", ".join(skipped)
    if not pairs:
        note = f"skipped: no class has {minimum} test images and {minimum} negatives; " + note
    return replace(
        base,
        classes=[ClassSpec(f"{s_} {c}", c, s_) for s_, c in pairs],
        rows=keep,
        labels=labels,
        ordinal=ordinal,
        note=note,
    )


def corpus_sets(
    store: ImageStore, settings: CorpusSetsSettings, stated: dict[str, dict[str, str | None]] | None = None
) -> list[EvalSet]:
    """The single-label, multi-label and fine-grained sets of the corpus store's held-out images, and
    the severity set (``stated``: :func:`stated_severities`; None: reported as skipped)."""
    findings = _findings(store)
    rows = _split_rows(store)
    cats = [{_clean(f.get("category")) for f in fs} - {None} for fs in findings]
    out = []

    # single-label: exactly one of the listed classes
    single = list(settings.single_label_classes)
    single_rows, single_labels = {}, {}
    for split, r in rows.items():
        keep, onehots = [], []
        for i in r:
            present = [k for k, c in enumerate(single) if (not cats[i] if c == NORMAL else c in cats[i])]
            if len(present) == 1:
                keep.append(i)
                onehot = np.zeros(len(single), dtype=np.float32)
                onehot[present[0]] = 1.0
                onehots.append(onehot)
        single_rows[split] = np.asarray(keep, dtype=np.int64)
        single_labels[split] = np.array(onehots, dtype=np.float32).reshape(-1, len(single))
    out.append(
        EvalSet(
            "corpus_single",
            "single_label",
            [ClassSpec(c, c) for c in single],
            store,
            single_rows,
            single_labels,
            source="corpus",
        )
    )

    # multi-label: every held-out image
    multi = list(settings.multi_label_classes)

    def multi_hot(i: int) -> list[float]:
        return [float(not cats[i]) if c == NORMAL else float(c in cats[i]) for c in multi]

    out.append(
        EvalSet(
            name="corpus_multi",
            kind="multi_label",
            classes=[ClassSpec(c, c) for c in multi],
            store=store,
            rows=rows,
            labels={
                s: np.array([multi_hot(i) for i in r], dtype=np.float32).reshape(-1, len(multi))
                for s, r in rows.items()
            },
            source="corpus",
        )
    )

    # fine-grained: severity+category pairs frequent enough in both splits
    pairs_of = [{(_clean(f.get("severity")), _clean(f.get("category"))) for f in fs} for fs in findings]
    allowed = set(settings.fine_grained_categories) if settings.fine_grained_categories is not None else None
    counts = {
        split: Counter(p for i in r for p in pairs_of[i] if p[0] is not None and p[1] is not None)
        for split, r in rows.items()
    }
    pairs = sorted(
        (
            p
            for p in set(counts["test"]) & set(counts["validate"])
            if min(counts[s][p] for s in HELD_OUT_SPLITS) >= settings.fine_grained_min_count
            and (allowed is None or p[1] in allowed)
        ),
        key=lambda p: (p[1], p[0]),  # by category, then severity
    )
    if not pairs:
        log.warning(
            "%s: no severity+category pair has %d images in both validate and test; corpus_fine is empty",
            store.root,
            settings.fine_grained_min_count,
        )

    def fine_label(i: int, severity: str, category: str) -> float:
        if (severity, category) in pairs_of[i]:
            return 1.0
        if (None, category) in pairs_of[i]:
            return float("nan")
        return 0.0

    out.append(
        EvalSet(
            name="corpus_fine",
            kind="multi_label",
            classes=[ClassSpec(f"{s} {c}", c, s) for s, c in pairs],
            store=store,
            rows=rows,
            labels={
                split: np.array([[fine_label(i, s, c) for s, c in pairs] for i in r], dtype=np.float32).reshape(
                    -1, len(pairs)
                )
                for split, r in rows.items()
            },
            source="corpus",
        )
    )
    out.append(fg_set(store, settings, rows, pairs_of))
    out.append(severity_set(store, settings, rows, stated))
    return out


def fg_set(
    store: ImageStore,
    settings: CorpusSetsSettings,
    rows: dict[str, np.ndarray],
    pairs_of: list[set[tuple[str | None, str | None]]],
) -> EvalSet:
    """The MIMIC-FG-style set (module doc): severity + category classes over the images that have
    one of its categories, so same-category findings at another severity are negatives."""
    held_out = np.concatenate([rows[s] for s in HELD_OUT_SPLITS])
    counts = Counter(p for i in held_out for p in pairs_of[i] if p[0] is not None and p[1] is not None)
    by_category: dict[str, Counter] = {}
    for (severity, category), k in counts.items():
        by_category.setdefault(category, Counter())[severity] = k
    # categories with at least two severities (else there is nothing fine-grained), most images first
    ranked = sorted(
        (c for c, sev in by_category.items() if len(sev) >= 2), key=lambda c: (-sum(by_category[c].values()), c)
    )[: settings.fg_categories]
    pairs = [
        (sev, c)
        for c in ranked
        for sev, _ in sorted(by_category[c].items(), key=lambda kv: (-kv[1], kv[0]))[: settings.fg_severities]
    ]
    chosen = set(ranked)
    keep = {
        split: np.array([i for i in r if any(p[1] in chosen for p in pairs_of[i])], dtype=np.int64)
        for split, r in rows.items()
    }
    if not pairs:
        log.warning(
            "%s: no category has findings at two severities among held-out images; corpus_fg is empty", store.root
        )

    def label(i: int, severity: str, category: str) -> float:
        if (severity, category) in pairs_of[i]:
            return 1.0
        if (None, category) in pairs_of[i]:
            return float("nan")
        return 0.0

    return EvalSet(
        name="corpus_fg",
        kind="multi_label",
        classes=[ClassSpec(f"{s} {c}", c, s) for s, c in pairs],
        store=store,
        rows=keep,
        labels={
            split: np.array([[label(i, s, c) for s, c in pairs] for i in r], dtype=np.float32).reshape(-1, len(pairs))
            for split, r in keep.items()
        },
        source="corpus",
        note=f"{len(ranked)} categories x up to {settings.fg_severities} severities; images with one of the categories",
    )


NEUTRAL_NAME = "condition x"


def mismatched_copy(s: EvalSet, mismatch: dict[str, str]) -> EvalSet | None:
    """The unseen-class control of ``s``: each class named in ``mismatch`` takes the explanation of
    the category given there (None when ``s`` has none of them)."""
    swap = {c.name: mismatch[c.name] for c in s.classes if c.name in mismatch}
    if not swap:
        return None
    what = "; ".join(f"'{k}' scored with the explanation of '{v}'" for k, v in swap.items())
    return replace(
        s,
        name=f"{s.name}_mismatched",
        text_variant=ClassTextVariant.triplet_explanation.value,
        explain_as=swap,
        focus=tuple(swap),
        note=f"control: {what} (the phantom draws the class from its own explanation)",
    )


def control_copies(s: EvalSet, mismatch: dict[str, str]) -> list[EvalSet]:
    """The unseen-class control as a 2 x 2 (class name real / neutral x explanation own / mismatched):
    ``{set}_mismatched`` (real name, another category's explanation), ``{set}_neutral`` (the name
    replaced by "condition x", its own explanation) and ``{set}_neutral_mismatched``. Each, and ``s``
    itself (real x own), reports the controlled class alone (``focus``: ``{set}_class_auc``)."""
    mismatched = mismatched_copy(s, mismatch)
    if mismatched is None:
        return []
    names = dict.fromkeys(mismatched.focus, NEUTRAL_NAME)
    neutral = replace(
        s,
        name=f"{s.name}_neutral",
        text_variant=ClassTextVariant.triplet_explanation.value,
        text_names=names,
        focus=mismatched.focus,
        note="control: " + "; ".join(f"'{k}' named '{NEUTRAL_NAME}', its own explanation" for k in names),
    )
    both = replace(
        mismatched,
        name=f"{s.name}_neutral_mismatched",
        text_names=names,
        note="control: "
        + "; ".join(
            f"'{k}' named '{NEUTRAL_NAME}' with the explanation of '{v}'" for k, v in mismatched.explain_as.items()
        ),
    )
    return [mismatched, neutral, both]


def load_eval_sets(
    set_dirs: Iterable[str | Path],
    settings: EvaluationConfig,
    stated: dict[str, dict[str, str | None]] | None = None,
) -> list[EvalSet]:
    """Every evaluation set of the given store folders (a corpus store gives its five sets), with the
    ``{set}_by_category`` copies asked for by ``compare_category_text`` and the ``{set}_mismatched``
    controls of ``mismatched_explanation``. Empty sets are dropped with a warning (corpus_severity
    is kept, with its note). ``stated``: the reports' stated severities (:func:`stated_severities`)."""
    from medfilip.images.store import ImageStore

    sets: list[EvalSet] = []
    for d in set_dirs:
        store = ImageStore.open(d)
        if "findings" in store.index.column_names and not store.label_names:
            if settings.corpus.enabled:
                sets.extend(corpus_sets(store, settings.corpus, stated))
        else:
            sets.append(downstream_set(store, Path(d).name))
    by_category = set(settings.compare_category_text)
    out = []
    for s in sets:
        if (not s.classes or s.n("test") == 0) and not s.keep_empty:
            log.warning(
                "%s: set %s has %d classes and %d test images; left out",
                s.store.root,
                s.name,
                len(s.classes),
                s.n("test"),
            )
            continue
        controls = control_copies(s, dict(settings.mismatched_explanation))
        if controls:
            s = replace(s, focus=controls[0].focus)  # real name x own explanation: the class alone too
        out.append(s)
        if s.name in by_category:
            out.append(
                replace(
                    s,
                    name=f"{s.name}_by_category",
                    text_variant=ClassTextVariant.category.value,
                    note="the same images scored with the category name alone",
                )
            )
        out.extend(controls)
    return out
