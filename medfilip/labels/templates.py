"""Structured label text: the paper's template and the variants the ablation needs.

``"{severity} {location} {category}, where {category} is {explanation}"`` (MedFILIP eq. 10) is the
full label (fine-grained triplet + image-specific knowledge). The ablation drops parts of it:

- ``category``: "{category}"                                  (no FG, no IKI)
- ``triplet``: "{severity} {location} {category}"             (FG, no IKI)
- ``triplet_explanation``: the full template                 (FG + IKI; MedFILIP)
- ``report``: the report text itself                          (no Entity; ConVIRT-style)

Empty fields are skipped, so a triplet without severity reads "left base atelectasis".

Evaluation texts (:func:`eval_text`) are these variants of a class, plus ``report_sentence``
("There is mild left base atelectasis."), the form a run trained on report text reads.
"""

from __future__ import annotations

from typing import Any

from medfilip.names import EVAL_TEXT_OF_LABEL_VARIANT, EvalText, LabelVariant, values

VARIANTS = values(LabelVariant)


def _clean(value: str | None) -> str:
    return " ".join(value.split()) if value else ""


def render_label(
    category: str,
    severity: str | None = None,
    location: str | None = None,
    explanation: str | None = None,
    variant: str = LabelVariant.triplet_explanation.value,
    *,
    negated: bool = False,
    report_text: str | None = None,
) -> str:
    """The label text of one finding.

    ``negated`` findings read "no {category}" whatever the variant (severity, location and
    explanation describe something that is not there). ``variant="report"`` returns the report text.
    """
    variant = LabelVariant(variant).value
    if variant == LabelVariant.report.value:
        if not report_text or not report_text.strip():
            raise ValueError("variant 'report' needs the report text")
        return _clean(report_text)
    category = _clean(category)
    if not category:
        raise ValueError("a label needs a category")
    if negated:
        return f"no {category}"
    if variant == LabelVariant.category.value:
        return category
    head = " ".join(p for p in (_clean(severity), _clean(location), category) if p)
    if variant == LabelVariant.triplet.value:
        return head
    explanation = _clean(explanation).rstrip(".")
    if not explanation:
        return head
    return f"{head}, where {category} is {explanation}"


def report_sentence(
    category: str, severity: str | None = None, location: str | None = None, *, negated: bool = False
) -> str:
    """A report-style sentence of one finding: "There is {severity} {location} {category}." ("No {category}."
    when negated): the evaluation text of runs trained on report text (they never read the template)."""
    category = _clean(category)
    if not category:
        raise ValueError("a label needs a category")
    if negated:
        return f"No {category}."
    head = " ".join(p for p in (_clean(severity), _clean(location), category) if p)
    return f"There is {head}."


def eval_text(
    category: str,
    severity: str | None = None,
    location: str | None = None,
    explanation: str | None = None,
    variant: str = EvalText.triplet_explanation.value,
) -> str:
    """The evaluation text of a class in ``variant`` (an :class:`EvalText`): the label template's
    variants, or the report-style sentence. ``explanation`` is used by ``triplet_explanation`` only."""
    variant = EvalText(variant).value
    if variant == EvalText.report_sentence.value:
        return report_sentence(category, severity, location)
    if variant != EvalText.triplet_explanation.value:
        explanation = None
    return render_label(category, severity=severity, location=location, explanation=explanation, variant=variant)


def severity_scale_input(cfg) -> list[str]:
    """The labels rule's severity-scale input: resources/vocabulary/severity_scale.yaml when
    ``labels.severity_scale`` is three_level, else none (the labels do not read it)."""
    if cfg.labels.severity_scale != "three_level":
        return []
    from medfilip.extraction.vocabulary import SEVERITY_SCALE_FILE

    return [f"{cfg.extraction.rules.vocabulary_dir}/{SEVERITY_SCALE_FILE}"]


def run_eval_text(run: Any) -> str | None:
    """The text form a run is scored with beside the common template: its ``eval_text`` if set, else
    the form of its label variant (category, triplet, full template; report -> the report-style
    sentence). ``run``: a RunSettings, a dict of one, or None (unknown run: None)."""
    if run is None:
        return None
    get = run.get if isinstance(run, dict) else lambda k, d=None: getattr(run, k, d)
    chosen = get("eval_text", None)
    if chosen is not None:
        return EvalText(chosen).value
    variant = get("label_variant", None)
    return EVAL_TEXT_OF_LABEL_VARIANT.get(str(variant)) if variant is not None else None
