"""The ``ecap`` command line. Importing it loads click, pydantic and SQLAlchemy, never a heavy ML
library or a cloud SDK: plugins import those when a step actually runs."""

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
from ..report.command import report_command
from ..secrets import register_environment, scrub
from . import db, export, init, pipeline, plugins, provenance, runs, testing
from . import filter as filter_cli


class _Group(click.Group):
    """Shows any failure as one ``Error:`` line (no traceback) and exits 1.

    A new user's mistakes (a missing file, a bad URL, a wrong id, an invalid value) surface as
    many exception types, not only :class:`EcapError`; all of them get one line, scrubbed of
    every known secret. ``ecap -v`` (or ``ECAP_TRACEBACK=1``) adds the traceback for a bug
    report. Click's own usage errors, ``--help`` and exits pass through unchanged."""

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
    configure(json_lines=log_json or None, level=logging.INFO if verbose else logging.WARNING)


for module in (init, pipeline, plugins, runs, provenance, export, db, testing, filter_cli):
    cli.add_command(module.group)
cli.add_command(plugins.schema)
cli.add_command(report_command)


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
