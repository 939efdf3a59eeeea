"""Helpers every command shares: which store to open, and how to print listings."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..cli_api import json_option as json_option  # shared with plugin commands
from ..cli_api import store_option as store_option
from .tables import print_table

if TYPE_CHECKING:
    from rich.console import Console

    from ..store import Store

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def console() -> Console:
    """The terminal the commands print tables and trees to, made on first use: importing rich
    costs a fifth of what ``ecap --help`` may take, and many commands never print through it."""
    from rich.console import Console

    return Console()


class LazyChoice(click.Choice):
    """A :class:`click.Choice` whose choices are read when first needed (parsing the option or
    showing its help), so that building the command line does not import the module that defines
    them (the plugin kinds, the record types: pydantic and the interfaces)."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        # click.Choice.__init__ would read the choices now; everything else it sets is this.
        self._load = load
        self.case_sensitive = True

    @functools.cached_property
    def choices(self) -> Sequence[str]:  # type: ignore[override]
        return tuple(self._load())


def store_url(ref: str | None, spec_dir: Path | None = None) -> str:
    """Resolve ``--store``: a URL, a SQLite file, or a spec file (its ``store:`` or its folder).

    Relative SQLite paths inside a spec resolve against the spec's folder.
    """
    if ref is None:
        return f"sqlite:///{((spec_dir or Path.cwd()) / 'ecap.db').resolve()}"
    if "://" in ref:
        if spec_dir and ref.startswith("sqlite:///") and not ref.startswith("sqlite:////"):
            relative = ref.removeprefix("sqlite:///")
            if relative and relative != ":memory:":
                return f"sqlite:///{(spec_dir / relative).resolve()}"
        return ref
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        from ..spec import ENV_PATTERN

        raw = yaml.safe_load(path.read_text()) or {}
        declared = raw.get("store") if isinstance(raw, dict) else None
        if declared:
            declared = ENV_PATTERN.sub(
                lambda m: os.environ.get(m.group(1), m.group(2) or ""), declared
            )
        return store_url(declared or None, path.resolve().parent)
    return f"sqlite:///{path.resolve()}"


def open_store(ref: str | None) -> Store:
    """Open an existing store for the reading commands, which never create, upgrade or write
    anything (an unrelated or damaged database is refused, saying why)."""
    from ..store import Store

    return Store(store_url(ref), read_only=True)


def emit(
    rows: Any, as_json: bool, *, columns: Sequence[str] = (), title: str | None = None
) -> None:
    """Print ``rows`` as JSON, or as an 80-column table of ``columns`` (see :mod:`.tables`)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    print_table(console(), rows, columns, title)
