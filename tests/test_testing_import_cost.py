"""ecap.testing costs nothing to the test suites that do not use it.

Installing ecap adds its pytest plugin to every pytest run in the environment, so importing the
plugin and ``ecap.testing`` must load neither the store (nor SQLAlchemy) nor the fake LLM server,
and a test that uses no ecap fixture must run with none of them loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: Modules a suite that does not ask for them must never pay for.
HEAVY = ("sqlalchemy", "alembic", "ecap.store", "ecap.runner", "ecap.testing.servers")


def loaded(names: list[str]) -> list[str]:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


def test_importing_ecap_testing_and_its_pytest_plugin_loads_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ecap.testing.pytest_plugin"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "ecap.testing" in imported and "ecap.testing.pytest_plugin" in imported
    assert loaded(imported) == []


def test_an_unrelated_suite_runs_without_the_store_or_the_fake_server(tmp_path: Path) -> None:
    report = tmp_path / "modules.json"
    (tmp_path / "test_unrelated.py").write_text(
        textwrap.dedent(
            f"""
            import json
            import sys


            def test_something_else():
                with open({str(report)!r}, "w") as out:
                    json.dump(sorted(sys.modules), out)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    modules = json.loads(report.read_text())
    assert "ecap.testing.pytest_plugin" in modules  # ecap's plugin was loaded, as installed
    assert loaded(modules) == []


def test_ecap_fixtures_still_load_what_they_need_when_asked(tmp_path: Path) -> None:
    (tmp_path / "test_uses_ecap.py").write_text(
        textwrap.dedent(
            """
            import sys


            def test_store(ecap_store):
                assert "sqlalchemy" in sys.modules
                assert "ecap.testing.servers" not in sys.modules


            def test_server(fake_llm_server):
                assert fake_llm_server.url.startswith("http://127.0.0.1:")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_test_that_configures_ecaps_logger_leaves_it_as_the_next_test_expects(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_logging.py").write_text(
        textwrap.dedent(
            """
            import logging


            def test_a_cli_call_configures_logging():
                logger = logging.getLogger("ecap")
                logger.addHandler(logging.NullHandler())
                logger.setLevel(logging.ERROR)
                logger.propagate = False


            def test_the_next_test_finds_the_logger_as_new():
                logger = logging.getLogger("ecap")
                assert logger.handlers == []
                assert logger.level == logging.NOTSET and logger.propagate
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
