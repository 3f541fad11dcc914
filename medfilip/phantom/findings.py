"""Every drawn finding gets a severity and a location, so a fine-grained effect can be measured.

A report often names a finding without its severity ("atelectasis") or location. The phantom
still has to draw it somewhere at some size, and the corpus store records what it drew, so the
drawn severity and location are decided here, before rendering, and written into the store's
``findings`` records (the fine-grained evaluation set reads them):

- **severity**: the stated one; else ``DEFAULT_SEVERITY`` (``moderate``, the middle of the
  mild / moderate / severe scale the MeSH annotations and the FG set use).
- **location**: the stated one; else the category's typical zone from the appearance table
  (``medfilip.phantom.appearance``: "lower lobe" for atelectasis, "heart" for cardiomegaly). A
  zone that has sides but no side word gets one drawn from the image seed and the category
  ("lower lobe" -> "left lower lobe"), as the renderer would. Findings drawn as a fixed change of
  anatomy (``scope: fixed``, e.g. cardiomegaly) keep their unsided zone.

Categories without an appearance entry are left as they are (the renderer does not draw them).
Images rendered from complete findings look as they would have (the renderer resolved the same
defaults itself), except that an unstated severity is drawn at "moderate" (scale 0.70, not 0.65).
"""

from __future__ import annotations

import numpy as np

from medfilip.phantom.anatomy import stable_seed

DEFAULT_SEVERITY = "moderate"

FindingTuple = tuple[str, str | None, str | None]  # (category, location, severity), as the corpus keeps them


def _needs_side(location: str) -> bool:
    from medfilip.phantom.regions import SIDE_WORDS, SIDED, parse_location

    words = location.strip().lower().split()
    if words and words[0] in SIDE_WORDS:
        return False
    _, zone = parse_location(location)
    return zone in SIDED


def complete_finding(category: str, location: str | None, severity: str | None, seed: int) -> FindingTuple:
    """(category, location, severity) with the documented defaults filled in (see the module doc)."""
    from medfilip.phantom.appearance import APPEARANCE

    entry = APPEARANCE.get(category.strip().lower()) if category else None
    if entry is None:
        return (category, location, severity)
    severity = severity or DEFAULT_SEVERITY
    scope = entry.get("scope", "location")
    if not location:
        location = entry.get("zone", "lung")
    if scope != "fixed" and _needs_side(location):
        rng = np.random.default_rng(stable_seed(seed, "side", category))
        location = f"{('right', 'left')[int(rng.integers(2))]} {location}"
    return (category, location, severity)


def complete_findings(findings: tuple[FindingTuple, ...] | list[FindingTuple], seed: int) -> tuple[FindingTuple, ...]:
    """Every finding of one image completed (duplicates that become equal are kept once)."""
    out: list[FindingTuple] = []
    for category, location, severity in findings:
        done = complete_finding(category, location, severity, seed)
        if done not in out:
            out.append(done)
    return tuple(out)
