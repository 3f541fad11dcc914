"""E_sim label embeddings: each unique label string embedded once, cached in Parquet by (model, text).

Importing this package stays light (medfilip.pipeline.config imports its settings): the public names
below load their modules, and with them numpy/pyarrow, on first use; torch only when a model runs.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "model_slug": "medfilip.embeddings.model",
    "model_files": "medfilip.embeddings.model",
    "resolve_model": "medfilip.embeddings.model",
    "EmbeddingModelError": "medfilip.embeddings.model",
    "embed_texts": "medfilip.embeddings.store",
    "load_embeddings": "medfilip.embeddings.store",
    "read_embeddings": "medfilip.embeddings.store",
    "write_label_embeddings": "medfilip.embeddings.store",
    "EmbedSummary": "medfilip.embeddings.store",
    "MissingEmbeddingError": "medfilip.embeddings.store",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
