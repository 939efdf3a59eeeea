"""The ``ecap`` command line. Importing it loads click and the commands' definitions, nothing
more: each command imports what it needs (pydantic, SQLAlchemy, rich...) when it runs, and a
command a plugin adds loads that plugin only when it is invoked. ``ecap --help`` lists the
plugins' commands from :mod:`.plugin_cache`, without importing a plugin."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import click

from .. import __version__
from ..errors import EcapError, RunInterrupted, SpecError
from ..logs import configure
from ..plugins import make_registries_with
from ..report.command import report_command
from ..secrets import register_environment, scrub
from . import dataset, db, export, init, pipeline, plugins, provenance, runs, testing
from . import filter as filter_cli
from .plugin_cache import (
    PluginCommand,
    Snapshot,
    load_command,
    plugin_commands,
    registry_from_cache,
    snapshot,
)


class _Group(click.Group):
    """Shows any failure as one ``Error:`` line (no traceback) and exits 1.

    A new user's mistakes (a missing file, a bad URL, a wrong id, an invalid value) surface as
    many exception types, not only :class:`EcapError`; all of them get one line, scrubbed of
    every known secret. ``ecap -v`` (or ``ECAP_TRACEBACK=1``) adds the traceback for a bug
    report. Click's own usage errors, ``--help`` and exits pass through unchanged.

    Besides its own commands it offers the plugins' (see :mod:`.plugin_cache`): listed from what
    they declared, each loaded from its own plugin when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *(c.name for c in _plugins(ctx).commands)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = self.commands.get(cmd_name)
        if own is not None:
            return own
        declared = next((c for c in _plugins(ctx).commands if c.name == cmd_name), None)
        return None if declared is None else _PluginCommand(declared)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during a run
            code = exc.exit_code if isinstance(exc, RunInterrupted) else 130
            click.secho(f"Interrupted ({exc or 'SIGINT'}); what was committed is kept.", err=True)
            ctx.exit(code)
        except SpecError as exc:
            _fail(ctx, *(str(problem) for problem in exc.problems))
        except EcapError as exc:
            _fail(ctx, str(exc))
        except Exception as exc:  # the last line of defence of a CLI
            if ctx.meta.get("ecap.traceback") or os.environ.get("ECAP_TRACEBACK"):
                click.echo(scrub(traceback.format_exc()), err=True)
            _fail(ctx, f"{type(exc).__name__}: {exc}")


class _PluginCommand(click.Command):
    """A plugin's command as its declaration describes it (name and help, for ``ecap --help``),
    standing in for the real one until it runs: then its plugin, and only that one, is loaded and
    the real command parses the arguments and runs."""

    def __init__(self, declared: PluginCommand) -> None:
        super().__init__(
            declared.name,
            help=declared.help,
            short_help=declared.short_help,
            hidden=declared.hidden,
            deprecated=declared.deprecated,
        )
        self.declared = declared

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        command = load_command(self.declared)
        if command is None:
            raise click.UsageError(
                f"No such command {self.declared.name!r}: plugin '{self.declared.plugin}' no "
                "longer adds it (see ecap plugins doctor).",
                parent,
            )
        return command.make_context(info_name, args, parent, **extra)


def _plugins(ctx: click.Context) -> Snapshot:
    """The plugins' commands and descriptions, read once per invocation."""
    found: Snapshot = ctx.meta.get("ecap.plugins") or snapshot()
    ctx.meta["ecap.plugins"] = found
    return found


def _fail(ctx: click.Context, *problems: str) -> None:
    """Print each problem as one scrubbed ``Error:`` line and exit 1. A spec with several
    problems gets one line for each, so each starts with its ``file:line: field``."""
    lines = [" ".join(scrub(problem).split()) for problem in problems]
    for line in [line for line in lines if line] or ["failed without a message"]:
        click.secho(f"Error: {line}", fg="red", err=True)
    ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ecap")
@click.option(
    "--log-json", is_flag=True, help="Write logs as JSON lines (also ECAP_LOG_FORMAT=json)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every step and run event.")
@click.pass_context
def cli(ctx: click.Context, log_json: bool, verbose: bool) -> None:
    """ecap: build, refine and judge training data for instruction-guided image editing."""
    register_environment()  # keys SDKs read from the environment are never printed
    ctx.meta["ecap.traceback"] = verbose
    make_registries_with(registry_from_cache)  # a spec's run imports only the plugins it names
    configure(json_lines=log_json or None, level=logging.INFO if verbose else logging.WARNING)


for module in (init, pipeline, plugins, runs, provenance, export, dataset, db, testing, filter_cli):
    cli.add_command(module.group)
cli.add_command(plugins.schema)
cli.add_command(report_command)


def _add_plugin_commands() -> None:
    """Add every plugin's commands to :data:`cli` now, loading every plugin (for what walks the
    command tree: the docs' checks, the tests); a plugin that fails here is reported, not fatal.
    ``ecap`` itself loads a plugin's command only when it is invoked."""
    from ..plugins import get_registry

    for _, name, command in plugin_commands(get_registry())[0]:
        cli.add_command(command, name)


def main(args: list[str] | None = None) -> Any:
    return cli.main(args=args if args is not None else sys.argv[1:], prog_name="ecap")
