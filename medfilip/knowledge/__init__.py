"""The image-specific knowledge dictionary (IKI): a visual explanation, context and synonyms per category."""

from medfilip.knowledge.dictionary import (
    KnowledgeDictionary,
    KnowledgeEntry,
    KnowledgeError,
    load_knowledge,
    normalise_name,
)

__all__ = ["KnowledgeDictionary", "KnowledgeEntry", "KnowledgeError", "load_knowledge", "normalise_name"]
