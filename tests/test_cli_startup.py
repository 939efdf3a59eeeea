"""``ecap`` answers without loading what the command does not use: ``ecap --help`` imports no
plugin, a plugin's command loads only its own plugin when invoked, a pipeline imports only the
plugins its spec names, and neither reading a store at the newest schema nor creating a new one
imports Alembic. What the command line knows of the plugins between runs is
cached, and the cache follows every change to what it was built from.

Each check runs ``ecap`` in a fresh interpreter (what a user's shell does) and looks at
``sys.modules`` there; none times anything (``benchmarks/cli_startup.py`` does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecap.cli import cli
from ecap.plugins import Registry, build_registry, selected_entry_points

HELLO = '''
import click
from ecap.hookspecs import hookimpl


@click.command("hello")
@click.option("--name", default="world")
def hello(name):
    """{help}"""
    click.echo(f"hello {{name}}")


@hookimpl
def register_commands(cli):
    cli.add_command(hello)
'''


def install(site: Path, module: str, source: str) -> None:
    """A minimal installed distribution named after ``module``, registering it as an entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ecap]\n{module} = {module}\n")
    (info / "RECORD").write_text("")


def ecap(site: Path, cache: Path, *args: str) -> tuple[str, list[str]]:
    """Run ``ecap ARGS`` in a fresh interpreter: its output, and which of the modules a start-up
    should not need it had imported by the end."""
    probe = (
        "import sys\n"
        "from ecap.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "watched = ('pydantic', 'sqlalchemy', 'alembic', 'rich', 'ecap.interfaces')\n"
        "loaded = [m for m in sys.modules if m.startswith(('ecap_', 'hello_')) or m in watched]\n"
        "print('LOADED', sorted(loaded))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(site), "ECAP_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=environment, timeout=60
    )
    assert done.returncode == 0, done.stderr
    output, _, loaded = done.stdout.rpartition("LOADED ")
    return output, json.loads(loaded.replace("'", '"'))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "hello_plugin", HELLO.format(help="Say hello from a plugin."))
    return site


def test_help_lists_a_plugin_command_without_importing_any_plugin(site: Path, tmp_path: Path):
    first, _ = ecap(site, tmp_path / "cache", "--help")  # learns the plugins' commands, once
    output, loaded = ecap(site, tmp_path / "cache", "--help")
    assert output == first
    assert "hello        Say hello from a plugin." in output
    assert "view " in output and "labelstudio " in output  # the built-in plugins' commands too
    assert loaded == []  # no plugin, and none of pydantic, SQLAlchemy, rich


def test_a_plugin_command_loads_only_its_own_plugin_when_invoked(site: Path, tmp_path: Path):
    ecap(site, tmp_path / "cache", "--help")
    output, loaded = ecap(site, tmp_path / "cache", "hello", "--name", "ecap")
    assert output == "hello ecap\n"
    assert [m for m in loaded if m.startswith(("ecap_", "hello_"))] == ["hello_plugin"]

    usage, _ = ecap(site, tmp_path / "cache", "hello", "--help")
    assert "Say hello from a plugin." in usage and "--name TEXT" in usage


def test_the_cache_follows_a_change_to_a_plugin(site: Path, tmp_path: Path):
    ecap(site, tmp_path / "cache", "--help")
    install(site, "hello_plugin", HELLO.format(help="Greet someone, revised."))
    output, _ = ecap(site, tmp_path / "cache", "--help")
    assert "Greet someone, revised." in output

    install(site, "hello_more", HELLO.format(help="Another.").replace('"hello"', '"hi"'))
    output, _ = ecap(site, tmp_path / "cache", "--help")
    assert "hi           Another." in output


def test_plugins_list_reads_the_cache_and_matches_a_fresh_build(site: Path, tmp_path: Path):
    fresh, loaded_fresh = ecap(site, tmp_path / "cache", "plugins", "list", "--json")
    cached, loaded = ecap(site, tmp_path / "cache", "plugins", "list", "--json")
    assert cached == fresh
    assert "ecap_csv" in loaded_fresh and not [m for m in loaded if m.startswith("ecap_")]
    assert any(row["name"] == "csv" and row["status"] == "ok" for row in json.loads(cached))


def test_a_broken_plugin_is_never_cached(site: Path, tmp_path: Path):
    (site / "hello_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    for _ in range(2):  # reported by every run, not only by the one that found it
        output, _ = ecap(site, tmp_path / "cache", "plugins", "list", "--json")
        rows = {row["name"]: row for row in json.loads(output)}
        assert rows["hello_plugin"]["status"] == "broken: RuntimeError: broken on purpose"
    assert not list((tmp_path / "cache").glob("*.json"))


def test_a_pipeline_imports_only_the_plugins_its_spec_names(site: Path, tmp_path: Path):
    (tmp_path / "pairs.csv").write_text("source,target\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"steps:\n  pairs: {{source: csv, with: {{path: {tmp_path / 'pairs.csv'}}}}}\n")
    store = f"sqlite:///{tmp_path / 'store.db'}"
    run = ("pipeline", "run", str(spec), "--store", store, "--no-progress")

    _, first = ecap(site, tmp_path / "cache", *run)  # no cache yet: every plugin, then cached
    assert {"ecap_csv", "ecap_judges", "hello_plugin"} <= {m.split(".")[0] for m in first}
    output, loaded = ecap(site, tmp_path / "cache", *run)
    assert "pairs" in output and "complete" in output
    assert {m.split(".")[0] for m in loaded if m.startswith(("ecap_", "hello_"))} == {"ecap_csv"}
    assert "alembic" not in loaded  # the store was new in the first run, current in this one


def test_a_name_the_cache_does_not_know_loads_every_plugin_to_suggest_one(site, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("steps:\n  pairs: {source: cvs, with: {path: pairs.csv}}\n")
    ecap(site, tmp_path / "cache", "plugins", "list")
    environment = {**os.environ, "PYTHONPATH": str(site), "ECAP_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "ecap.cli", "pipeline", "validate", str(spec)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert done.returncode == 1
    assert "unknown source plugin 'cvs' — did you mean 'csv'?" in done.stderr


def test_a_deferred_registry_answers_as_a_full_one_even_from_a_wrong_index():
    full = build_registry()
    lazy = Registry.deferred(selected_entry_points(), full.providers)
    assert lazy.get("source", "csv") == full.plugins["source", "csv"]
    assert not lazy.complete  # the csv plugin alone was loaded
    for index in (full.providers, {key: "ecap_bench" for key in full.providers}, {}):
        deferred = Registry.deferred(selected_entry_points(), index)
        for (kind, name), info in full.plugins.items():
            assert deferred.get(kind, name) == info
        assert deferred.names("judge") == full.names("judge")
        assert deferred.vlm_backends.keys() == full.vlm_backends.keys()
        assert deferred.complete and not deferred.broken and not deferred.conflicts


def test_threads_asking_a_deferred_registry_at_once_each_see_every_plugin():
    full = build_registry()
    deferred = Registry.deferred(selected_entry_points(), full.providers)
    questions = [lambda key=key: deferred.get(*key) for key in full.plugins]
    questions += [lambda: deferred.names("captioner"), lambda: sorted(deferred.vlm_backends)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda ask: ask(), questions * 3))
    assert answers[: len(full.plugins)] == list(full.plugins.values())
    assert answers[len(full.plugins)] == full.names("captioner")
    assert answers[len(full.plugins) + 1] == sorted(full.vlm_backends)
    assert not deferred.broken and not deferred.conflicts  # nothing registered twice


def loads_alembic(statement: str) -> bool:
    """Whether a fresh interpreter that runs ``statement`` (with ``Store`` imported) ends up
    with Alembic imported."""
    probe = "\n".join(
        ("import sys", "from ecap.store import Store", statement, "print('alembic' in sys.modules)")
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_neither_creating_a_store_nor_reading_one_imports_alembic(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ecap.db'}"
    assert not loads_alembic(f"Store({url!r})")  # a new store, created at the newest revision
    assert not loads_alembic(f"Store({url!r}, read_only=True).runs(5)")


def test_the_declared_head_revision_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    from ecap.store import migrate

    scripts = ScriptDirectory(str(migrate.MIGRATIONS))
    assert scripts.get_current_head() == migrate.HEAD_REVISION


def test_choices_read_late_still_refuse_an_unknown_value():
    refused = CliRunner().invoke(cli, ["provenance", "query", "--type", "bogus"])
    assert refused.exit_code == 2
    assert "'bogus' is not one of" in refused.output and "'instruction'" in refused.output

    usage = CliRunner().invoke(cli, ["plugins", "show", "--help"]).output
    assert "--kind [annotate|caption|export|filter|judge|source|train]" in usage


def test_the_cache_key_ignores_files_written_beside_a_script_but_sees_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``python -m ecap ...`` puts the working directory on ``sys.path``, and a run writes its
    store there: that must not throw the cache away, while an install there must."""
    from ecap.cli.plugin_cache import fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points = selected_entry_points()
    before = fingerprint(entry_points)
    (tmp_path / "store.db").write_bytes(b"written by a run")
    assert fingerprint(entry_points) == before
    (tmp_path / "other_plugin-1.0.dist-info").mkdir()
    assert fingerprint(entry_points) != before
