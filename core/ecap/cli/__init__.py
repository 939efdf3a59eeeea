"""The ``ecap`` command line. Importing it loads click, pydantic and SQLAlchemy, never a heavy ML
library or a cloud SDK: plugins import those when a step actually runs."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .. import __version__
from ..errors import EcapError
from ..logs import configure
from . import db, export, pipeline, plugins, provenance, runs


class _Group(click.Group):
    """Shows any :class:`EcapError` as a one-line message (no traceback) and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EcapError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ecap")
@click.option(
    "--log-json", is_flag=True, help="Write logs as JSON lines (also ECAP_LOG_FORMAT=json)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every step and run event.")
def cli(log_json: bool, verbose: bool) -> None:
    """ecap: build, refine and judge training data for instruction-guided image editing."""
    configure(json_lines=log_json or None, level=logging.INFO if verbose else logging.WARNING)


for module in (pipeline, plugins, runs, provenance, export, db):
    cli.add_command(module.group)
cli.add_command(plugins.schema)


def _add_plugin_commands() -> None:
    """Let plugins add commands; a plugin that fails here is reported, not fatal."""
    from ..plugins import get_registry

    registry = get_registry()
    if registry.manager is None:
        return
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            click.secho(
                f"warning: plugin '{impl.plugin_name}' failed to add commands: {exc}",
                fg="yellow",
                err=True,
            )


def main(args: list[str] | None = None) -> Any:
    _add_plugin_commands()
    return cli.main(args=args if args is not None else sys.argv[1:], prog_name="ecap")
