"""The record types every report reader yields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportImage:
    image_id: str
    path: str
    view: str | None = None


@dataclass(frozen=True)
class Report:
    report_id: str
    source: str
    subject_id: str
    study_id: str
    findings: str
    impression: str
    split: str
    images: tuple[ReportImage, ...] = ()
    annotations: tuple[str, ...] = ()  # human labels shipped with the corpus (IU-Xray manual MeSH)

    @property
    def text(self) -> str:
        """FINDINGS then IMPRESSION, the text every extractor sees."""
        return " ".join(part for part in (self.findings, self.impression) if part)


@dataclass(frozen=True)
class Reject:
    """A report that could not be used, with where it came from and why."""

    source: str
    location: str  # file (and member) the record came from
    report_id: str | None
    reason: str
