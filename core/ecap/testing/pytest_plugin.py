"""pytest plugin (entry point ``pytest11``): fixtures for testing ecap plugins.

- ``ecap_registry``: the installed plugins plus the fakes, installed as the process-wide registry
  for the test (so CLI calls in-process see it too), with every fake's history reset.
- ``ecap_store``: a fresh SQLite store in the test's temporary folder.
- ``ecap_pairs``: six tiny image pairs and their CSV in the test's temporary folder.
- ``fake_llm_server``: a :class:`~ecap.testing.servers.FakeLLMServer` on 127.0.0.1 speaking the
  Gemini and OpenAI protocols, with no latency and the default responder; set ``.responder`` or
  ``.latency`` and ``inject`` faults as the test needs. Stopped after the test.
- ``tiny_vlm`` (session): builds tiny random VLMs of real architectures (see
  :mod:`ecap.testing.tiny_vlm`), ``tiny_vlm("qwen3-vl")`` -> the model's folder, cached on disk;
  ``tiny_qwen3_vl``, ``tiny_qwen25_vl`` and ``tiny_glm45v`` are those folders. Tests using them
  are skipped, saying why, when the ``vlm`` extra (torch, transformers) is not installed.

Installing ecap adds this plugin to every pytest run in the environment, including other
projects' suites, so it costs them nothing: it imports only pytest and the standard library (each
fixture imports what it needs when a test uses it), and it has no autouse fixture. The one thing
it does around every test is give ecap's logger back as it was (handlers, level, propagation): a
CLI call in one test configures logging for the process and must not change what the next test's
``caplog`` sees. That costs a dictionary lookup in a suite where ecap's logger does not exist.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..store import Store
    from .servers import FakeLLMServer

#: The logger ecap's CLI configures.
LOGGER = "ecap"


def _ecap_logger() -> logging.Logger | None:
    """ecap's logger if something made it, without making it."""
    found = logging.Logger.manager.loggerDict.get(LOGGER)
    return found if isinstance(found, logging.Logger) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Restore ecap's logger after each test (setup and teardown included) if the test touched
    it: as it was, or, if the test created it, as a new logger is."""
    logger = _ecap_logger()
    saved = None if logger is None else (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger = _ecap_logger()
    if logger is not None:
        logger.handlers[:], logger.level, logger.propagate = saved or ([], logging.NOTSET, True)


@pytest.fixture
def ecap_registry() -> Iterator[Registry]:
    from ..plugins import set_registry
    from .fakes import reset_fakes
    from .helpers import registry_with_fakes

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
    from ..store import Store

    store = Store(f"sqlite:///{tmp_path / 'ecap-test.db'}")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def ecap_pairs(tmp_path: Path) -> Path:
    from .helpers import make_pairs

    return make_pairs(tmp_path)


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    from .servers import FakeLLMServer

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
