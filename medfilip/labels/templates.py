"""Structured label text: the paper's template and the variants the ablation needs.

``"{severity} {location} {category}, where {category} is {explanation}"`` (MedFILIP eq. 10) is the
full label (fine-grained triplet + image-specific knowledge). The ablation drops parts of it:

- ``category``: "{category}"                                  (no FG, no IKI)
- ``triplet``: "{severity} {location} {category}"             (FG, no IKI)
- ``triplet_explanation``: the full template                 (FG + IKI; MedFILIP)
- ``report``: the report text itself                          (no Entity; ConVIRT-style)

Empty fields are skipped, so a triplet without severity reads "left base atelectasis".
"""

from __future__ import annotations

from medfilip.names import LabelVariant, values

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
