"""The command line as a new user meets it: every mistake is one ``Error:`` line, never a
traceback, and the output reads well in an 80-column terminal."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from ecap.cli import _add_plugin_commands, cli

REPO = Path(__file__).resolve().parent.parent


def commands() -> dict[str, click.Command]:
    """Every leaf command, by its full name (``pipeline run``), plugins' commands included."""
    _add_plugin_commands()
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        else:
            found[" ".join(path)] = command

    walk(cli, ())
    return found


def ecap(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_error_line(result: Result) -> str:
    output = result.output
    assert result.exit_code != 0, output
    assert "Traceback" not in output, output
    assert not re.search(r"<[\w.]+ object at 0x[0-9a-f]+>", output), output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder with the files a confused user might point commands at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ECAP_STORE", raising=False)
    (tmp_path / "broken.yaml").write_text("name: x\nsteps: [unclosed\n")
    (tmp_path / "unknown.yaml").write_text("name: x\nsteps:\n  a: {source: no-such-plugin}\n")
    (tmp_path / "typo.yaml").write_text(
        "name: x\nsteps:\n  a: {source: csv, with: {pth: data.csv}}\n"
    )
    (tmp_path / "notes.db").write_text("these are my notes, not a database\n")
    assert ecap("db", "upgrade", "--store", str(tmp_path / "empty.db")).exit_code == 0
    yield tmp_path


#: Mistakes per command, beyond the generic ones every command is tried with. Paths are relative
#: to the ``folder`` fixture.
MISTAKES: dict[str, list[list[str]]] = {
    "pipeline run": [
        ["missing.yaml"],
        ["broken.yaml"],
        ["unknown.yaml"],
        ["typo.yaml"],
        ["typo.yaml", "--store", "bogus://nowhere"],
    ],
    "pipeline validate": [["missing.yaml"], ["broken.yaml"], ["unknown.yaml"], ["typo.yaml"]],
    "pipeline plan": [["missing.yaml"], ["broken.yaml"], ["unknown.yaml"]],
    "plugins show": [["no-such-plugin"]],
    "runs list": [["--store", "notes.db"], ["--store", "bogus://nowhere"], ["--store", "none.db"]],
    "runs show": [["01NOSUCHRUN", "--store", "empty.db"], ["--store", "empty.db"]],
    "provenance show": [["01NOSUCHRECORD", "--store", "empty.db"], ["x", "--store", "notes.db"]],
    "provenance query": [["--store", "notes.db"], ["--store", "bogus://nowhere"]],
    "export": [
        ["--step", "nosuch", "-o", "out.jsonl", "--store", "empty.db"],
        ["--step", "nosuch", "-o", "out.jsonl", "--store", "notes.db"],
    ],
    "db current": [["--store", "bogus://nowhere"], ["--store", "notes.db"]],
    "db upgrade": [["--store", "bogus://nowhere"], ["--store", "notes.db"]],
    "db stamp": [["no-such-revision", "--store", "empty.db"], ["0001", "--store", "bogus://x"]],
    "report": [["--store", "notes.db"], ["--store", "bogus://nowhere"]],
}


def typed_value_mistakes(command: click.Command) -> list[list[str]]:
    """For each option that takes a typed value, that option with a value of the wrong type."""
    wrong: list[list[str]] = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.is_flag or not param.opts:
            continue
        if isinstance(param.type, click.Choice):
            wrong.append([param.opts[0], "no-such-choice"])
        elif isinstance(param.type, click.types._NumberParamTypeBase):
            wrong.append([param.opts[0], "not-a-number"])
    return wrong


ALL = commands()


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_refuses_bad_arguments_in_one_error_line(name: str, folder: Path) -> None:
    path = name.split()
    assert_one_error_line(ecap(*path, "--no-such-option"))
    for args in [*MISTAKES.get(name, []), *typed_value_mistakes(ALL[name])]:
        assert_one_error_line(ecap(*path, *args))


def test_the_mistakes_table_names_only_real_commands() -> None:
    assert set(MISTAKES) <= set(ALL)


def test_an_unexpected_failure_is_one_line_and_the_traceback_is_opt_in(folder: Path) -> None:
    line = assert_one_error_line(ecap("runs", "list", "--store", "bogus://nowhere"))
    assert "bogus" in line
    verbose = ecap("-v", "runs", "list", "--store", "bogus://nowhere")
    assert "Traceback" in verbose.output and verbose.exit_code == 1


@pytest.fixture
def quickstart_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The quickstart tour's import and export steps, run once (no model needed)."""
    target = tmp_path / "quickstart"
    shutil.copytree(
        REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns("ecap.db*", "out")
    )
    spec = target / "spec.yaml"
    text = (target / "tour.yaml").read_text()
    spec.write_text(text[: text.index("  # A Qwen3-VL-architecture model")])
    monkeypatch.chdir(target)
    monkeypatch.delenv("ECAP_STORE", raising=False)
    assert ecap("pipeline", "run", "spec.yaml", "--no-progress").exit_code == 0
    return target


def test_export_of_a_step_that_is_not_per_sample_says_so(quickstart_run: Path) -> None:
    line = assert_one_error_line(ecap("export", "--step", "dataset", "-o", "again.jsonl"))
    assert "dataset" in line and "per-sample" in line


def listing_commands(store: str) -> list[list[str]]:
    from ecap.records import RECORD_TYPES

    return [
        ["runs", "list", "--store", store],
        ["runs", "show", "--store", store],
        ["plugins", "list"],
        ["plugins", "show", "csv"],
        ["pipeline", "plan", store],
        *(["provenance", "query", "--store", store, "--type", t] for t in sorted(RECORD_TYPES)),
    ]


def test_every_listing_fits_80_columns_without_raw_json(
    quickstart_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for args in listing_commands("spec.yaml"):
        result = ecap(*args)
        assert result.exit_code == 0, result.output
        for line in result.output.splitlines():
            assert len(line) <= 80, f"{' '.join(args)}: {line!r}"
            if line.startswith(("┃", "│")):  # a table row
                assert not re.search(r"[{\[]\s*['\"]", line), f"JSON in a cell: {line!r}"
                assert not re.search(r"\d\d:\d\d:\d\d\.\d", line), f"microseconds: {line!r}"


def test_an_empty_result_is_one_line(quickstart_run: Path) -> None:
    result = ecap("provenance", "query", "--store", "spec.yaml", "--type", "verdict")
    assert result.exit_code == 0 and result.output.strip().splitlines() == [
        "0 verdict records: none"
    ]


def test_ids_are_shortened_to_the_part_that_tells_them_apart() -> None:
    from ecap.cli.tables import short_ids

    batch = [f"01M8S1052W7MHF3BSMG1RGRR{tail}" for tail in ("7Z", "81", "83")]
    shown = short_ids(batch)
    assert len(set(shown.values())) == 3
    assert all(len(s) <= 12 and s.endswith(i[-2:]) for i, s in shown.items())
    runs = ["01M8S1051PK6NQXZKE4XWK1S7F", "01M8S12M3M5WV0QZ5EJGETYXN9"]
    prefixes = short_ids(runs)
    assert all(i.startswith(s.rstrip("…")) for i, s in prefixes.items()), "a usable prefix"
    assert short_ids(["ecap1:" + "ab" * 32]) == {"ecap1:" + "ab" * 32: "abababab…"}


def test_the_run_table_says_how_to_see_failed_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecap.testing import make_pairs

    monkeypatch.chdir(tmp_path)
    make_pairs(tmp_path, 4, corrupt=(1,))
    (tmp_path / "spec.yaml").write_text(
        "name: broken\nsteps:\n  pairs: {source: csv, max_error_rate: 1, with: {path: pairs.csv}}\n"
    )
    result = ecap("pipeline", "run", "spec.yaml", "--no-progress")
    assert "1 sample failed; see why with:" in result.output
    command = next(line for line in result.output.splitlines() if "ecap runs show" in line)
    shown = ecap(*command.split()[1:])
    assert shown.exit_code == 0 and "not a readable image" in " ".join(shown.output.split())
    assert all(
        len(line) <= 80 for line in [*result.output.splitlines(), *shown.output.splitlines()]
    )


def test_a_waiting_step_has_a_note_not_an_error() -> None:
    from ecap.cli.tables import note

    assert note("waiting", "3 tasks open in Label Studio") == "3 tasks open in Label Studio"
    assert note("failed", "no server at http://localhost:8080") == (
        "error: no server at http://localhost:8080"
    )


def test_plugins_list_describes_every_plugin_in_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("COLUMNS", "200")
    rows = json.loads(ecap("plugins", "list", "--json").output)
    assert rows and all(row["description"] and "\n" not in row["description"] for row in rows)
    table = ecap("plugins", "list").output
    assert all(row["description"][:30] in table for row in rows)


def test_the_provenance_tree_puts_derivations_under_derived_from(quickstart_run: Path) -> None:
    import json

    (instruction,) = json.loads(
        ecap("provenance", "query", "--store", "spec.yaml", "-n", "1", "--json").output
    )
    tree = ecap("provenance", "show", instruction["id"], "--store", "spec.yaml").output
    derived = tree.index("derived from")
    assert "pair " + instruction["pair_id"][:8] in tree[derived:]
    assert "used by" not in tree[: tree.index("pair " + instruction["pair_id"][:8])]
    assert "wasDerivedFrom" not in tree


@pytest.mark.slow  # starts ecap in a subprocess
def test_serve_llm_serves_the_fake_apis_until_interrupted(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    openai = pytest.importorskip("openai")
    server = subprocess.Popen(
        [sys.executable, "-m", "ecap.cli", "testing", "serve-llm", "--api-key", "sk-offline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        exports: dict[str, str] = {}
        assert server.stdout is not None
        while "OPEN_JUDGE_URL" not in exports:
            line = server.stdout.readline()
            assert line, server.stderr.read() if server.stderr else "no output"
            if line.strip().startswith("export "):
                name, value = line.strip().removeprefix("export ").split("=", 1)
                exports[name] = value
        client = openai.OpenAI(
            api_key=exports["OPENAI_API_KEY"], base_url=exports["OPENAI_BASE_URL"]
        )
        reply = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Describe the edit."}]
        )
        assert reply.choices[0].message.content
        assert exports["GEMINI_BASE_URL"] and exports["OPEN_JUDGE_URL"].endswith("/v1")
    finally:
        os.kill(server.pid, signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "served 1 model calls" in err and "Traceback" not in err


def test_init_writes_a_commented_starter_spec_that_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert ecap("init", "starter.yaml").exit_code == 0
    text = (tmp_path / "starter.yaml").read_text()
    for kind in ("source: csv", "caption: vlm", "judge: gemini", "export: jsonl"):
        assert kind in text
    assert text.count("\n  #") >= 4, "every step is explained"
    assert "${env:GEMINI_API_KEY" in text, "keys come from the environment"

    validated = ecap("pipeline", "validate", "starter.yaml")
    assert validated.exit_code == 0, validated.output
    plan = json.loads(ecap("pipeline", "plan", "starter.yaml", "--json").output)
    assert (plan[0]["step"], plan[0]["inputs"]) == ("pairs", 2)

    again = assert_one_error_line(ecap("init", "starter.yaml"))
    assert "already exist" in again and "--force" in again
    assert ecap("init", "starter.yaml", "--force").exit_code == 0
