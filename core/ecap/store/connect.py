"""Engines for a store: for writing (one writer transaction at a time on SQLite) or for reading
only (nothing can be created or changed), and database errors turned into one-line messages.

SQLite's Python driver starts transactions lazily and commits DDL on its own, which would leave a
half-built schema behind a killed process; ecap issues ``BEGIN`` itself instead, so that DDL is
transactional. A writer's transactions begin ``IMMEDIATE``: they take the write lock up front
and wait for it (``busy_timeout``), instead of failing with "database is locked" when a read turns
into a write while another process writes. Readers begin deferred and never block writers (WAL).
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url

from ..errors import StoreError

#: Milliseconds a SQLite connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 60_000
#: Execution option marking the connections whose transactions write.
WRITES = "ecap_writes"


def open_engine(url: str, redacted: str, *, read_only: bool) -> Engine:
    """An engine on ``url``; raises :class:`StoreError` when there is no usable store there."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, redacted, read_only)
    elif read_only and parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed, connect_args={"options": "-c default_transaction_read_only=on"}
        )
    else:
        engine = create_engine(parsed, **_pool_options(parsed))
    event.listen(engine, "handle_error", _explainer(redacted, read_only))
    return engine


def _pool_options(url: URL) -> dict[str, Any]:
    """Connection pool settings for a server database: each connection is checked before use (a
    long-lived worker outlives server restarts and idle timeouts), and the pool is sized from
    ``$ECAP_STORE_POOL_SIZE`` / ``$ECAP_STORE_MAX_OVERFLOW`` (SQLAlchemy's 5 and 10 otherwise),
    so that N workers stay under the server's ``max_connections``."""
    if url.get_backend_name() == "sqlite":
        return {}
    options: dict[str, Any] = {"pool_pre_ping": True}
    for variable, option in (
        ("ECAP_STORE_POOL_SIZE", "pool_size"),
        ("ECAP_STORE_MAX_OVERFLOW", "max_overflow"),
    ):
        if os.environ.get(variable):
            options[option] = int(os.environ[variable])
    return options


def writer(engine: Engine) -> Engine:
    """The same engine, for transactions that write (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{WRITES: True})


def _sqlite_engine(url: URL, redacted: str, read_only: bool) -> Engine:
    database = url.database
    if not database or database == ":memory:":
        engine = create_engine(url)
    else:
        path = Path(database)
        if read_only:
            if not path.is_file():
                raise StoreError(
                    f"no store at {path}; run a pipeline first, or point --store "
                    "(or $ECAP_STORE) at one"
                )
            uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
            if _frozen(path):
                uri += "&immutable=1"
            engine = create_engine(url.set(database=uri, query={"uri": "true"}))
        else:
            _check_writable(path, redacted)
            engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_setup(read_only))
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _frozen(path: Path) -> bool:
    """A store nobody can be writing: its folder is read-only and it has no pending WAL. SQLite
    cannot open a WAL store read-only without creating its ``-shm`` file next to it, unless told
    that the file cannot change (``immutable``)."""
    wal = path.with_name(path.name + "-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    return not pending and not os.access(path.parent, os.W_OK)


def _check_writable(path: Path, redacted: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the folder of the store {redacted}: {exc.strerror or exc}"
        ) from exc
    for target in (path, path.parent):  # WAL writes ecap.db-wal and ecap.db-shm next to the file
        if target.exists() and not os.access(target, os.W_OK):
            what = "folder" if target.is_dir() else "file"
            raise StoreError(
                f"cannot write the store {redacted}: its {what} {target} is read-only "
                "(reading commands can still read it)"
            )


def _sqlite_setup(read_only: bool) -> Any:
    def setup(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # ecap begins transactions itself (see above)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # before anything that locks
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return setup


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode (it stays as it was where WAL is impossible).

    The mode is stored in the file, so this is a change once, when the store is new, and a read
    afterwards. The change needs the database to itself, and SQLite refuses it at once, without
    waiting ``busy_timeout``, while another process is opening the same new store: so it is
    tried again until that other process is done, for as long as any lock is waited for."""
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_begin(conn: Any) -> None:
    writes = conn.get_execution_options().get(WRITES, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _explainer(redacted: str, read_only: bool) -> Any:
    """Database errors a person can act on, as one line instead of a driver's traceback."""

    def explain(context: ExceptionContext) -> None:
        error = context.original_exception
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        sqlstate = getattr(getattr(error, "diag", None), "sqlstate", None)
        if sqlstate == "25006" or "readonly database" in message:
            why = "it was opened for reading" if read_only else "its file or folder is read-only"
            raise StoreError(f"cannot write the store {redacted}: {why}") from error
        if isinstance(error, sqlite3.DatabaseError):
            if "file is not a database" in message:
                raise StoreError(f"{redacted} is not an ecap store (not a database)") from error
            if "unable to open database file" in message:
                raise StoreError(
                    f"cannot open the store {redacted}: {message} "
                    "(is its folder there, and readable and writable?)"
                ) from error
            if "database is locked" in message:
                raise StoreError(
                    f"the store {redacted} stayed locked by another process for "
                    f"{BUSY_TIMEOUT_MS // 1000} s; try again when it is done"
                ) from error
        if context.is_disconnect or (
            context.connection is None and type(error).__name__ == "OperationalError"
        ):
            raise StoreError(f"cannot connect to the store {redacted}: {message}") from error

    return explain
