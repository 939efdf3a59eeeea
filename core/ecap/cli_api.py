"""What a plugin's command needs from ecap's command line, as a small public API.

A plugin adds commands through the ``register_commands(cli)`` hook. Those commands should behave
like ecap's own: find the store the same way, offer ``--json`` the same way, and show an
:class:`~ecap.errors.EcapError` as one red line with exit status 1 instead of a traceback. This
module is the stable way to do that; :mod:`ecap.cli` and its submodules are internals that may
change at any release, and no plugin imports them::

    import click
    from ecap.cli_api import echo_json, handle_errors, json_option, open_store, store_option

    @click.command("summary")
    @store_option
    @json_option
    @handle_errors
    def summary_command(store_ref: str | None, as_json: bool) -> None:
        store = open_store(store_ref)
        ...

ecap's own commands use the same options: this module is their home, and it imports the CLI's
internals only when a function here runs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .errors import EcapError
from .secrets import scrub

if TYPE_CHECKING:
    from .store import Store

F = TypeVar("F", bound=Callable[..., Any])


def store_option(func: F) -> F:
    """``--store`` (also ``$ECAP_STORE``), passed to the command as ``store_ref``."""
    return click.option(
        "--store",
        "store_ref",
        envvar="ECAP_STORE",
        default=None,
        help="SQLAlchemy URL, a .db file, or a spec whose store to use "
        "(default: $ECAP_STORE, else ./ecap.db).",
    )(func)


def json_option(func: F) -> F:
    """``--json``, passed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def open_store(store_ref: str | None) -> Store:
    """The store ``--store`` names, opened for reading: a missing, unrelated or damaged database
    is refused with a message, never created or upgraded."""
    from .cli.common import open_store as open_for_reading

    return open_for_reading(store_ref)


def store_url(store_ref: str | None) -> str:
    """The SQLAlchemy URL ``--store`` names (a URL, a ``.db`` file, or a spec file's store)."""
    from .cli.common import store_url as resolve

    return resolve(store_ref)


def handle_errors(command: F) -> F:
    """Show an :class:`EcapError` raised by ``command`` as one ``Error: message`` line on
    standard error (scrubbed of known secrets) and exit 1, as ecap's own commands do, also when
    the command runs outside the ``ecap`` group (a test's ``CliRunner``, a plugin's own entry
    point)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EcapError as exc:
            raise click.ClickException(" ".join(scrub(str(exc)).split())) from exc

    return run  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON, what ``--json`` prints (dates and paths as text)."""
    click.echo(json.dumps(data, indent=2, default=str))


__all__ = [
    "echo_json",
    "handle_errors",
    "json_option",
    "open_store",
    "store_option",
    "store_url",
]
