"""Where a record came from and where it went.

``walk`` follows lineage edges back to a record's origins and forward to everything that used it,
attaching to each record the step run and run that produced it. Fan-out is capped per node (a
dataset may use a million instructions), with the number left out reported, so a walk stays fast
and readable on any store. ``query`` filters records by step, plugin, run, origin and score.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select

from .errors import EcapError
from .records import Record
from .store import Store
from .store.schema import RECORD_TABLES, Edge, InstructionRow, Run, ScoreRow, StepRun, VerdictRow

FANOUT = 20


class _Walker:
    """One walk, on one connection: each record is read with its step run id in one query,
    statements are built once, and edges are counted only when a node has more than the fan-out
    cap."""

    def __init__(self, store: Store, conn: Connection, depth: int) -> None:
        self.store = store
        self.conn = conn
        self.depth = depth
        self._step_runs: dict[str, dict[str, Any]] = {}

    def node(
        self,
        record_type: str,
        record: Record,
        step_run_id: str | None,
        direction: str | None,
        level: int,
        seen: set[tuple[str, str]],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": record_type,
            "id": record.id,
            "record": record.model_dump(mode="json"),
            "generated_by": self.step_run(step_run_id),
        }
        if level >= self.depth:
            return out
        for side in ["origins", "uses"] if direction is None else [direction]:
            out[side], out[f"{side}_omitted"] = self.neighbours(
                record_type, record.id, side, level, seen | {(record_type, record.id)}
            )
        return out

    def neighbours(
        self, record_type: str, record_id: str, side: str, level: int, seen: set[tuple[str, str]]
    ) -> tuple[list[dict[str, Any]], int]:
        key = {"type": record_type, "id": record_id}
        rows = self.conn.execute(_EDGES[side], key).all()
        total = len(rows)
        if total > FANOUT:
            rows = rows[:FANOUT]
            total = self.conn.execute(_EDGE_COUNT[side], key).scalar_one()
        wanted: dict[str, list[str]] = {}
        for _, other_type, other_id in rows:
            if (other_type, other_id) not in seen and other_type in RECORD_TABLES:
                wanted.setdefault(other_type, []).append(other_id)
        fetched = {
            t: self.store.records_with_step_runs(t, ids, self.conn) for t, ids in wanted.items()
        }
        found = []
        for verb, other_type, other_id in rows:
            if (other_type, other_id) in seen:
                continue
            hit = fetched.get(other_type, {}).get(other_id)
            if hit is None:
                found.append({"verb": verb, "type": other_type, "id": other_id, "missing": True})
                continue
            other, step_run_id = hit
            child = self.node(other_type, other, step_run_id, side, level + 1, seen)
            found.append({"verb": verb, **child})
        return found, max(0, total - len(rows))

    def step_run(self, step_run_id: str | None) -> dict[str, Any] | None:
        if step_run_id is None:
            return None
        if step_run_id not in self._step_runs:
            row = self.conn.execute(_STEP_RUN, {"id": step_run_id}).mappings().first()
            self._step_runs[step_run_id] = dict(row) if row else {"id": step_run_id}
        return self._step_runs[step_run_id]


def _edges(side: str, count: bool) -> Any:
    """The edges out of (``uses``: into) one record, as a statement built once."""
    if side == "origins":
        mine, theirs = (Edge.src_type, Edge.src_id), (Edge.dst_type, Edge.dst_id)
    else:
        mine, theirs = (Edge.dst_type, Edge.dst_id), (Edge.src_type, Edge.src_id)
    condition = and_(mine[1] == bindparam("id"), mine[0] == bindparam("type"))
    if count:
        return select(func.count()).select_from(Edge).where(condition)
    return select(Edge.verb, *theirs).where(condition).order_by(Edge.id).limit(FANOUT + 1)


# Built once: constructing a statement costs more than running it on an indexed column.
_EDGES = {side: _edges(side, count=False) for side in ("origins", "uses")}
_EDGE_COUNT = {side: _edges(side, count=True) for side in ("origins", "uses")}
_STEP_RUN = (
    select(
        StepRun.id,
        StepRun.step_id,
        StepRun.kind,
        StepRun.plugin,
        StepRun.plugin_version,
        StepRun.package,
        StepRun.config,
        StepRun.started_at,
        Run.id.label("run_id"),
        Run.name.label("run_name"),
        Run.spec_path,
    )
    .join(Run, Run.id == StepRun.run_id)
    .where(StepRun.id == bindparam("id"))
)


def resolve(store: Store, record_id: str) -> tuple[str, Record]:
    """The one record whose id is, or starts with, ``record_id``."""
    matches = store.find(record_id)
    if not matches:
        raise EcapError(f"no record with id '{record_id}' in {store.redacted_url}")
    exact = [m for m in matches if m[1].id == record_id]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    listing = ", ".join(f"{t} {r.id}" for t, r in matches[:10])
    raise EcapError(f"'{record_id}' matches several records ({listing}); give more of the id")


def walk(store: Store, record_id: str, depth: int = 6) -> dict[str, Any]:
    record_type, record = resolve(store, record_id)
    with store.engine.connect() as conn:
        (_, step_run_id), *_ = store.records_with_step_runs(record_type, [record.id], conn).values()
        return _Walker(store, conn, depth).node(record_type, record, step_run_id, None, 0, set())


def query(
    store: Store,
    *,
    record_type: str = "instruction",
    step: str | None = None,
    plugin: str | None = None,
    run: str | None = None,
    origin: str | None = None,
    score_name: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    limit: int = 50,
    like: bool = False,
) -> list[dict[str, Any]]:
    """Records of one type matching every given filter, newest first.

    Filter values are literal: ``run`` is an id prefix, ``step`` and ``plugin`` whole names, and
    ``%`` or ``_`` in them match only themselves. With ``like=True`` they are SQL ``LIKE``
    patterns instead (``run`` still a prefix).

    Score bounds apply to a record's scores (``score_name`` picks a value; without it, a score
    record's first value) or, for verdicts, to the weighted S.
    """
    if record_type not in RECORD_TABLES:
        raise EcapError(
            f"unknown record type '{record_type}' (choose from: {', '.join(RECORD_TABLES)})"
        )
    table = RECORD_TABLES[record_type]
    stmt = select(table).join(StepRun, StepRun.id == table.step_run_id, isouter=True)
    if step:
        stmt = stmt.where(StepRun.step_id.like(step) if like else StepRun.step_id == step)
    if plugin:
        stmt = stmt.where(StepRun.plugin.like(plugin) if like else StepRun.plugin == plugin)
    if run:
        stmt = stmt.where(StepRun.run_id.startswith(run, autoescape=not like))
    if origin:
        if table is not InstructionRow:
            raise EcapError("--origin applies to instructions only")
        stmt = stmt.where(InstructionRow.origin == origin)
    if min_score is not None or max_score is not None:
        stmt = _score_filter(stmt, table, score_name, min_score, max_score)
    stmt = stmt.order_by(table.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    return [_jsonable(dict(r)) for r in rows]


def _score_filter(
    stmt: Any, table: Any, name: str | None, low: float | None, high: float | None
) -> Any:
    if table is VerdictRow:
        value: Any = VerdictRow.weighted
    else:
        if not name:
            raise EcapError("give --score-name to filter by a score value")
        value = ScoreRow.values[name].as_float()
        if table is InstructionRow:
            stmt = stmt.join(ScoreRow, ScoreRow.instruction_id == InstructionRow.id)
        elif table is not ScoreRow:
            raise EcapError("score bounds apply to instructions, scores and verdicts")
    if low is not None:
        stmt = stmt.where(value >= low)
    if high is not None:
        stmt = stmt.where(value <= high)
    return stmt


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
