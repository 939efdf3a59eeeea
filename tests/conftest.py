"""Shared fixtures and markers. The ``ecap_*`` fixtures come from ecap's own pytest plugin
(ecap.testing).

Markers (declared in pyproject.toml): ``gpu`` tests are skipped, saying so, where no CUDA device
is visible; ``slow`` ones can be left out of a quick local run with ``-m "not slow"``;
``postgres`` ones run against ECAP_TEST_POSTGRES_URL. A test that cannot run where it was asked
to must not pass quietly: once ECAP_TEST_POSTGRES_URL is set (CI sets it), a server that cannot
be reached fails the PostgreSQL tests instead of skipping them."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str], Path]:
    """Write a spec (dedented) into the test's folder and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


def _postgres_server() -> str | None:
    return os.environ.get("ECAP_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL: a SQLite file, or a new database on the PostgreSQL server named
    by ECAP_TEST_POSTGRES_URL (skipped, saying so, when there is none)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server = _postgres_server()
    if not server:
        pytest.skip("no PostgreSQL server: set ECAP_TEST_POSTGRES_URL (.ci/run starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ecap_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(
            f"ECAP_TEST_POSTGRES_URL is set but PostgreSQL at "
            f"{make_url(server).render_as_string()} is unreachable: {exc}"
        )
    yield make_url(server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without a CUDA device (torch is imported only when there are some)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (none visible)")
        for item in gpu:
            item.add_marker(skip)
