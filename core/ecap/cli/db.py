"""``ecap db upgrade | current | stamp``."""

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
    """Print the store's schema revision and the one this ecap needs (changes nothing)."""
    from sqlalchemy.engine import make_url

    from ..errors import StoreError
    from ..store import connect, migrate

    url = store_url(store_ref)
    redacted = make_url(url).render_as_string(hide_password=True)
    try:
        engine = connect.open_engine(url, redacted, read_only=True)
    except StoreError:
        file = Path(make_url(url).database or "")
        if make_url(url).get_backend_name() != "sqlite" or not file.parent.is_dir():
            raise
        click.echo(f"store: none (no file {file})  ecap: {migrate.head_revision()}")
        return
    try:
        with engine.connect() as conn:
            revision = migrate.store_revision(conn, redacted)
    finally:
        engine.dispose()
    click.echo(f"store: {revision or 'none (empty database)'}  ecap: {migrate.head_revision()}")


@group.command()
@click.argument("revision")
@store_option
def stamp(revision: str, store_ref: str | None) -> None:
    """Record REVISION as the store's schema version, changing no table: the repair for a lost
    or damaged version row, when you know which revision the tables are at."""
    from sqlalchemy.engine import make_url

    from ..store import connect, migrate

    url = store_url(store_ref)
    redacted = make_url(url).render_as_string(hide_password=True)
    engine = connect.open_engine(url, redacted, read_only=False)
    try:
        migrate.stamp(engine, redacted, revision)
    finally:
        engine.dispose()
    click.echo(f"{redacted} is now recorded at schema revision {revision}")
