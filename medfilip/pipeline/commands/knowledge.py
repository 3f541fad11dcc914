"""``medfilip knowledge``: validate the IKI dictionary against the vocabulary, or show one entry."""

from __future__ import annotations

import argparse
import textwrap

from medfilip.knowledge.dictionary import KnowledgeError, load_knowledge
from medfilip.pipeline.config import PipelineConfig


def cmd_knowledge(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.extraction.vocabulary import configured_vocabulary

    vocabulary = list(configured_vocabulary(cfg).by_name)
    knowledge = load_knowledge(cfg.knowledge.path, required=vocabulary)

    if args.show:
        try:
            entry = knowledge.entry(args.show)
        except KeyError as err:
            raise KnowledgeError(err.args[0]) from None

        def wrap(text: str) -> str:
            return textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="  ")

        print(f"{entry.category}" + ("" if entry.category == args.show else f"  (resolved from {args.show!r})"))
        print("explanation:\n" + wrap(entry.explanation))
        print("context:\n" + wrap(entry.context))
        print("synonyms:\n" + wrap(", ".join(entry.synonyms) or "-"))
        print("label:\n" + wrap(f"{entry.category}, where {entry.category} is {entry.explanation}"))
        return 0

    extra = [c for c in knowledge.categories if c not in set(vocabulary)]
    print(
        f"{knowledge.path}: OK, {len(knowledge)} entries ({len(knowledge) - len(extra)} vocabulary categories, "
        f"{len(extra)} knowledge-only), {knowledge.synonym_count()} synonyms, version {knowledge.version}"
    )
    if args.check and extra:
        print(f"knowledge-only categories: {', '.join(extra)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "knowledge", help="validate the IKI knowledge dictionary against the vocabulary, or show an entry"
    )
    s.add_argument(
        "--check",
        action="store_true",
        help="validate and also list the knowledge-only categories (exit 1 on any problem)",
    )
    s.add_argument(
        "--show",
        metavar="CATEGORY",
        default=None,
        help="print one entry (a category name or synonym) and the label it yields",
    )
    s.set_defaults(func=cmd_knowledge)
