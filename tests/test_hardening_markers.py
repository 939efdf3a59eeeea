"""Tests that cannot lie: a PostgreSQL server that CI asked for but cannot reach fails the tests,
``gpu`` tests skip (saying why) without CUDA, and ``-m "not slow"`` leaves the slow ones out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecap.testing import run_spec

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).relative_to(REPO).as_posix()


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_postgres_tests_fail_when_the_configured_server_is_unreachable() -> None:
    test = "tests/test_store.py::test_a_new_store_has_the_schema_its_migrations_build[postgres]"
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:9/postgres"
    result = pytest_run(test, "-q", ECAP_TEST_POSTGRES_URL=unreachable)
    assert result.returncode == 1, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert "1 error" in summary and "skipped" not in summary, result.stdout
    assert "is set but PostgreSQL at" in result.stdout and "is unreachable" in result.stdout


@pytest.mark.slow
def test_postgres_tests_skip_only_when_no_server_is_configured() -> None:
    test = "tests/test_store.py::test_a_new_store_has_the_schema_its_migrations_build[postgres]"
    env = {k: v for k, v in os.environ.items() if k != "ECAP_TEST_POSTGRES_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", test, "-q", "-rs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
    assert "ECAP_TEST_POSTGRES_URL" in result.stdout


@pytest.mark.slow
def test_gpu_tests_skip_with_the_reason_where_no_cuda_device_is_visible() -> None:
    result = pytest_run(THIS, "-m", "gpu", "-q", "-rs", CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 0, result.stdout
    assert "skipped" in result.stdout and "needs a CUDA device" in result.stdout


def test_not_slow_leaves_the_slow_tests_out() -> None:
    quick = pytest_run(THIS, "-m", "not slow", "--collect-only", "-q")
    assert "test_not_slow_leaves_the_slow_tests_out" in quick.stdout
    assert "test_postgres_tests_fail_when" not in quick.stdout
    assert "deselected" in quick.stdout


@pytest.mark.gpu
@pytest.mark.slow
def test_the_quickstart_captions_on_a_cuda_device(tmp_path: Path) -> None:
    """The tiny Qwen3-VL of the quickstart, placed on the GPU by ``device_map``."""
    target = tmp_path / "quickstart"
    shutil.copytree(
        REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns("ecap.db*", "out")
    )
    spec = target / "tour.yaml"
    spec.write_text(
        spec.read_text().replace(
            "      keep_truncated: true",
            "      keep_truncated: true\n      options: {device_map: cuda}",
        )
    )
    result = run_spec(spec, store=f"sqlite:///{tmp_path / 'ecap.db'}")
    assert result.status == "complete"
    assert result.steps["captions"].counts["done"] == 6
