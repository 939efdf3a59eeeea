"""pytest plugin (entry point ``pytest11``): fixtures for testing ecap plugins.

- ``ecap_registry``: the installed plugins plus the fakes, installed as the process-wide registry
  for the test (so CLI calls in-process see it too), with every fake's history reset.
- ``ecap_store``: a fresh SQLite store in the test's temporary folder.
- ``ecap_pairs``: six tiny image pairs and their CSV in the test's temporary folder.
- ``fake_llm_server``: a :class:`~ecap.testing.llm_server.FakeLLMServer` on 127.0.0.1 speaking the
  Gemini and OpenAI protocols, with no latency and the default responder; set ``.responder`` or
  ``.latency`` and ``inject`` faults as the test needs. Stopped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..plugins import Registry, set_registry
from ..store import Store
from .fakes import reset_fakes
from .helpers import make_pairs, registry_with_fakes
from .llm_server import FakeLLMServer


@pytest.fixture
def ecap_registry() -> Iterator[Registry]:
    registry = registry_with_fakes()
    reset_fakes()
    set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(None)
        reset_fakes()


@pytest.fixture
def ecap_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'ecap-test.db'}")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def ecap_pairs(tmp_path: Path) -> Path:
    return make_pairs(tmp_path)


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server
