"""pytest plugin (entry point ``pytest11``): fixtures for testing ecap plugins.

- ``ecap_registry``: the installed plugins plus the fakes, installed as the process-wide registry
  for the test (so CLI calls in-process see it too), with every fake's history reset.
- ``ecap_store``: a fresh SQLite store in the test's temporary folder.
- ``ecap_pairs``: six tiny image pairs and their CSV in the test's temporary folder.
- Every test gets ecap's logger back as it found it (handlers, level, propagation): a CLI call
  inside one test configures logging for the process and must not change what the next test's
  ``caplog`` sees.
- ``fake_llm_server``: a :class:`~ecap.testing.llm_server.FakeLLMServer` on 127.0.0.1 speaking the
  Gemini and OpenAI protocols, with no latency and the default responder; set ``.responder`` or
  ``.latency`` and ``inject`` faults as the test needs. Stopped after the test.
- ``tiny_vlm`` (session): builds tiny random VLMs of real architectures (see
  :mod:`ecap.testing.tiny_vlm`), ``tiny_vlm("qwen3-vl")`` -> the model's folder, cached on disk;
  ``tiny_qwen3_vl``, ``tiny_qwen25_vl`` and ``tiny_glm45v`` are those folders. Tests using them
  are skipped, saying why, when the ``vlm`` extra (torch, transformers) is not installed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..plugins import Registry, set_registry
from ..store import Store
from .fakes import reset_fakes
from .helpers import make_pairs, registry_with_fakes
from .llm_server import FakeLLMServer


@pytest.fixture(autouse=True)
def _ecap_logger_restored() -> Iterator[None]:
    logger = logging.getLogger("ecap")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


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


@pytest.fixture(scope="session")
def tiny_vlm() -> Callable[[str], Path]:
    missing = [
        m for m in ("torch", "transformers", "tokenizers") if not importlib.util.find_spec(m)
    ]
    if missing:
        pytest.skip(f"tiny VLMs need {', '.join(missing)}: pip install 'editcaption[vlm]'")
    from .tiny_vlm import build_tiny_vlm

    return build_tiny_vlm


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tiny_vlm: Callable[[str], Path]) -> Path:
    return tiny_vlm("qwen3-vl")


@pytest.fixture(scope="session")
def tiny_qwen25_vl(tiny_vlm: Callable[[str], Path]) -> Path:
    return tiny_vlm("qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_glm45v(tiny_vlm: Callable[[str], Path]) -> Path:
    return tiny_vlm("glm4.5v")
