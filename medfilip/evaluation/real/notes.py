"""The ieee8023 clinical notes (a tiny real image-text set) through the extraction stage.

Each note goes through an extraction backend (the rules engine; an OpenAI-compatible one such as the
local LLM when configured) exactly as a report does, its categories are normalised to the canonical
vocabulary, and the present entities are set against the metadata's ``finding`` column: does a
COVID-19 or other-pneumonia note yield a pneumonia-like entity, and does a "No Finding" note not?
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

# canonical categories that stand for an infection / airspace disease in a note
PNEUMONIA_LIKE = frozenset(
    {"pneumonia", "covid-19 pneumonia", "consolidation", "opacity", "infiltrate", "airspace disease", "lung opacity"}
)


def finding_group(finding: str) -> str:
    if "COVID-19" in finding:
        return "COVID-19"
    if finding == "No Finding":
        return "No Finding"
    if finding == "ARDS":
        return "ARDS"
    return "other pneumonia"


def extract_notes(notes: pd.DataFrame, backend: Any, normalise) -> pd.DataFrame:
    """One row per note (``notes``: image_id, patientid, finding, clinical_notes): the present,
    negated and uncertain canonical categories the backend found (``normalise``: raw category ->
    canonical or None), and whether a pneumonia-like entity is present."""
    from medfilip.extraction.backend import ReportText

    notes = notes[notes["clinical_notes"].str.strip() != ""].reset_index(drop=True)
    reports = [ReportText(str(i), text) for i, text in enumerate(notes["clinical_notes"])]
    by_id = {r.report_id: r for r in backend.extract(reports)}
    rows = []
    for i, note in notes.iterrows():
        result = by_id.get(str(i))
        kinds: dict[str, set[str]] = {"present": set(), "negated": set(), "uncertain": set()}
        status = "missing" if result is None else result.status
        for t in result.triplets if result is not None else ():
            category = normalise(t.category) or t.category
            kinds.setdefault(str(t.polarity), set()).add(category)
        rows.append(
            {
                "image_id": note["image_id"],
                "patientid": note["patientid"],
                "finding": note["finding"],
                "group": finding_group(note["finding"]),
                "backend": backend.name,
                "status": status,
                "present": "; ".join(sorted(kinds["present"])),
                "negated": "; ".join(sorted(kinds["negated"])),
                "uncertain": "; ".join(sorted(kinds["uncertain"])),
                "pneumonia_like": bool(kinds["present"] & PNEUMONIA_LIKE),
                "n_chars": len(note["clinical_notes"]),
            }
        )
    return pd.DataFrame(rows)


def agreement(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Per backend and finding group: notes, share with a pneumonia-like entity, share with none."""
    out = []
    for table in tables:
        for (backend, group), part in table.groupby(["backend", "group"]):
            out.append(
                {
                    "backend": backend,
                    "group": group,
                    "notes": len(part),
                    "pneumonia_like_share": round(float(part["pneumonia_like"].mean()), 3),
                    "no_entity_share": round(float((part["present"] == "").mean()), 3),
                    "failed": int((part["status"] != "ok").sum()),
                }
            )
    return pd.DataFrame(out)
