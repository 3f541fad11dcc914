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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory with the 7-report OpenI corpus, an editable vocabulary copy and a config
    (tests/workflow_helpers.py, make_project)."""
    from workflow_helpers import make_project

    return make_project(tmp_path)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """ONE tiny pipeline run through every table the read-only workflow tests check (zero-shot, retrieval,
    case study, linear probe, segmentation): a few minutes on 2 cores, once per session instead of once
    per test. Tests read it and plan on it (`dry_run`), never change it: checked when the session ends."""
    from workflow_helpers import build_tiny_pipeline

    run = build_tiny_pipeline(tmp_path_factory.mktemp("tiny_pipeline"))
    before = run.snapshot()
    yield run
    after = run.snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared tiny pipeline run: {changed[:10]}"


def pytest_collection_modifyitems(config, items):
    # the first test to use the shared run pays for it: its timeout covers the fixture's setup
    for item in items:
        if "tiny_pipeline" in getattr(item, "fixturenames", ()) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(3600))
