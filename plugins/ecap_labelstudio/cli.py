"""``ecap labelstudio``: install and run a local Label Studio server for human steps.

The server gets a virtual environment of its own (see :mod:`ecap_labelstudio.server` for why).
Errors are shown as ecap's own commands show them (:func:`ecap.cli_api.handle_errors`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click

from ecap.cli_api import handle_errors

from .server import VERSION, LocalServer, install, installed_version, venv_path, write_secret

#: Where ``serve`` reads an admin token to preset; never a command-line flag, which ``ps`` shows.
TOKEN_ENV = "ECAP_LABEL_STUDIO_TOKEN"


@click.group("labelstudio")
def labelstudio_command() -> None:
    """Run the Label Studio server that `annotate: label-studio` steps talk to."""


@labelstudio_command.command("install-server")
@click.option(
    "--venv",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create it [default: $ECAP_LABEL_STUDIO_VENV, else "
    "~/.cache/ecap/label-studio-venv].",
)
@click.option("--version", default=VERSION, show_default=True, help="label-studio version.")
@handle_errors
def install_server(venv: Path | None, version: str) -> None:
    """Install the Label Studio server into its own virtual environment."""
    target = venv or venv_path()
    found = installed_version(target)
    if found == version:
        click.echo(f"Label Studio {version} is already installed in {target}")
        return
    if found is not None:
        click.echo(f"{target} holds label-studio {found}; replacing it")
    click.echo(f"installing label-studio=={version} into {target} (about a gigabyte)...")
    command = install(target, version)
    click.echo(f"installed: {command}")


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM ends ``serve`` the way Ctrl-C does, so the Label Studio child is stopped with it."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@labelstudio_command.command("serve")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("~/.local/share/ecap/label-studio").expanduser(),
    show_default=True,
    help="Database, uploads and log.",
)
@click.option(
    "--document-root",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder the server may serve local images from (the spec's document_root).",
)
@click.option("--port", type=int, default=8080, show_default=True)
@handle_errors
def serve(data_dir: Path, document_root: Path, port: int) -> None:
    """Start Label Studio on 127.0.0.1 and keep it running until Ctrl-C.

    The admin's API token is random unless $ECAP_LABEL_STUDIO_TOKEN presets it (at least 6
    characters; only the first start of a data folder stores it)."""
    # Credentials are created on the first start of a data folder only: keep them for the next.
    token_file, password_file = data_dir / "api-token", data_dir / "admin-password"
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and token_file.exists():
        token = token_file.read_text().strip()
    password = password_file.read_text().strip() if password_file.exists() else None
    server = LocalServer(
        data_dir, document_root=document_root, port=port, token=token, password=password
    )
    click.echo(f"starting Label Studio {VERSION} (the first start takes a minute)...")
    with server:
        for path, secret in ((token_file, server.token), (password_file, server.password)):
            write_secret(path, secret)
        click.echo(
            f"Label Studio is up at {server.url} (log: {server.log_file})\n"
            f"  sign in as {server.username} with the password in {password_file}\n"
            f"  export LABEL_STUDIO_URL={server.url}\n"
            f"  export LABEL_STUDIO_API_KEY=$(cat {token_file})\n"
            f"  export LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={server.document_root}\n"
            "Ctrl-C stops it."
        )
        previous = signal.signal(signal.SIGTERM, _stop)  # a service manager stops it too
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            click.echo("stopping")
        finally:
            signal.signal(signal.SIGTERM, previous)
