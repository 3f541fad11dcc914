from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
VOCABULARY_DIR = REPO / "resources" / "vocabulary"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def rules_backend():
    from medfilip.extraction.rules import RulesBackend

    return RulesBackend(VOCABULARY_DIR)


@pytest.fixture(scope="session")
def extractor(rules_backend):
    return rules_backend.extractor
