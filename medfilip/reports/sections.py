"""Section parsing and de-identification clean-up of free-text radiology reports."""

from __future__ import annotations

import re

# IU-Xray replaces PHI by "XXXX" (also glued to a word: "4XXXX", "XXXXPM"), MIMIC-CXR by "___".
_DEID = re.compile(r"\bX{2,}\b|X{4,}|_{2,}")
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:])")
_REPEATED_PUNCT = re.compile(r"([.,;:])(?:\s*\1)+")
_WORD = re.compile(r"[^\W_]")

# A section header at the start of a line: upper-case words ending in a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{2,40}):", re.MULTILINE)

FINDINGS_HEADERS = ("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION")
IMPRESSION_HEADERS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "SUMMARY", "OPINION")


def clean_text(text: str | None) -> str:
    """Drop de-identification tokens and normalise whitespace, keeping sentence punctuation."""
    if not text:
        return ""
    text = _DEID.sub(" ", text)
    text = text.replace("\r", "\n")
    text = " ".join(line.strip() for line in text.split("\n") if line.strip())
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    # A removed token can leave a sentence opening with punctuation, or nothing but punctuation.
    text = text.lstrip(" ,;:.").rstrip(" ,;:")
    return text if _WORD.search(text) else ""


def split_sections(text: str) -> dict[str, str]:
    """Split a report on upper-case ``HEADER:`` lines; text before the first header goes under ''."""
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    if not matches:
        return {"": text}
    if matches[0].start() > 0:
        sections[""] = text[: matches[0].start()]
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = " ".join(m.group(1).split())
        body = text[m.end() : end]
        sections[name] = (sections.get(name, "") + "\n" + body) if name in sections else body
    return sections


def findings_and_impression(text: str) -> tuple[str, str]:
    """Return cleaned (findings, impression) of a MIMIC-style free-text report.

    Falls back, as the MIMIC-CXR authors' section script does, to the last
    paragraph when neither header exists.
    """
    sections = split_sections(text)
    findings = next((sections[h] for h in FINDINGS_HEADERS if h in sections), "")
    impression = next((sections[h] for h in IMPRESSION_HEADERS if h in sections), "")
    if not findings.strip() and not impression.strip():
        impression = _last_content_paragraph(text)
    return clean_text(findings), clean_text(impression)


NON_CONTENT_HEADERS = frozenset(
    {
        "FINAL REPORT",
        "EXAMINATION",
        "EXAM",
        "INDICATION",
        "INDICATIONS",
        "HISTORY",
        "CLINICAL HISTORY",
        "COMPARISON",
        "COMPARISONS",
        "TECHNIQUE",
        "REASON FOR EXAM",
        "NOTIFICATION",
        "WET READ",
    }
)


# The title line MIMIC-CXR reports open with; it has no colon, so it is not a header.
_TITLE = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE)


def _last_content_paragraph(text: str) -> str:
    """The last paragraph that is not an administrative section (indication, technique...).

    Within a paragraph, administrative sections and the ``FINAL REPORT`` title
    are skipped too, so a report holding nothing but those yields "".
    """
    for paragraph in reversed([p for p in re.split(r"\n\s*\n", text) if p.strip()]):
        for name, body in reversed(list(split_sections(paragraph).items())):
            if name in NON_CONTENT_HEADERS:
                continue
            body = _TITLE.sub("", body)
            if body.strip():
                return body
    return ""
