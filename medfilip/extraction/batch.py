"""Old import path of the Batch API mode, kept for importers not yet moved (the lead removes it at
merge): the code lives in :mod:`medfilip.extraction.openai.batch`, ``.batch_runner``,
``.batch_store`` and ``.batch_lines``."""

from medfilip.extraction.openai.batch import OpenAIBatchBackend, result_of_line
from medfilip.extraction.openai.batch_lines import UNFINISHED_CODES
from medfilip.extraction.openai.batch_runner import MAX_INPUT_BYTES, BatchRunner, Hook, ResultOf
from medfilip.extraction.openai.batch_store import (
    ABANDONED,
    ACTIVE,
    BEFORE_BATCH,
    ENDED,
    BatchStore,
    Chunk,
    batch_summary,
)

__all__ = [
    "ABANDONED",
    "ACTIVE",
    "BEFORE_BATCH",
    "ENDED",
    "MAX_INPUT_BYTES",
    "UNFINISHED_CODES",
    "BatchRunner",
    "BatchStore",
    "Chunk",
    "Hook",
    "OpenAIBatchBackend",
    "ResultOf",
    "batch_summary",
    "result_of_line",
]
