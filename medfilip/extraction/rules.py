"""The offline, deterministic ``rules`` extraction backend.

Per sentence: find category mentions (longest match wins across categories),
then give each mention a polarity from NegEx-style trigger scopes, a severity
from the nearest degree word, and a location from the nearest laterality and
region words. All word lists live in ``resources/vocabulary/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medfilip.extraction.backend import ExtractionBackend, ExtractionResult, ReportText
from medfilip.extraction.schema import Polarity, Triplet
from medfilip.extraction.vocabulary import Vocabulary

# Bump when the engine's behaviour changes; the vocabulary hash covers the word lists.
ENGINE_VERSION = "rules-1"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s+(?=\d{1,2}[.)]\s+[A-Za-z])")
_HARD_BREAK = re.compile(r"[;:]")
_WORD = re.compile(r"[\w/-]+")
POST_SCOPE_WORDS = 6


def split_sentences(text: str) -> list[str]:
    """Sentences of a report; keeps '2.5 cm' and 'e.g.' together (no space after the dot)."""
    parts = [s.strip() for s in _SENTENCE_END.split(text)]
    out = []
    for s in parts:
        s = re.sub(r"^\d{1,2}[.)]\s+", "", s)  # "1. Mild cardiomegaly." -> "Mild cardiomegaly."
        if s and re.search(r"[A-Za-z]", s):
            out.append(s)
    return out


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    category: str
    order: int


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def _clause(m: Mention, spans: list[Span], length: int) -> tuple[int, int]:
    """Start and end of the clause holding mention ``m``: the nearest clause breaks around it."""
    breaks = [s for s in spans if s.kind == "clause_breaks"]
    start = max((b.end for b in breaks if b.end <= m.start), default=0)
    end = min((b.start for b in breaks if b.start >= m.end), default=length)
    return start, end


class RulesExtractor:
    """Sentence-level extraction with a compiled :class:`Vocabulary`."""

    def __init__(self, vocabulary: Vocabulary):
        self.vocab = vocabulary

    # -- mentions -----------------------------------------------------------------
    def mentions(self, low: str) -> list[Mention]:
        found = [
            Mention(m.start(), m.end(), cat.name, order)
            for order, cat in enumerate(self.vocab.categories)
            for m in cat.regex.finditer(low)
        ]
        found.sort(key=lambda m: (-(m.end - m.start), m.order, m.start))
        chosen: list[Mention] = []
        for m in found:
            if not any(
                _overlaps(m.start, m.end, c.start, c.end) and m.category not in self.vocab.by_name[c.category].keeps
                for c in chosen
            ):
                chosen.append(m)
        return sorted(chosen, key=lambda m: m.start)

    def triggers(self, low: str, mentions: list[Mention]) -> list[Span]:
        rx = self.vocab.trigger_regexes
        pseudo = [(m.start(), m.end()) for m in rx["pseudo"].finditer(low)] if rx["pseudo"] else []
        spans: list[Span] = []
        for kind in (
            "pre_negation",
            "post_negation",
            "pre_uncertain",
            "post_uncertain",
            "alternatives",
            "clause_breaks",
        ):
            if rx.get(kind) is None:
                continue
            for m in rx[kind].finditer(low):
                if any(_overlaps(m.start(), m.end(), a, b) for a, b in pseudo):
                    continue
                if any(_overlaps(m.start(), m.end(), x.start, x.end) for x in mentions):
                    continue  # "free" in "free air" is part of a finding, not a trigger
                spans.append(Span(m.start(), m.end(), kind))
        spans.extend(Span(m.start(), m.end(), "clause_breaks") for m in _HARD_BREAK.finditer(low))
        return sorted(spans, key=lambda s: s.start)

    # -- attributes ---------------------------------------------------------------
    def polarity(self, low: str, i: int, mentions: list[Mention], spans: list[Span]) -> Polarity:
        m = mentions[i]
        clause_start, clause_end = _clause(m, spans, len(low))
        prev_end = mentions[i - 1].end if i > 0 else 0
        next_start = mentions[i + 1].start if i + 1 < len(mentions) else len(low)
        negated = uncertain = False
        for s in spans:
            before = clause_start <= s.start and s.end <= m.start
            # a trigger after the finding reaches back a few words only (as in NegEx)
            after = (
                m.end <= s.start
                and s.end <= clause_end
                and len(_WORD.findall(low[m.end : s.start])) <= POST_SCOPE_WORDS
            )
            if s.kind == "pre_negation" and before or s.kind == "post_negation" and after:
                negated = True
            elif (
                s.kind == "pre_uncertain"
                and before
                or s.kind == "post_uncertain"
                and after
                or s.kind == "alternatives"
                and (prev_end <= s.start and s.end <= m.start or m.end <= s.start and s.end <= next_start)
            ):
                uncertain = True
        if negated:
            return Polarity.negated
        return Polarity.uncertain if uncertain else Polarity.present

    def severity(self, low: str, i: int, mentions: list[Mention], spans: list[Span]) -> str | None:
        m = mentions[i]
        inside = list(self.vocab.severity_regex.finditer(low, m.start, m.end))
        if inside:
            return self.vocab.severity_of[inside[0].group(0)].canonical
        lo = max(mentions[i - 1].end if i > 0 else 0, _clause(m, spans, len(low))[0])
        window = low[lo : m.start]
        words = list(_WORD.finditer(window))[-5:]
        pre = list(self.vocab.severity_regex.finditer(window, words[0].start() if words else len(window)))
        if pre:
            return self.vocab.severity_of[pre[-1].group(0)].canonical
        hi = mentions[i + 1].start if i + 1 < len(mentions) else len(low)
        post = re.match(
            r"\s*(?:is|are|appears?|remains?|seems?)?\s*(?:(?:now|still|very|again|overall|only) )?", low[m.end : hi]
        )
        rest = low[m.end + (post.end() if post else 0) : hi]
        hit = self.vocab.severity_regex.match(rest)
        return self.vocab.severity_of[hit.group(0)].canonical if hit else None

    def location(self, low: str, i: int, mentions: list[Mention], spans: list[Span]) -> str | None:
        m = mentions[i]
        clause_start, clause_end = _clause(m, spans, len(low))
        lo = max(mentions[i - 1].end if i > 0 else 0, clause_start)
        hi = min(mentions[i + 1].start if i + 1 < len(mentions) else len(low), clause_end)
        laterality = region = None
        # nearest first: inside the mention, then the words before it, then after it
        for a, b, reverse in ((m.start, m.end, False), (lo, m.start, True), (m.end, hi, False)):
            seg = low[a:b]
            found: list[tuple[int, str | None, str | None]] = []
            if self.vocab.compound_regex is not None:
                for c in self.vocab.compound_regex.finditer(seg):
                    spec = self.vocab.compounds[c.group(0)]
                    found.append((c.start(), spec.get("laterality"), spec.get("region")))
            for lm in self.vocab.laterality_regex.finditer(seg):
                found.append((lm.start(), self.vocab.laterality_of[lm.group(0)], None))
            for start, _end, reg in self.vocab.region_of(seg):
                found.append((start, None, reg))
            found.sort(key=lambda t: t[0], reverse=reverse)
            for _, lat, reg in found:
                laterality = laterality or lat
                region = region or reg
            if laterality and region:
                break
        if region is None:
            region = self.vocab.by_name[m.category].location
        parts = [p for p in (laterality, region) if p]
        return self.vocab.tidy_location(" ".join(parts) or None, m.category)

    # -- public -------------------------------------------------------------------
    def extract_sentence(self, sentence: str) -> list[Triplet]:
        low = sentence.lower()
        mentions = self.mentions(low)
        if not mentions:
            return []
        spans = self.triggers(low, mentions)
        return [
            Triplet(
                severity=self.severity(low, i, mentions, spans),
                location=self.location(low, i, mentions, spans),
                category=sentence[m.start : m.end],
                polarity=self.polarity(low, i, mentions, spans),
                sentence=sentence,
            )
            for i, m in enumerate(mentions)
        ]

    def extract_text(self, text: str) -> list[Triplet]:
        return [t for s in split_sentences(text) for t in self.extract_sentence(s)]


class RulesBackend(ExtractionBackend):
    name = "rules"

    def __init__(self, vocabulary_dir: str | Path):
        self.vocabulary = Vocabulary.load(vocabulary_dir)
        self.extractor = RulesExtractor(self.vocabulary)

    @property
    def model(self) -> str:
        return ENGINE_VERSION

    @property
    def version(self) -> str:
        return self.vocabulary.version

    def extract(self, reports: Iterable[ReportText]) -> Iterator[ExtractionResult]:
        for r in reports:
            t0 = time.perf_counter()
            triplets = self.extractor.extract_text(r.text)
            yield ExtractionResult(r.report_id, "ok", tuple(triplets), latency_s=time.perf_counter() - t0)
