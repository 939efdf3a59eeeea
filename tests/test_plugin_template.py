"""examples/plugin-template/ is a real third-party package: install it, and ecap finds and runs it.

The template is built and installed with pip into a temporary ``--target`` folder, never into the
environment running the tests; every check then runs ``ecap`` (or pytest) in a subprocess whose
``PYTHONPATH`` holds that folder, exactly as if the package had been pip-installed there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "plugin-template"
QUICKSTART_PAIRS = ROOT / "examples" / "quickstart" / "data" / "pairs.csv"
#: Word counts of the quickstart's six reference instructions, as the filter counts them.
QUICKSTART_WORDS = {
    "Change the red ball to blue.": 6,
    "Move the red ball from the left side of the image to the right side.": 15,
    "Add a small tree with a green crown on the right, below the sun.": 14,
    "Remove the yellow sun from the upper right corner.": 9,
    "Turn the scene into night: make the sky dark blue and remove the sun.": 14,
    "Place a brown wooden box in the middle of the grass.": 11,
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The template, copied (so the build leaves nothing in the repository) and installed into a
    fresh ``--target`` folder without dependencies: ecap itself comes from the test environment."""
    base = tmp_path_factory.mktemp("plugin-template")
    source, target = base / "source", base / "target"
    shutil.copytree(
        TEMPLATE,
        source,
        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".*cache"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "ecap_plugin_template" / "__init__.py").is_file()
    return {"source": source, "target": target}


def _env(target: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ECAP_LOAD_PLUGINS", "ECAP_BLOCK_PLUGINS", "ECAP_STORE")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(args: list[str], target: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def _ecap(args: list[str], target: Path, cwd: Path) -> Any:
    return json.loads(_run(["-m", "ecap.cli", *args], target, cwd).stdout)


def test_package_comes_from_target(installed: dict[str, Path], tmp_path: Path) -> None:
    out = _run(
        ["-c", "import ecap_plugin_template as m; print(m.__file__)"], installed["target"], tmp_path
    )
    assert Path(out.stdout.strip()).is_relative_to(installed["target"])


def test_plugins_list_shows_the_filter(installed: dict[str, Path], tmp_path: Path) -> None:
    rows = _ecap(["plugins", "list", "--json"], installed["target"], tmp_path)
    [row] = [r for r in rows if r["name"] == "instruction-length"]
    assert row.pop("description").startswith("Scores each (pair, instruction) by its word count")
    assert row == {
        "kind": "filter",
        "name": "instruction-length",
        "version": "0.1.0",
        "package": "ecap-plugin-template",
        "status": "ok",
    }
    assert not [r for r in rows if r["status"] != "ok"]


def _write_spec(path: Path, max_words: int) -> None:
    path.write_text(
        f"""\
name: plugin-template-check
steps:
  pairs:
    source: csv
    with: {{path: {json.dumps(str(QUICKSTART_PAIRS))}}}
  length:
    filter: instruction-length
    from: pairs
    with: {{min_words: 8, max_words: {max_words}}}
"""
    )


def test_pipeline_filters_quickstart_pairs(installed: dict[str, Path], tmp_path: Path) -> None:
    target = installed["target"]
    spec = tmp_path / "spec.yaml"
    _write_spec(spec, max_words=14)

    run = _ecap(["pipeline", "run", str(spec), "--json", "--no-progress"], target, tmp_path)
    assert run["status"] == "complete"
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["pairs"]["done"] == 6
    # 8 <= words <= 14 drops "Change the red ball ..." (6) and "Move the red ball ..." (15).
    assert (steps["length"]["status"], steps["length"]["error"]) == ("complete", "")
    assert (steps["length"]["inputs"], steps["length"]["done"]) == (6, 6)
    assert (steps["length"]["failed"], steps["length"]["kept"]) == (0, 4)

    store = ["--store", str(spec), "--json"]
    scores = _ecap(["provenance", "query", "--type", "score", *store], target, tmp_path)
    instructions = _ecap(["provenance", "query", "--type", "instruction", *store], target, tmp_path)
    text_of = {i["id"]: i["text"] for i in instructions}
    assert {s["scorer"] for s in scores} == {"instruction-length"}
    assert {text_of[s["instruction_id"]]: s["values"]["words"] for s in scores} == QUICKSTART_WORDS
    assert all(s["values"]["vague"] == 0.0 for s in scores)

    # Re-thresholding is a query, not a re-run: the step is served from the store.
    _write_spec(spec, max_words=15)
    again = _ecap(["pipeline", "run", str(spec), "--json", "--no-progress"], target, tmp_path)
    length = {s["step"]: s for s in again["steps"]}["length"]
    assert (length["status"], length["cached"], length["done"], length["kept"]) == (
        "cached",
        6,
        0,
        5,
    )
    rescored = _ecap(["provenance", "query", "--type", "score", *store], target, tmp_path)
    assert sorted(s["id"] for s in rescored) == sorted(s["id"] for s in scores)


def test_template_own_tests_pass(installed: dict[str, Path]) -> None:
    source = installed["source"]
    result = _run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], installed["target"], source
    )
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout


def test_a_third_party_vlm_backend_captions_through_the_hook_alone(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    """The template registers ``template-brightness`` with ``register_vlm_backends``; the built-in
    ``vlm`` captioner runs it by name, without knowing the package."""
    target = installed["target"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""\
name: third-party-backend
steps:
  pairs:
    source: csv
    with: {{path: {json.dumps(str(QUICKSTART_PAIRS))}}}
  captions:
    caption: vlm
    from: pairs
    with: {{model: none, backend: template-brightness, options: {{threshold: 1.0}}}}
"""
    )
    run = _ecap(["pipeline", "run", str(spec), "--json", "--no-progress"], target, tmp_path)
    steps = {s["step"]: s for s in run["steps"]}
    assert run["status"] == "complete", steps
    assert (steps["captions"]["done"], steps["captions"]["failed"]) == (6, 0)
    instructions = _ecap(
        ["provenance", "query", "--type", "instruction", "--store", str(spec), "--json"],
        target,
        tmp_path,
    )
    written = {i["text"] for i in instructions if i["origin"] == "model"}
    assert written and written <= {
        "Make the whole image brighter.",
        "Make the whole image darker.",
        "Keep the image as it is.",
    }
    # The quickstart's night scene is darker than its source.
    assert "Make the whole image darker." in written


def test_a_third_party_report_section_appears_through_the_hook_alone(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    """The template registers an ``instruction_length`` section with
    ``register_report_sections``; ``ecap report`` shows it beside its own tables, in every
    format, reading the filter's scores through the report's query API."""
    target = installed["target"]
    spec = tmp_path / "spec.yaml"
    _write_spec(spec, max_words=14)
    _ecap(["pipeline", "run", str(spec), "--json", "--no-progress"], target, tmp_path)

    report = ["report", "--store", str(spec), "--resamples", "0"]
    data = _ecap([*report, "--json"], target, tmp_path)
    [row] = data["instruction_length"]
    assert row["n"] == 6
    assert row["words"]["mean"] == sum(QUICKSTART_WORDS.values()) / 6
    assert row["vague"]["mean"] == 0.0
    markdown = _run(["-m", "ecap.cli", *report], target, tmp_path).stdout
    assert "## Instruction length" in markdown and "| Model | Benchmark | Words | Vague | n |" in (
        markdown
    )
