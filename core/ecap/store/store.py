"""Reading and writing the store.

Writes go through :meth:`Store.save_batch`, which commits a batch of finished samples together with
the records they produced and their lineage edges in one transaction: a sample is either done with
all its outputs, or not done at all. Inserts use SQLAlchemy Core executemany, not ORM objects, so
that importing hundreds of thousands of pairs stays close to raw insert speed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from . import connect, migrate, tables

if TYPE_CHECKING:
    from ..records import Item, Record, SampleError

CHUNK = 500  # ids per IN (...) query; well under every dialect's parameter limit


# The records (pydantic models) are imported where a store writes or hydrates them, not with the
# store: a reading command such as ``ecap runs list`` never needs them, and importing them cost it
# a sixth of its time.


def _new_id() -> str:
    from ..records import new_id

    return new_id()


def _utcnow() -> datetime:
    from ..records import utcnow

    return utcnow()


@functools.cache
def _by_ids(record_type: str) -> Select[Any]:
    """``SELECT <the record's fields>, step_run_id FROM <table> WHERE id IN (:ids)``, built once:
    building a statement costs more than running a primary-key lookup on SQLite. JSON columns
    come back as their stored text (see :func:`_record_json`)."""
    from ..records import RECORD_TYPES

    table = tables.RECORDS[record_type]
    columns = [
        cast(table.c[name], Text).label(name)
        if isinstance(table.c[name].type, JSON)
        else table.c[name]
        for name in RECORD_TYPES[record_type].model_fields
    ]
    return select(*columns, table.c.step_run_id).where(
        table.c.id.in_(bindparam("ids", expanding=True))
    )


@functools.cache
def _finished_outputs() -> Select[Any]:
    """``SELECT cache_key, outputs FROM sample_results WHERE cache_key IN (:keys)``, built once,
    the outputs as their stored text (see :meth:`Store.finished`)."""
    results = tables.sample_results.c
    return select(results.cache_key, cast(results.outputs, Text)).where(
        results.cache_key.in_(bindparam("keys", expanding=True))
    )


@functools.cache
def _json_fields(record_type: str) -> frozenset[str]:
    from ..records import RECORD_TYPES

    table = tables.RECORDS[record_type]
    fields = RECORD_TYPES[record_type].model_fields
    return frozenset(name for name in fields if isinstance(table.c[name].type, JSON))


def _record_json(row: Any, fields: Iterable[str], json_fields: frozenset[str]) -> str:
    """A record's row as one JSON document, its JSON columns' stored text spliced in as is:
    pydantic parses and validates that in one pass, about twice as fast as decoding each
    column with :mod:`json` and validating the objects (hydrating a step's cached items)."""
    parts = (
        f'"{name}":' + (_stored_json(row[name]) if name in json_fields else _json(row[name]))
        for name in fields
    )
    return "{" + ",".join(parts) + "}"


def _stored_json(text: str | None) -> str:
    return "null" if text is None else text


def _json(value: Any) -> str:
    """``json.dumps(value)``, with the common cases (a string, none) without building an
    encoder for each."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    return "null" if value is None else json.dumps(value)


@dataclass(frozen=True)
class _BulkInsert:
    """An ``INSERT`` of many rows into one table, compiled once per dialect, whose rows go to the
    driver's ``executemany`` with each column's bind processor applied (JSON serialised, SQLite
    timestamps formatted) exactly as SQLAlchemy applies them: the rows stored are the same, minus
    SQLAlchemy's cost of building a parameter set per row, which was most of a commit's time."""

    sql: str
    names: tuple[str, ...]  # the statement's parameters, in its order
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    @classmethod
    def of(cls, statement: Any, dialect: Any, columns: tuple[str, ...]) -> _BulkInsert:
        """``statement`` (an insert into one table) for rows holding exactly ``columns``."""
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        names = tuple(compiled.positiontup) if compiled.positional else columns
        if set(names) != set(columns):
            raise ValueError(f"{statement.table.name}: parameters {names} are not {columns}")
        types = {c.key: c.type for c in statement.table.columns}
        processors = tuple(types[n].dialect_impl(dialect).bind_processor(dialect) for n in names)
        return cls(compiled.string, names, processors, bool(compiled.positional))

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        pick = operator.itemgetter(*self.names)
        if len(self.names) == 1:
            values = [[pick(row)] for row in rows]
        else:
            values = [list(pick(row)) for row in rows]
        for position, process in enumerate(self.processors):
            if process is None:
                continue
            last: Any = _UNSET
            for row_values in values:
                value = row_values[position]
                if value is not last:  # a batch's rows share their time: convert it once
                    last, converted = value, process(value)
                row_values[position] = converted
        if not self.positional:
            conn.exec_driver_sql(self.sql, [dict(zip(self.names, v, strict=True)) for v in values])
        else:
            conn.exec_driver_sql(self.sql, [tuple(v) for v in values])


_UNSET = object()


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class CompletedSample:
    """A sample a step finished: its cache key, its input, and what it produced as
    ``{slot: record id}`` refs (one per output item)."""

    cache_key: str
    input_key: str
    outputs: list[dict[str, str]]


@dataclass(frozen=True)
class Holder:
    """Who claims samples: one process's work on one step, with what a person waiting needs to
    know (which run, which process on which host, since when)."""

    id: str
    run_id: str | None
    pid: int
    host: str
    since: datetime

    @classmethod
    def this_process(cls, run_id: str | None) -> Holder:
        return cls(_new_id(), run_id, os.getpid(), socket.gethostname(), _utcnow())

    def describe(self) -> str:
        run = f"run {self.run_id}" if self.run_id else "a run"
        return (
            f"{run} by pid {self.pid} on host {self.host} since {self.since:%Y-%m-%d %H:%M:%S} UTC"
        )


def _live(expires: datetime, host: str, pid: int, now: datetime) -> bool:
    """Whether a claim still holds: its lease runs, and its holder, when it is a process on this
    host, still exists (a killed run's samples are free at once to the run that resumes it, not
    after the lease). A holder elsewhere is trusted until its lease lapses."""
    if _aware(expires) <= now:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to someone else
        return True
    return True


def _aware(moment: datetime) -> datetime:
    """SQLite gives back timestamps without their (UTC) offset."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_row(record: Record, step_run_id: str | None, now: datetime) -> dict[str, Any]:
    row = record.model_dump(mode="json")
    row["step_run_id"] = step_run_id
    row["created_at"] = now
    return row


class Store:
    """A connection to one store. Cheap to construct; migrations run on open.

    ``read_only=True`` is for commands that only read: the store must already exist at this
    ecap's schema revision (nothing is created, migrated or written, even by mistake: the
    connection itself is read-only), and a database that is not an ecap store is refused.
    """

    def __init__(self, url: str, *, auto_upgrade: bool = True, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.engine: Engine = connect.open_engine(url, self.redacted_url, read_only=read_only)
        self._writes = connect.writer(self.engine)
        self._bulk_inserts: dict[tuple[str, str | None, tuple[str, ...]], _BulkInsert] = {}
        try:
            if read_only:
                migrate.check_readable(self.engine, self.redacted_url)
            else:
                migrate.ensure_schema(self.engine, self.redacted_url, auto_upgrade)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def redacted_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- runs and step runs -------------------------------------------------------------------

    def start_run(
        self,
        *,
        name: str,
        spec_path: str,
        spec_text: str,
        spec_hash: str,
        ecap_version: str,
        plugins: dict[str, str],
    ) -> str:
        run_id = _new_id()
        with self._writes.begin() as conn:
            conn.execute(
                insert(tables.runs).values(
                    id=run_id,
                    name=name,
                    spec_path=spec_path,
                    spec_text=spec_text,
                    spec_hash=spec_hash,
                    status="running",
                    ecap_version=ecap_version,
                    plugins=plugins,
                    started_at=_utcnow(),
                    finished_at=None,
                    error=None,
                )
            )
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        with self._writes.begin() as conn:
            conn.execute(
                update(tables.runs)
                .where(tables.runs.c.id == run_id)
                .values(status=status, finished_at=_utcnow(), error=error)
            )

    def start_step(
        self,
        *,
        run_id: str,
        step_id: str,
        kind: str,
        plugin: str,
        plugin_version: str,
        package: str,
        config: dict[str, Any],
        step_key: str,
    ) -> str:
        step_run_id = _new_id()
        with self._writes.begin() as conn:
            conn.execute(
                insert(tables.step_runs).values(
                    id=step_run_id,
                    run_id=run_id,
                    step_id=step_id,
                    kind=kind,
                    plugin=plugin,
                    plugin_version=plugin_version,
                    package=package,
                    config=config,
                    step_key=step_key,
                    status="running",
                    counts={},
                    started_at=_utcnow(),
                    finished_at=None,
                    error=None,
                )
            )
        return step_run_id

    def finish_step(
        self, step_run_id: str, status: str, counts: dict[str, int], error: str | None = None
    ) -> None:
        with self._writes.begin() as conn:
            conn.execute(
                update(tables.step_runs)
                .where(tables.step_runs.c.id == step_run_id)
                .values(status=status, counts=counts, finished_at=_utcnow(), error=error)
            )

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tables.runs).order_by(tables.runs.c.id.desc()).limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            prefixed = tables.runs.c.id.startswith(run_id, autoescape=True)  # % and _ are literal
            row = (
                conn.execute(select(tables.runs).where(prefixed).order_by(tables.runs.c.id.desc()))
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def step_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tables.step_runs)
                .where(tables.step_runs.c.run_id == run_id)
                .order_by(tables.step_runs.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def step_run(self, step_run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(tables.step_runs).where(tables.step_runs.c.id == step_run_id))
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def latest_step_run(self, step_id: str, run_id: str | None = None) -> dict[str, Any] | None:
        query = select(tables.step_runs).where(tables.step_runs.c.step_id == step_id)
        if run_id:
            query = query.where(tables.step_runs.c.run_id.startswith(run_id, autoescape=True))
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(tables.step_runs.c.id.desc())).mappings().first()
            return dict(row) if row else None

    def step_outputs(self, step_key: str) -> list[Item]:
        """Every item a step (identified by its key) has produced, in completion order."""
        with self.engine.connect() as conn:
            outputs = (
                conn.execute(
                    select(tables.sample_results.c.outputs)
                    .where(tables.sample_results.c.step_key == step_key)
                    .order_by(tables.sample_results.c.created_at)
                )
                .scalars()
                .all()
            )
        return self.hydrate([ref for refs in outputs for ref in refs])

    def failures(self, step_run_ids: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(step_run_ids):
                rows = conn.execute(
                    select(tables.sample_failures)
                    .where(tables.sample_failures.c.step_run_id.in_(chunk))
                    .order_by(tables.sample_failures.c.id)
                ).mappings()
                out.extend(dict(r) for r in rows)
        return out

    # -- per-sample completion --------------------------------------------------------------

    def finished(self, cache_keys: Sequence[str]) -> dict[str, list[dict[str, str]]]:
        """cache key -> output refs, for the keys already finished."""
        done: dict[str, list[dict[str, str]]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(cache_keys):
                rows = conn.execute(_finished_outputs(), {"keys": list(chunk)}).all()
                # One JSON document per chunk: decoding each row's refs alone cost more than
                # finding the row (a step's cached samples are all looked up on every run).
                refs = json.loads("[" + ",".join(outputs for _, outputs in rows) + "]")
                done.update(zip((key for key, _ in rows), refs, strict=True))
        return done

    def save_batch(
        self,
        step_run_id: str,
        step_key: str,
        step_id: str,
        finished: Sequence[CompletedSample],
        failed: Sequence[tuple[str, SampleError]],
        new_records: Iterable[Record],
        extra_edges: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Commit finished samples, the records they produced, their edges and any failures.

        A record already in the store (a pair imported again, an instruction another step or
        batch wrote first) keeps its first row and its edges; only records this call inserted add
        edges, so lineage never holds the same edge twice. A sample another writer finished first
        (two runs sharing a step) keeps the first result: saving it again is not an error. The
        claims on finished samples end here, in the same transaction.
        """
        now = _utcnow()
        by_type: dict[str, dict[str, Record]] = defaultdict(dict)
        for record in new_records:
            by_type[record.record_type].setdefault(record.id, record)
        edges = list(extra_edges)
        with self._writes.begin() as conn:
            for record_type, records in by_type.items():
                inserted = self._insert_new_records(conn, record_type, records, step_run_id, now)
                edges.extend(
                    {
                        "src_type": r.record_type,
                        "src_id": r.id,
                        "verb": e.verb,
                        "dst_type": e.target_type,
                        "dst_id": e.target_id,
                        "step_run_id": step_run_id,
                    }
                    for record_id, r in records.items()
                    if record_id in inserted
                    for e in r.lineage()
                )
            self._insert_rows(conn, tables.edges, edges)
            if finished:
                self._insert_rows(
                    conn,
                    tables.sample_results,
                    [
                        {
                            "cache_key": f.cache_key,
                            "step_key": step_key,
                            "input_key": f.input_key,
                            "outputs": f.outputs,
                            "step_run_id": step_run_id,
                            "created_at": now,
                        }
                        for f in finished
                    ],
                    keep_existing="cache_key",
                )
                for chunk in _chunks([f.cache_key for f in finished]):
                    conn.execute(delete(tables.claims).where(tables.claims.c.cache_key.in_(chunk)))
            if failed:
                self._insert_rows(
                    conn,
                    tables.sample_failures,
                    [
                        {
                            "step_run_id": step_run_id,
                            "step_id": step_id,
                            "input_key": key,
                            "error_type": err.error_type,
                            "message": err.message,
                            "created_at": now,
                        }
                        for key, err in failed
                    ],
                )

    def _insert_new_records(
        self,
        conn: Connection,
        record_type: str,
        records: dict[str, Record],
        step_run_id: str,
        now: datetime,
    ) -> set[str]:
        """Insert the records not stored yet; returns the ids this call inserted."""
        table = tables.RECORDS[record_type]
        if conn.dialect.name == "sqlite":
            # This transaction holds SQLite's write lock (BEGIN IMMEDIATE) until it commits, so
            # the ids not stored now are exactly the ones it inserts.
            stored: set[str] = set()
            for chunk in _chunks(list(records)):
                stored.update(
                    conn.execute(select(table.c.id).where(table.c.id.in_(chunk))).scalars()
                )
            fresh = [record for record_id, record in records.items() if record_id not in stored]
            rows = [record_row(record, step_run_id, now) for record in fresh]
            self._insert_rows(conn, table, rows)
            return {record.id for record in fresh}
        # Other writers commit meanwhile: the database says which rows this statement inserted.
        statement = self._insert_ignoring_duplicates(table, "id")
        rows = [record_row(record, step_run_id, now) for record in records.values()]
        return set(conn.execute(statement.returning(table.c.id), rows).scalars())

    def _insert_rows(
        self,
        conn: Connection,
        table: Any,
        rows: Sequence[dict[str, Any]],
        *,
        keep_existing: str | None = None,
    ) -> None:
        """Insert ``rows`` (dicts with the same keys) into ``table`` in one ``executemany``; with
        ``keep_existing``, a row whose ``keep_existing`` column is stored already is skipped."""
        if not rows:
            return
        columns = tuple(rows[0])
        cache_key = (table.name, keep_existing, columns)
        bulk = self._bulk_inserts.get(cache_key)
        if bulk is None:
            statement = (
                self._insert_ignoring_duplicates(table, keep_existing)
                if keep_existing
                else insert(table)
            )
            bulk = _BulkInsert.of(statement, self.engine.dialect, columns)
            self._bulk_inserts[cache_key] = bulk
        bulk.execute(conn, rows)

    def _insert_ignoring_duplicates(self, table: Any, key: str) -> Any:
        """``INSERT`` that keeps the row already stored under the same ``key``: pairs are
        content-addressed, and two writers may finish the same sample."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        return insert(table)

    # -- claims: writers sharing a store split a step's samples ------------------------------

    def claim(
        self, step_key: str, cache_keys: Sequence[str], holder: Holder, lease_seconds: float
    ) -> list[str]:
        """Claim the samples among ``cache_keys`` that nobody else is computing, for
        ``lease_seconds``; returns the keys granted, in the order given.

        A sample is granted when it is not finished and its claim is missing, already ``holder``'s,
        or expired (its holder died or stopped renewing). Claims are taken in one transaction
        under a lock (SQLite's write lock; a PostgreSQL advisory lock per step), so two writers
        are never granted the same sample.
        """
        keys = list(dict.fromkeys(cache_keys))
        granted: list[str] = []
        claim = tables.claims.c
        with self._writes.begin() as conn:
            self._lock_claims(conn, step_key)
            now = self._now(conn)
            for chunk in _chunks(keys):
                # Claims first, results second: a holder's save_batch adds the result and drops
                # the claim in one commit, so whenever that commit lands between the two reads
                # (PostgreSQL reads each statement at its own moment), one of them sees it.
                claimed = conn.execute(
                    select(
                        claim.cache_key, claim.holder_id, claim.expires_at, claim.host, claim.pid
                    ).where(claim.cache_key.in_(chunk))
                ).all()
                taken = {
                    key
                    for key, holder_id, expires, host, pid in claimed
                    if holder_id != holder.id and _live(expires, host, pid, now)
                }
                done = set(
                    conn.execute(
                        select(tables.sample_results.c.cache_key).where(
                            tables.sample_results.c.cache_key.in_(chunk)
                        )
                    ).scalars()
                )
                free = [k for k in chunk if k not in done and k not in taken]
                if not free:
                    continue
                # Lapsed or own claims give way. Only this step's claimers (serialised here)
                # insert claims on its keys, so a key without a row now gets none meanwhile.
                free_set = set(free)
                if stale := [row[0] for row in claimed if row[0] in free_set]:
                    conn.execute(delete(tables.claims).where(claim.cache_key.in_(stale)))
                expires = now + timedelta(seconds=lease_seconds)
                self._insert_rows(
                    conn,
                    tables.claims,
                    [
                        {
                            "cache_key": key,
                            "step_key": step_key,
                            "holder_id": holder.id,
                            "run_id": holder.run_id,
                            "pid": holder.pid,
                            "host": holder.host,
                            "since": holder.since,
                            "expires_at": expires,
                        }
                        for key in free
                    ],
                )
                granted.extend(free)
        return granted

    def renew(self, cache_keys: Sequence[str], holder: Holder, lease_seconds: float) -> list[str]:
        """Extend ``holder``'s claims on ``cache_keys``; returns the keys it still holds (a claim
        that lapsed and was taken by another writer is not renewed)."""
        renewed: list[str] = []
        claim = tables.claims.c
        with self._writes.begin() as conn:
            expires = self._now(conn) + timedelta(seconds=lease_seconds)
            for chunk in _chunks(list(cache_keys)):
                mine = and_(claim.cache_key.in_(chunk), claim.holder_id == holder.id)
                conn.execute(update(tables.claims).where(mine).values(expires_at=expires))
                renewed.extend(conn.execute(select(claim.cache_key).where(mine)).scalars())
        return renewed

    def release(self, cache_keys: Sequence[str], holder: Holder) -> None:
        """Give up ``holder``'s claims on ``cache_keys`` (samples it failed or will not compute),
        so that another writer may take them at once."""
        with self._writes.begin() as conn:
            for chunk in _chunks(list(cache_keys)):
                conn.execute(
                    delete(tables.claims).where(
                        tables.claims.c.cache_key.in_(chunk), tables.claims.c.holder_id == holder.id
                    )
                )

    def claim_holders(self, cache_keys: Sequence[str]) -> dict[str, Holder]:
        """Who holds a live (unexpired) claim on each of ``cache_keys``."""
        out: dict[str, Holder] = {}
        with self.engine.connect() as conn:
            now = self._now(conn)
            for chunk in _chunks(list(cache_keys)):
                rows = conn.execute(
                    select(tables.claims).where(tables.claims.c.cache_key.in_(chunk))
                ).mappings()
                for row in rows:
                    if _live(row["expires_at"], row["host"], row["pid"], now):
                        out[row["cache_key"]] = Holder(
                            id=row["holder_id"],
                            run_id=row["run_id"],
                            pid=row["pid"],
                            host=row["host"],
                            since=_aware(row["since"]),
                        )
        return out

    def _lock_claims(self, conn: Connection, step_key: str) -> None:
        """Serialise claimers of one step. SQLite's ``BEGIN IMMEDIATE`` already has."""
        if conn.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(step_key.encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def _now(self, conn: Connection) -> datetime:
        """The database server's clock on PostgreSQL (writers on many hosts agree on it), this
        machine's on SQLite (every writer is on this machine)."""
        if conn.dialect.name == "postgresql":
            return _aware(conn.execute(select(func.now())).scalar_one())
        return _utcnow()

    # -- metrics of long steps (training curves) -------------------------------------------

    def save_metrics(self, step_run_id: str, step: int, values: dict[str, float]) -> None:
        """Store what a long step reported at ``step`` (a training's logging step)."""
        with self._writes.begin() as conn:
            row = {"step_run_id": step_run_id, "step": step, "values": values}
            conn.execute(insert(tables.metrics), [{**row, "created_at": _utcnow()}])

    def metrics(self, step_run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every metric row of these step runs, in the order reported."""
        with self.engine.connect() as conn:
            metric = tables.metrics.c
            rows = conn.execute(
                select(metric.step_run_id, metric.step, metric["values"])  # .values: a method
                .where(metric.step_run_id.in_(list(step_run_ids)))
                .order_by(metric.id)
            )
            return [{"step_run_id": r, "step": st, "values": v} for r, st, v in rows]

    # -- external tasks (humans, batch jobs) ------------------------------------------------

    def external_tasks(self, cache_keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(cache_keys):
                rows = conn.execute(
                    select(
                        tables.external_tasks.c.cache_key, tables.external_tasks.c.external_id
                    ).where(tables.external_tasks.c.cache_key.in_(chunk))
                )
                out.update({key: external for key, external in rows})
        return out

    def save_external_tasks(
        self, step_run_id: str, step_key: str, tasks: Sequence[tuple[str, str, str]]
    ) -> None:
        """Persist (cache key, input key, external id) before anything waits on them."""
        now = _utcnow()
        with self._writes.begin() as conn:
            conn.execute(
                self._insert_ignoring_duplicates(tables.external_tasks, "cache_key"),
                [
                    {
                        "cache_key": c,
                        "step_key": step_key,
                        "input_key": i,
                        "external_id": e,
                        "step_run_id": step_run_id,
                        "created_at": now,
                    }
                    for c, i, e in tasks
                ],
            )

    # -- records ----------------------------------------------------------------------------

    def records(
        self, record_type: str, ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, Record]:
        """Records of one type by id (missing ids are left out), on ``conn`` if given."""
        return {
            record_id: record
            for record_id, (record, _) in self.records_with_step_runs(
                record_type, ids, conn
            ).items()
        }

    def records_with_step_runs(
        self, record_type: str, ids: Iterable[str], conn: Connection | None = None
    ) -> dict[str, tuple[Record, str | None]]:
        """Records of one type by id, each with the id of the step run that wrote it."""
        if conn is None:
            with self.engine.connect() as own:
                return self.records_with_step_runs(record_type, ids, own)
        from ..records import RECORD_TYPES

        cls, statement = RECORD_TYPES[record_type], _by_ids(record_type)
        fields, json_fields = list(cls.model_fields), _json_fields(record_type)
        out: dict[str, tuple[Record, str | None]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            for row in conn.execute(statement, {"ids": list(chunk)}).mappings():
                out[row["id"]] = (
                    cls.model_validate_json(_record_json(row, fields, json_fields)),
                    row["step_run_id"],
                )
        return out

    def record(self, record_type: str, record_id: str) -> Record | None:
        return self.records(record_type, [record_id]).get(record_id)

    def find(self, record_id: str) -> list[tuple[str, Record]]:
        """Every record whose id is, or starts with, ``record_id`` (ids are long; prefixes help)."""
        found: list[tuple[str, Record]] = []
        with self.engine.connect() as conn:
            for record_type in tables.RECORDS:  # an exact id is a primary-key lookup: try it first
                hit = self.records(record_type, [record_id], conn).get(record_id)
                if hit is not None:
                    found.append((record_type, hit))
            if found:
                return found
            for record_type, table in tables.RECORDS.items():
                prefixed = table.c.id.startswith(record_id, autoescape=True)
                ids = conn.execute(select(table.c.id).where(prefixed).limit(5)).scalars().all()
                found.extend(
                    (record_type, r) for r in self.records(record_type, ids, conn).values()
                )
        return found

    def hydrate(self, refs: Sequence[dict[str, str]]) -> list[Item]:
        """Rebuild items from ``{slot: id}`` refs, fetching each record type in one pass."""
        from ..records import Item

        ids_by_slot: dict[str, list[str]] = defaultdict(list)
        for ref in refs:
            for slot, record_id in ref.items():
                ids_by_slot[slot].append(record_id)
        fetched = {slot: self.records(slot, ids) for slot, ids in ids_by_slot.items()}
        return [Item(**{slot: fetched[slot][rid] for slot, rid in ref.items()}) for ref in refs]

    def edges(
        self, *, src: tuple[str, str] | None = None, dst: tuple[str, str] | None = None
    ) -> list[dict[str, Any]]:
        edge = tables.edges.c
        query = select(tables.edges)
        if src:
            query = query.where(edge.src_id == src[1], edge.src_type == src[0])
        if dst:
            query = query.where(edge.dst_id == dst[1], edge.dst_type == dst[0])
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(edge.id)).mappings()]
