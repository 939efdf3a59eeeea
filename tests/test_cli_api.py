"""ecap.cli_api: what a plugin's command uses to behave like ecap's own commands."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from ecap.cli_api import echo_json, handle_errors, json_option, open_store, store_option
from ecap.errors import EcapError
from ecap.secrets import register_secret


@click.command("count")
@store_option
@json_option
@handle_errors
def count_command(store_ref: str | None, as_json: bool) -> None:
    """A plugin's command: count the runs in the store."""
    store = open_store(store_ref)
    try:
        runs = store.runs()
    finally:
        store.close()
    if as_json:
        echo_json({"runs": len(runs)})
    else:
        click.echo(f"{len(runs)} runs")


def test_a_plugin_command_finds_the_store_as_ecaps_commands_do(tmp_path: Path) -> None:
    from ecap.store import Store

    Store(f"sqlite:///{tmp_path / 'ecap.db'}").close()
    result = CliRunner().invoke(count_command, ["--store", str(tmp_path / "ecap.db"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"runs": 0}
    from_env = CliRunner().invoke(count_command, [], env={"ECAP_STORE": str(tmp_path / "ecap.db")})
    assert from_env.exit_code == 0, from_env.output


def test_a_missing_store_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(count_command, ["--store", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_errors_are_scrubbed_of_known_secrets() -> None:
    register_secret("sk-very-secret-value")

    @click.command()
    @handle_errors
    def leaky() -> None:
        raise EcapError("the server refused key sk-very-secret-value\nfor good")

    result = CliRunner().invoke(leaky, [])
    assert result.exit_code == 1
    assert "sk-very-secret-value" not in result.output
    assert result.stderr.strip().startswith("Error: the server refused key")
