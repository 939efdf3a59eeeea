"""Reading and writing the store.

Writes go through :meth:`Store.save_batch`, which commits a batch of finished samples together with
the records they produced and their lineage edges in one transaction: a sample is either done with
all its outputs, or not done at all. Inserts use SQLAlchemy Core executemany, not ORM objects, so
that importing hundreds of thousands of pairs stays close to raw insert speed.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from ..records import RECORD_TYPES, Item, Record, SampleError, new_id, utcnow
from . import migrate
from .schema import (
    RECORD_TABLES,
    Edge,
    ExternalTask,
    Run,
    SampleFailure,
    SampleResult,
    StepRun,
)

CHUNK = 500  # ids per IN (...) query; well under every dialect's parameter limit


@functools.cache
def _by_ids(record_type: str) -> Select[Any]:
    """``SELECT * FROM <table> WHERE id IN (:ids)``, built once: building a statement costs more
    than running a primary-key lookup on SQLite."""
    table = RECORD_TABLES[record_type]
    return select(table).where(table.id.in_(bindparam("ids", expanding=True)))


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Finished:
    """A sample a step finished: its cache key, its input, and what it produced as
    ``{slot: record id}`` refs (one per output item)."""

    cache_key: str
    input_key: str
    outputs: list[dict[str, str]]


def record_row(record: Record, step_run_id: str | None, now: datetime) -> dict[str, Any]:
    row = record.model_dump(mode="json")
    row["step_run_id"] = step_run_id
    row["created_at"] = now
    return row


class Store:
    """A connection to one store. Cheap to construct; migrations run on open."""

    def __init__(self, url: str, *, auto_upgrade: bool = True) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        migrate.ensure_schema(self.engine, self.redacted_url, auto_upgrade)

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
        run_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(
                insert(Run).values(
                    id=run_id,
                    name=name,
                    spec_path=spec_path,
                    spec_text=spec_text,
                    spec_hash=spec_hash,
                    status="running",
                    ecap_version=ecap_version,
                    plugins=plugins,
                    started_at=utcnow(),
                    finished_at=None,
                    error=None,
                )
            )
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status=status, finished_at=utcnow(), error=error)
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
        step_run_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(
                insert(StepRun).values(
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
                    started_at=utcnow(),
                    finished_at=None,
                    error=None,
                )
            )
        return step_run_id

    def finish_step(
        self, step_run_id: str, status: str, counts: dict[str, int], error: str | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(StepRun)
                .where(StepRun.id == step_run_id)
                .values(status=status, counts=counts, finished_at=utcnow(), error=error)
            )

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Run).order_by(Run.id.desc()).limit(limit)).mappings()
            return [dict(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(Run).where(Run.id.startswith(run_id)).order_by(Run.id.desc()))
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def step_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)
            ).mappings()
            return [dict(r) for r in rows]

    def step_run(self, step_run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(StepRun).where(StepRun.id == step_run_id)).mappings().first()
            return dict(row) if row else None

    def latest_step_run(self, step_id: str, run_id: str | None = None) -> dict[str, Any] | None:
        query = select(StepRun).where(StepRun.step_id == step_id)
        if run_id:
            query = query.where(StepRun.run_id.startswith(run_id))
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(StepRun.id.desc())).mappings().first()
            return dict(row) if row else None

    def step_outputs(self, step_key: str) -> list[Item]:
        """Every item a step (identified by its key) has produced, in completion order."""
        with self.engine.connect() as conn:
            outputs = (
                conn.execute(
                    select(SampleResult.outputs)
                    .where(SampleResult.step_key == step_key)
                    .order_by(SampleResult.created_at)
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
                    select(SampleFailure)
                    .where(SampleFailure.step_run_id.in_(chunk))
                    .order_by(SampleFailure.id)
                ).mappings()
                out.extend(dict(r) for r in rows)
        return out

    # -- per-sample completion --------------------------------------------------------------

    def finished(self, cache_keys: Sequence[str]) -> dict[str, list[dict[str, str]]]:
        """cache key -> output refs, for the keys already finished."""
        done: dict[str, list[dict[str, str]]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(cache_keys):
                rows = conn.execute(
                    select(SampleResult.cache_key, SampleResult.outputs).where(
                        SampleResult.cache_key.in_(chunk)
                    )
                )
                done.update({key: outputs for key, outputs in rows})
        return done

    def save_batch(
        self,
        step_run_id: str,
        step_key: str,
        step_id: str,
        finished: Sequence[Finished],
        failed: Sequence[tuple[str, SampleError]],
        new_records: Iterable[Record],
        extra_edges: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Commit finished samples, the records they produced, their edges and any failures.

        A record already in the store (a pair imported again, an instruction another step or
        batch wrote first) keeps its first row and its edges; only new records add edges, so
        lineage never holds the same edge twice.
        """
        now = utcnow()
        by_type: dict[str, dict[str, Record]] = defaultdict(dict)
        for record in new_records:
            by_type[record.record_type].setdefault(record.id, record)
        edges = list(extra_edges)
        with self.engine.begin() as conn:
            for record_type, records in by_type.items():
                table = RECORD_TABLES[record_type]
                known: set[str] = set()
                for chunk in _chunks(list(records)):
                    known.update(
                        conn.execute(select(table.id).where(table.id.in_(chunk))).scalars()
                    )
                fresh = [r for record_id, r in records.items() if record_id not in known]
                if not fresh:
                    continue
                conn.execute(
                    self._insert_ignoring_duplicates(table.__table__),  # type: ignore[attr-defined]
                    [record_row(r, step_run_id, now) for r in fresh],
                )
                edges.extend(
                    {
                        "src_type": r.record_type,
                        "src_id": r.id,
                        "verb": e.verb,
                        "dst_type": e.target_type,
                        "dst_id": e.target_id,
                        "step_run_id": step_run_id,
                    }
                    for r in fresh
                    for e in r.lineage()
                )
            if edges:
                conn.execute(insert(Edge), edges)
            if finished:
                conn.execute(
                    insert(SampleResult),
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
                )
            if failed:
                conn.execute(
                    insert(SampleFailure),
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

    def _insert_ignoring_duplicates(self, table: Any) -> Any:
        """Pairs are content-addressed: importing one twice must keep the first row."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])
        if self.engine.dialect.name == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
        return insert(table)

    # -- external tasks (humans, batch jobs) ------------------------------------------------

    def external_tasks(self, cache_keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(cache_keys):
                rows = conn.execute(
                    select(ExternalTask.cache_key, ExternalTask.external_id).where(
                        ExternalTask.cache_key.in_(chunk)
                    )
                )
                out.update({key: external for key, external in rows})
        return out

    def save_external_tasks(
        self, step_run_id: str, step_key: str, tasks: Sequence[tuple[str, str, str]]
    ) -> None:
        """Persist (cache key, input key, external id) before anything waits on them."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                insert(ExternalTask),
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
        cls, statement = RECORD_TYPES[record_type], _by_ids(record_type)
        fields = set(cls.model_fields)
        out: dict[str, tuple[Record, str | None]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            for row in conn.execute(statement, {"ids": list(chunk)}).mappings():
                out[row["id"]] = (
                    cls.model_validate({k: row[k] for k in fields}),
                    row["step_run_id"],
                )
        return out

    def record(self, record_type: str, record_id: str) -> Record | None:
        return self.records(record_type, [record_id]).get(record_id)

    def find(self, record_id: str) -> list[tuple[str, Record]]:
        """Every record whose id is, or starts with, ``record_id`` (ids are long; prefixes help)."""
        found: list[tuple[str, Record]] = []
        with self.engine.connect() as conn:
            for record_type in RECORD_TABLES:  # an exact id is a primary-key lookup: try it first
                hit = self.records(record_type, [record_id], conn).get(record_id)
                if hit is not None:
                    found.append((record_type, hit))
            if found:
                return found
            for record_type, table in RECORD_TABLES.items():
                ids = (
                    conn.execute(select(table.id).where(table.id.startswith(record_id)).limit(5))
                    .scalars()
                    .all()
                )
                found.extend(
                    (record_type, r) for r in self.records(record_type, ids, conn).values()
                )
        return found

    def hydrate(self, refs: Sequence[dict[str, str]]) -> list[Item]:
        """Rebuild items from ``{slot: id}`` refs, fetching each record type in one pass."""
        ids_by_slot: dict[str, list[str]] = defaultdict(list)
        for ref in refs:
            for slot, record_id in ref.items():
                ids_by_slot[slot].append(record_id)
        fetched = {slot: self.records(slot, ids) for slot, ids in ids_by_slot.items()}
        return [Item(**{slot: fetched[slot][rid] for slot, rid in ref.items()}) for ref in refs]

    def edges(
        self, *, src: tuple[str, str] | None = None, dst: tuple[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = select(Edge)
        if src:
            query = query.where(Edge.src_id == src[1], Edge.src_type == src[0])
        if dst:
            query = query.where(Edge.dst_id == dst[1], Edge.dst_type == dst[0])
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(Edge.id)).mappings()]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
