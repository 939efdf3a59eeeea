"""The command line, end to end on the quickstart's tour: run, inspect, trace, export."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecap.cli import cli
from ecap.hashing import REDACTED, redact
from ecap.store.migrate import head_revision

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of examples/quickstart, so tests never write into the repository."""
    target = tmp_path / "quickstart"
    shutil.copytree(
        REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns("ecap.db*", "out")
    )
    return target


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_quickstart_runs_and_a_pair_traces_back_to_its_import_and_forward_to_its_export(quickstart):
    spec = str(quickstart / "tour.yaml")
    summary = json.loads(invoke("pipeline", "run", spec, "--json"))
    assert summary["status"] == "complete"
    assert [(s["step"], s["done"]) for s in summary["steps"]] == [
        ("pairs", 6),
        ("dataset", 6),
        ("captions", 6),
        ("captions_out", 6),
    ]

    exported = [
        json.loads(line) for line in (quickstart / "out" / "pairs.jsonl").read_text().splitlines()
    ]
    pair_id = exported[0]["pair_id"]
    node = json.loads(invoke("provenance", "show", pair_id[:12], "--store", spec, "--json"))
    made = node["generated_by"]
    assert (made["step_id"], made["plugin"], made["run_id"]) == ("pairs", "csv", summary["run"])
    assert node["record"]["meta"]["source_file"] == str(quickstart / "data" / "pairs.csv")
    (instruction,) = [
        u
        for u in node["uses"]
        if u["type"] == "instruction" and u["record"]["origin"] == "reference"
    ]
    (dataset,) = instruction["uses"]
    assert dataset["record"]["uri"] == str(quickstart / "out" / "pairs.jsonl")
    assert dataset["generated_by"]["step_id"] == "dataset"

    text = re.sub(r"\s+", "", invoke("provenance", "show", pair_id, "--store", spec))
    for expected in (
        "made by step 'pairs' (source: csv",
        summary["run"],
        "pairs.csv:2",
        "used by dataset",
        "made by step 'dataset' (export: jsonl",
    ):
        assert re.sub(r"\s+", "", expected) in text  # rich wraps long lines anywhere


def test_a_second_run_is_served_from_the_store_and_plan_says_so_beforehand(quickstart):
    spec = str(quickstart / "tour.yaml")
    before = json.loads(invoke("pipeline", "plan", spec, "--json"))
    assert [(r["step"], r["inputs"], r["to_run"]) for r in before] == [
        ("pairs", 6, 6),
        ("dataset", "?", "?"),
        ("captions", "?", "?"),
        ("captions_out", "?", "?"),
    ]
    invoke("pipeline", "run", spec, "--json")
    after = json.loads(invoke("pipeline", "plan", spec, "--json"))
    assert [(r["step"], r["cached"], r["to_run"]) for r in after] == [
        ("pairs", 6, 0),
        ("dataset", 6, 0),
        ("captions", 6, 0),
        ("captions_out", 6, 0),
    ]
    second = json.loads(invoke("pipeline", "run", spec, "--json"))
    assert [s["status"] for s in second["steps"]] == ["cached"] * 4

    runs = json.loads(invoke("runs", "list", "--store", spec, "--json"))
    assert [r["status"] for r in runs] == ["complete", "complete"]


def test_export_writes_a_steps_outputs_as_jsonl_and_parquet(quickstart, tmp_path):
    import pyarrow.parquet as pq

    spec = str(quickstart / "tour.yaml")
    invoke("pipeline", "run", spec, "--json")
    invoke(
        "export",
        "--step",
        "pairs",
        "--format",
        "parquet",
        "-o",
        str(tmp_path / "pairs.parquet"),
        "--store",
        spec,
    )
    table = pq.read_table(tmp_path / "pairs.parquet")
    assert table.num_rows == 6
    assert set(table.column("instruction_origin").to_pylist()) == {"reference"}
    invoke("export", "--step", "pairs", "-o", str(tmp_path / "pairs.jsonl"), "--store", spec)
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 6


def test_reading_commands_explain_a_missing_store(tmp_path):
    result = CliRunner().invoke(cli, ["runs", "list", "--store", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "no store at" in result.output and "run a pipeline first" in result.output
    assert not (tmp_path / "none.db").exists()


def test_secrets_never_reach_the_store(quickstart, monkeypatch):
    monkeypatch.setenv("QUICKSTART_PAIRS", "data/pairs.csv")
    spec = quickstart / "tour.yaml"
    spec.write_text(
        spec.read_text().replace("path: data/pairs.csv", "path: ${env:QUICKSTART_PAIRS}")
    )
    summary = json.loads(invoke("pipeline", "run", str(spec), "--json"))
    shown = json.loads(invoke("runs", "show", summary["run"], "--store", str(spec), "--json"))
    configs = {s["step_id"]: s["config"] for s in shown["steps"]}
    assert configs["pairs"] == {"path": REDACTED}
    assert configs["dataset"] == {"path": "out/pairs.jsonl"}

    assert redact(
        {"api_key": "sk-1", "model": "m", "nested": {"auth_token": "t", "n": 1}}, set()
    ) == {"api_key": REDACTED, "model": "m", "nested": {"auth_token": REDACTED, "n": 1}}


def test_every_listing_has_json(quickstart):
    spec = str(quickstart / "tour.yaml")
    invoke("pipeline", "run", spec, "--json")
    for args in (
        ["plugins", "list"],
        ["runs", "list", "--store", spec],
        ["runs", "show", "--store", spec],
        ["provenance", "query", "--store", spec],
        ["pipeline", "plan", spec],
        ["plugins", "show", "csv"],
        ["schema"],
    ):
        json.loads(invoke(*args, "--json"))


def test_plugins_show_puts_the_plugins_own_fields_first_with_their_real_defaults():
    table = invoke("plugins", "show", "gemini")
    # declared by the gemini judge itself; the limits shared by every remote plugin come after
    assert table.index("│ model ") < table.index("│ max_concurrent")
    rubric = next(line for line in table.splitlines() if line.startswith("│ rubric "))
    assert "(required)" not in rubric and "built in" in rubric  # a default factory


def test_db_current_reads_without_creating_a_store(tmp_path):
    missing = tmp_path / "nothing-here.db"
    output = invoke("db", "current", "--store", f"sqlite:///{missing}")
    assert "store: none" in output and f"ecap: {head_revision()}" in output
    assert not missing.exists()
