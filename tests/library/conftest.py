"""Session fixtures: one tiny model trained on phantoms (tests/library/library_fixtures.py) and its export."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from library_fixtures import KNOWLEDGE, train_tiny_model  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A pipeline run folder: model.pt, text_encoder/, config.yaml (about 20 s on one CPU core)."""
    return train_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory) -> Path:
    """The run as a self-contained model folder, written by `medfilip export`."""
    from medfilip.predict import main

    out = tmp_path_factory.mktemp("exported") / "tiny"
    assert (
        main(
            [
                "export",
                str(tiny_run),
                str(out),
                "--knowledge",
                str(KNOWLEDGE),
                "--classes",
                "normal",
                "pleural effusion",
                "cardiomegaly",
            ]
        )
        == 0
    )
    return out
