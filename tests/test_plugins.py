"""Plugins load through entry points, each in isolation: a broken or conflicting plugin is reported
and never takes other commands down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart" / "tour.yaml"


def install_fake_distribution(
    site: Path, name: str, module: str, source: str, entry_points: str
) -> None:
    """A minimal installed distribution: a module plus a dist-info with entry points."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ecap]\n{entry_points}\n")
    (info / "RECORD").write_text("")


def ecap(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run(
        [sys.executable, "-m", "ecap.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install_fake_distribution(
        site,
        "ecap-broken",
        "ecap_broken",
        "raise RuntimeError('this plugin is broken on purpose')\n",
        "broken = ecap_broken",
    )
    install_fake_distribution(
        site,
        "ecap-other-csv",
        "ecap_other_csv",
        """
from ecap.hookspecs import hookimpl
from ecap_csv.source import CsvSource

class OtherCsv(CsvSource):
    pass

@hookimpl
def register_sources(register):
    register("csv", OtherCsv)
""",
        "other_csv = ecap_other_csv",
    )
    return site


def test_a_plugin_that_raises_on_import_is_listed_as_broken(site):
    listed = ecap(site, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["broken"]["status"] == "broken: RuntimeError: this plugin is broken on purpose"
    assert rows["broken"]["package"] == "ecap-broken"
    assert rows["jsonl"]["status"] == "ok"

    doctor = ecap(site, "plugins", "doctor")
    assert doctor.returncode == 1
    assert "ECAP_BLOCK_PLUGINS=broken" in doctor.stdout


def test_two_packages_registering_one_name_is_an_error_naming_both(site):
    listed = json.loads(ecap(site, "plugins", "list", "--json").stdout)
    (conflict,) = [row for row in listed if row["name"] == "csv"]
    assert conflict["status"] == "conflict"
    assert conflict["package"] == "ecap-other-csv + editcaption"

    validate = ecap(site, "pipeline", "validate", str(QUICKSTART))
    assert validate.returncode == 1
    assert (
        "source plugin 'csv' is registered by both 'ecap-other-csv' (ecap_other_csv) and "
        "'editcaption' (ecap_csv)" in validate.stderr
    )


def test_every_other_command_still_works_and_blocking_resolves_it(site):
    blocked = ecap(
        site, "pipeline", "validate", str(QUICKSTART), ECAP_BLOCK_PLUGINS="broken,other_csv"
    )
    assert blocked.returncode == 0, blocked.stderr
    assert "ok (4 steps" in blocked.stdout
    assert ecap(site, "--help").returncode == 0
    assert ecap(site, "schema", "--json").returncode == 0


def test_an_allowlist_loads_only_the_named_entry_points(site):
    listed = ecap(site, "plugins", "list", "--json", ECAP_LOAD_PLUGINS="export")
    assert {row["name"] for row in json.loads(listed.stdout)} == {"jsonl", "parquet", "hf"}


def test_the_fakes_can_be_registered_beside_only_the_plugins_a_spec_names():
    from ecap.testing import registry_with_fakes

    names = {(kind, name) for kind, name in registry_with_fakes(only=["csv"]).plugins}
    assert {("source", "csv"), ("caption", "fake")} <= names
    assert ("source", "shapes") not in names  # installed, but not asked for
    assert ("source", "shapes") in registry_with_fakes().plugins


def test_importing_the_cli_loads_no_heavy_library():
    probe = (
        "import sys; from ecap.cli import main\n"
        "try:\n    main(['plugins', 'list', '--json'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'transformers', 'vllm', 'deepspeed', 'trl', 'openai',\n"
        "         'google.genai', 'label_studio_sdk', 'ray', 'pyarrow', 'datasets'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
