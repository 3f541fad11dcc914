"""Every relative link in README.md, config/README.md and docs/*.md points to a file that exists (and to a
heading of it, when it names one), or to a results/ path the pipeline writes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def written_by_the_pipeline(path: str) -> bool:
    """A results/ path some rule or module spells (a figure or table the pipeline writes)."""
    name = path.removeprefix("results/")
    sources = [*ROOT.glob("workflow/**/*.smk"), *ROOT.glob("medfilip/**/*.py")]
    return any(name in source.read_text(encoding="utf-8") for source in sources)


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """The links of a page (its text, or ``text`` given for it) that do not resolve, with the reason."""
    text = page.read_text(encoding="utf-8") if text is None else text
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        relative = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else path
        if relative.startswith("results/"):
            if not written_by_the_pipeline(relative):
                broken.append(f"{target} (no rule writes it)")
            continue
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    return broken


def test_every_relative_link_resolves():
    assert len(PAGES) > 5
    broken = {page.relative_to(ROOT).as_posix(): links for page in PAGES if (links := broken_links(page))}
    assert broken == {}


def test_a_broken_link_or_heading_is_found():
    page = ROOT / "docs" / "a-page-that-is-not-committed.md"
    text = "[ok](results.md#what-the-phantom-can-and-cannot-show) [gone](nope.md) [bad](results.md#no-such-heading)\n"
    text += "![fig](../results/figures/zeroshot.png) ![not written](../results/figures/nothing-writes-this.png)\n"
    assert broken_links(page, text) == [
        "nope.md (no such file)",
        "results.md#no-such-heading (no such heading)",
        "../results/figures/nothing-writes-this.png (no rule writes it)",
    ]


def test_readme_fits_a_screen_and_leads_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_block = FENCE.search(text).group(0)
    assert "make demo" in first_block and "make test" in first_block
