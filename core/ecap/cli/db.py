"""``ecap db upgrade | current``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import store_option, store_url


@click.group("db")
def group() -> None:
    """Store schema versions."""


@group.command()
@store_option
def upgrade(store_ref: str | None) -> None:
    """Migrate the store to this ecap's schema (back it up first)."""
    from ..store import Store, migrate

    store = Store(store_url(store_ref), auto_upgrade=True)
    click.echo(
        f"{store.redacted_url} is at schema revision {migrate.current_revision(store.engine)}"
    )


@group.command()
@store_option
def current(store_ref: str | None) -> None:
    """Print the store's schema revision and the one this ecap needs."""
    from sqlalchemy import create_engine, make_url

    from ..store import migrate

    url = make_url(store_url(store_ref))
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():  # connecting would create it
        click.echo(f"store: none (no file {file})  ecap: {migrate.head_revision()}")
        return
    engine = create_engine(url)
    click.echo(f"store: {migrate.current_revision(engine)}  ecap: {migrate.head_revision()}")
