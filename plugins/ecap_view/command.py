"""``ecap view``: serve the read-only web page over a store until interrupted."""

from __future__ import annotations

import os
import socket

import click

from ecap.cli_api import handle_errors, open_store, store_option
from ecap.errors import EcapError
from ecap.interfaces import require
from ecap.net import is_loopback_host

LOOPBACK = "127.0.0.1"
#: The names a browser on this machine reaches a loopback page by.
LOCAL_NAMES = ("127.0.0.1", "localhost")


def check_free(host: str, port: int) -> None:
    """Say which address is taken, in ecap's one error line, before the server starts (uvicorn
    would log it and exit with status 3)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise EcapError(
            f"cannot listen on {host}:{port} ({reason}); choose another with --port"
        ) from exc


@click.command("view")
@store_option
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--host",
    default=LOOPBACK,
    show_default=True,
    help="Address to listen on. Anything but a loopback address lets other machines read the "
    "store (instructions, verdicts, image files of its pairs): there is no login.",
)
@handle_errors
def view_command(store_ref: str | None, port: int, host: str) -> None:
    """A local web page over the store, read-only: runs and steps with counts, failures and
    timings; pairs side by side with every instruction, score and verdict; the lineage of any
    record; the report with training curves; search, filters and export of a selection.
    """
    for module in ("starlette", "jinja2", "uvicorn"):
        require(module, "view", "view")
    import uvicorn

    from .app import create_app

    check_free(host, port)
    store = open_store(store_ref)
    try:
        if not is_loopback_host(host):
            click.secho(
                f"warning: listening on {host}: anyone who can reach it can read this store",
                fg="yellow",
                err=True,
            )
        click.echo(f"ecap view of {store.redacted_url} on http://{host}:{port}/ (Ctrl+C stops)")
        hosts = [*LOCAL_NAMES, host] if is_loopback_host(host) else ["*"]
        app = create_app(store, allowed_hosts=hosts)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        store.close()
