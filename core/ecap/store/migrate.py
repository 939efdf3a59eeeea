"""Schema versions. A new store is created at the newest revision; an older one is upgraded when
opened for writing (``auto_upgrade``), otherwise refused with the command that upgrades it. A store
written by a newer ecap is always refused: reading it with old code could lose data.

Creating or upgrading a store is one transaction, taken under a lock, so that a process killed
half-way leaves the store as it was, and two processes opening a new store at once do not both
build it: on SQLite, ``BEGIN IMMEDIATE`` (how :func:`.connect.writer` begins transactions) admits
one writer at a time; PostgreSQL takes a transaction-scoped advisory lock. Both dialects roll DDL
back with the transaction.

Alembic is imported only to upgrade a schema or to name revisions other than the newest: opening a
store that is already at :data:`HEAD_REVISION` reads its version row with plain SQL, which keeps
Alembic's import (a quarter of what ``ecap runs list`` took) out of every reading command. A new
store is created from :mod:`.tables` directly and stamped with :data:`HEAD_REVISION` in the same
transaction (as Alembic's own documentation suggests for a database built from scratch): running
every migration and importing Alembic to do it took 0.13 s of the first ``ecap pipeline run``.
``tests/test_store.py`` checks that both ways build the same schema on every dialect.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)

from ..errors import StoreError
from .connect import writer
from .tables import metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest revision in ``migrations/versions``: a new migration updates it
#: (``tests/test_cli_startup.py`` checks it against Alembic's own reading of the scripts).
HEAD_REVISION = "0004"
VERSION_TABLE = "alembic_version"
#: Alembic's version table, as Alembic itself creates it, for stores created without Alembic.
VERSION_ROW = Table(
    VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)
#: pg_advisory_xact_lock key that serialises schema changes ("ecapschm" as a 64-bit integer).
SCHEMA_LOCK = int.from_bytes(b"ecapschm", "big", signed=True)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    return HEAD_REVISION


def known_revisions() -> list[str]:
    """Every revision this ecap knows, newest first."""
    from alembic.script import ScriptDirectory

    return [s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def store_revision(conn: Connection, url: str) -> str | None:
    """The store's schema revision; ``None`` for an empty database (a store yet to be created).

    Raises :class:`StoreError`, saying what to do, for a database that is not an ecap store and
    for one whose version row is missing, doubled or unknown.
    """
    tables = set(inspect(conn).get_table_names())
    ours = sorted(tables & set(metadata.tables))
    if VERSION_TABLE in tables:
        rows = [r for (r,) in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    else:
        rows = []
    if not rows:
        if not tables - {VERSION_TABLE}:
            return None
        if not ours:
            listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(
                f"{url} is not an ecap store: it holds other tables ({listed}). Point --store "
                "(or $ECAP_STORE, or the spec's store:) at an ecap store or at a new database"
            )
        raise StoreError(
            f"the store {url} has ecap's tables ({', '.join(ours[:4])}, ...) but no schema "
            f"version row: it is damaged, or not an ecap store. If you know its revision, "
            f"record it with: ecap db stamp REVISION --store '{url}' (this ecap knows "
            f"{', '.join(known_revisions())}); otherwise restore it from a backup"
        )
    if len(rows) > 1:
        raise StoreError(
            f"the store {url} has several schema versions ({', '.join(sorted(rows))}) in "
            f"{VERSION_TABLE}: it is damaged. Keep the right one with: "
            f"ecap db stamp REVISION --store '{url}'"
        )
    (revision,) = rows
    if revision != HEAD_REVISION and revision not in known_revisions():
        raise StoreError(
            f"the store {url} is at schema revision {revision!r}, which this ecap does not know: "
            "it was written by a newer ecap (upgrade ecap: pip install -U editcaption), or its "
            f"version row is damaged (if so: ecap db stamp REVISION --store '{url}')"
        )
    return revision


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision`` in one transaction, under the schema lock."""
    with writer(engine).begin() as conn:
        lock_schema(conn)
        _upgrade_on(conn, revision)


def _upgrade_on(conn: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config(conn.engine)
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def stamp(engine: Engine, url: str, revision: str) -> None:
    """Record ``revision`` as the store's schema version without touching its tables: the repair
    for a version row that was lost or damaged."""
    if revision not in known_revisions():
        raise StoreError(
            f"unknown schema revision {revision!r}; this ecap knows {', '.join(known_revisions())}"
        )
    with writer(engine).begin() as conn:
        lock_schema(conn)
        if VERSION_TABLE in inspect(conn).get_table_names():
            conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
        from alembic import command

        config = alembic_config(engine)
        config.attributes["connection"] = conn
        command.stamp(config, revision)


def lock_schema(conn: Connection) -> None:
    """Hold the schema lock until ``conn``'s transaction ends. On SQLite the transaction itself
    (begun IMMEDIATE) is the lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})


def ensure_schema(engine: Engine, url: str, auto_upgrade: bool) -> None:
    """Create a new store, or upgrade an older one if ``auto_upgrade``; refuse anything else."""
    head = head_revision()
    with engine.connect() as conn:
        current = _checked(conn, url)
    if current == head:
        return
    _refuse_unless_upgradable(current, url, auto_upgrade)
    with writer(engine).begin() as conn:
        lock_schema(conn)
        current = _checked(conn, url)  # another process may have created or upgraded it meanwhile
        if current == head:
            return
        _refuse_unless_upgradable(current, url, auto_upgrade)
        if current is None:
            create_on(conn)
        else:
            _upgrade_on(conn, "head")


def create_on(conn: Connection) -> None:
    """Build a new store's tables at :data:`HEAD_REVISION` on ``conn`` (inside its transaction),
    without running the migrations one by one."""
    metadata.create_all(conn)
    VERSION_ROW.create(conn)
    conn.execute(VERSION_ROW.insert().values(version_num=HEAD_REVISION))


def check_readable(engine: Engine, url: str) -> None:
    """A store that reading commands can use as it is: an ecap store at this ecap's revision."""
    with engine.connect() as conn:
        current = _checked(conn, url)
    if current is None:
        raise StoreError(
            f"{url} is not an ecap store (the database is empty); run a pipeline to create one, "
            "or point --store (or $ECAP_STORE) at one"
        )
    _refuse_unless_upgradable(current, url, auto_upgrade=False)


def _checked(conn: Connection, url: str) -> str | None:
    try:
        return store_revision(conn, url)
    except Exception as exc:
        from alembic.util import CommandError  # Alembic's own complaints about the version table

        if isinstance(exc, CommandError):
            raise StoreError(f"the store {url} has a damaged schema version: {exc}") from exc
        raise


def _refuse_unless_upgradable(current: str | None, url: str, auto_upgrade: bool) -> None:
    if current is None or current == head_revision() or auto_upgrade:
        return
    raise StoreError(
        f"the store {url} is at schema revision {current}, this ecap needs {head_revision()}.\n"
        f"Back it up, then run: ecap db upgrade --store '{url}'"
    )
