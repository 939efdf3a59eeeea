"""``ecap db upgrade | current``."""

from __future__ import annotations

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
    from sqlalchemy import create_engine

    from ..store import migrate

    engine = create_engine(store_url(store_ref))
    click.echo(f"store: {migrate.current_revision(engine)}  ecap: {migrate.head_revision()}")
