"""Fixtures of the extraction tests: the local OpenAI-compatible server (tests/extraction/openai_server.py)."""

from __future__ import annotations

import pytest
from openai_server import OpenAIServer


@pytest.fixture(scope="session")
def _openai_server_session():
    with OpenAIServer(api_key="sk-test-medfilip-4f9c2e7a1b") as server:
        yield server


@pytest.fixture
def openai_server(_openai_server_session: OpenAIServer) -> OpenAIServer:
    """A real HTTP server on 127.0.0.1 speaking the OpenAI API; faults, knobs and records reset per test."""
    _openai_server_session.reset()
    yield _openai_server_session
    _openai_server_session.reset()
