"""The reads the web page needs that :class:`ecap.store.Store` does not offer.

Each query is SQLAlchemy Core ``text()`` on the store's engine, over the tables and indexed
columns that docs/store.md documents; records are then built through ``Store.records`` so the page
shows exactly what every other command shows. Lists are keyset-paged on the primary key (``id``
descending, newest first: ids are ULIDs): a page costs the same on the millionth row as on the
first, where ``OFFSET`` would read every row before it.

Two things differ between SQLite and PostgreSQL here, and :class:`Dialect` holds both: how a value
is read out of a JSON column, and how to keep SQLite's planner on the primary-key order.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ecap.defects import normalize_code
from ecap.errors import EcapError
from ecap.records import Instruction, Pair, Preference, Record, Reference, Score, Verdict
from ecap.store import Store

PAGE = 50

#: The table each record type lives in (docs/store.md, "Record tables").
TABLES = {
    "pair": "pairs",
    "instruction": "instructions",
    "reference": "refs",
    "score": "scores",
    "verdict": "verdicts",
    "preference": "preferences",
    "dataset": "datasets",
    "model": "models",
}

#: What a step of each kind writes, shown first on its page.
KIND_OUTPUT = {
    "source": "pair",
    "caption": "instruction",
    "filter": "score",
    "judge": "verdict",
    "annotate": "instruction",
    "train": "model",
    "export": "dataset",
}

_SCORE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def _text(sql: str, *expanding: str) -> Any:
    from sqlalchemy import bindparam, text

    return text(sql).bindparams(*(bindparam(name, expanding=True) for name in expanding))


@dataclass(frozen=True)
class Dialect:
    """SQL fragments that differ between the two supported databases."""

    name: str

    def json_text(self, column: str, param: str) -> str:
        """A JSON column's top-level value under the key bound as ``:param``, as text."""
        if self.name == "postgresql":
            return f"({column} ->> :{param})"
        return f"json_extract({column}, '$.' || json_quote(:{param}))"

    def without_index(self, column: str) -> str:
        """``column`` in a WHERE clause, compared without its own index, so that the index the
        page is ordered by (the primary key, or ``instruction_id`` inside an EXISTS) drives the
        scan. SQLite's planner (the store keeps no statistics) otherwise picks the column's index:
        it reads every matching row and sorts them all before the first page (124 ms for a step's
        pairs, 212 ms for a category, on 200,000 pairs), or, inside an EXISTS, walks every
        verdict of a step for each instruction (2.3 s). In key order the page stops at its 50th
        row (under 1 ms); the cost moves to values that are rare among the newest rows, which
        the walk meets late (a full scan at worst)."""
        return f"+{column}" if self.name == "sqlite" else column


def dialect(store: Store) -> Dialect:
    return Dialect(store.engine.dialect.name)


@dataclass(frozen=True)
class Page:
    """One page of a keyset-paged list: its rows and the key the next page starts after."""

    rows: list[Any]
    after: str | None


def _page(rows: list[Any], key: Any, limit: int) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key(rows[-1]) if more and rows else None)


# -- runs and steps --------------------------------------------------------------------------


def failure_counts(store: Store, step_run_ids: Sequence[str]) -> dict[str, int]:
    """How many sample failures each step run recorded."""
    if not step_run_ids:
        return {}
    sql = _text(
        "SELECT step_run_id, COUNT(*) FROM sample_failures WHERE step_run_id IN :ids "
        "GROUP BY step_run_id",
        "ids",
    )
    with store.engine.connect() as conn:
        return {sid: int(n) for sid, n in conn.execute(sql, {"ids": list(step_run_ids)})}


def failures(store: Store, step_run_id: str, after: int | None, limit: int = PAGE) -> Page:
    """The step run's failed samples with their reasons, oldest first, keyset-paged by id."""
    sql = _text(
        "SELECT id, input_key, error_type, message, created_at FROM sample_failures "
        "WHERE step_run_id = :sid AND id > :after ORDER BY id LIMIT :n"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(sql, {"sid": step_run_id, "after": after or 0, "n": limit + 1})
        found = [dict(r) for r in rows.mappings()]
    return _page(found, lambda r: str(r["id"]), limit)


def step_records(
    store: Store, record_type: str, step_run_id: str, after: str | None, limit: int = PAGE
) -> Page:
    """Records of ``record_type`` the step run wrote, newest first."""
    table = TABLES[record_type]
    column = dialect(store).without_index("step_run_id")
    bound = " AND id < :after" if after else ""
    sql = _text(f"SELECT id FROM {table} WHERE {column} = :sid{bound} ORDER BY id DESC LIMIT :n")
    with store.engine.connect() as conn:
        params = {"sid": step_run_id, "after": after, "n": limit + 1}
        ids = list(conn.execute(sql, params).scalars())
    page = _page(ids, str, limit)
    records = store.records(record_type, page.rows)
    return Page([records[i] for i in page.rows if i in records], page.after)


def step_ids(store: Store) -> list[str]:
    """Every step id any run has, for the search form (the step_runs table is small)."""
    with store.engine.connect() as conn:
        return sorted(conn.execute(_text("SELECT DISTINCT step_id FROM step_runs")).scalars())


def step_run_ids(store: Store, step_id: str) -> list[str]:
    with store.engine.connect() as conn:
        sql = _text("SELECT id FROM step_runs WHERE step_id = :step")
        return list(conn.execute(sql, {"step": step_id}).scalars())


def step_runs_by_id(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Step runs (with their run's name) by id, for labelling records with who wrote them."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    sql = _text(
        "SELECT s.id, s.run_id, s.step_id, s.kind, s.plugin, s.status, r.name AS run_name "
        "FROM step_runs s JOIN runs r ON r.id = s.run_id WHERE s.id IN :ids",
        "ids",
    )
    with store.engine.connect() as conn:
        return {r["id"]: dict(r) for r in conn.execute(sql, {"ids": wanted}).mappings()}


def train_step_runs(store: Store) -> list[dict[str, Any]]:
    """Every train step run, newest first: the ones that may have logged training curves."""
    sql = _text(
        "SELECT s.id, s.step_id, s.run_id, r.name AS run_name FROM step_runs s "
        "JOIN runs r ON r.id = s.run_id WHERE s.kind = 'train' ORDER BY s.id DESC"
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sql).mappings()]


# -- one pair --------------------------------------------------------------------------------


@dataclass
class InstructionView:
    """One instruction of a pair with everything written about it."""

    instruction: Instruction
    step_run_id: str | None
    scores: list[tuple[Score, str | None]] = field(default_factory=list)
    verdicts: list[tuple[Verdict, str | None]] = field(default_factory=list)
    trained_models: list[str] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)


@dataclass
class PairView:
    pair: Pair
    step_run_id: str | None
    instructions: list[InstructionView]
    references: list[tuple[Reference, str | None]]
    pair_scores: list[tuple[Score, str | None]]
    pair_verdicts: list[tuple[Verdict, str | None]]
    preferences: list[tuple[Preference, str | None]]

    def text_of(self, instruction_id: str) -> str:
        """An instruction of this pair's text (for preferences), or its id if not this pair's."""
        for view in self.instructions:
            if view.instruction.id == instruction_id:
                return view.instruction.text
        return instruction_id

    def step_run_ids(self) -> list[str]:
        found = [self.step_run_id]
        for view in self.instructions:
            found.append(view.step_run_id)
            found.extend(s for _, s in [*view.scores, *view.verdicts])
        for group in (self.references, self.pair_scores, self.pair_verdicts, self.preferences):
            found.extend(s for _, s in group)
        return [s for s in found if s]


def _of_pair(store: Store, record_type: str, pair_id: str) -> list[tuple[Any, str | None]]:
    """Every record of a type about one pair (``pair_id`` is indexed), oldest first."""
    sql = _text(f"SELECT id FROM {TABLES[record_type]} WHERE pair_id = :pid ORDER BY id")
    with store.engine.connect() as conn:
        ids = list(conn.execute(sql, {"pid": pair_id}).scalars())
        found = store.records_with_step_runs(record_type, ids, conn)
    return [found[i] for i in ids if i in found]


def _attributions(store: Store, instruction_ids: Sequence[str]) -> dict[str, list[str]]:
    """Instruction id -> names of the stored models that wrote it (trained checkpoints)."""
    if not instruction_ids:
        return {}
    sql = _text(
        "SELECT e.src_id, m.name FROM edges e JOIN models m ON m.id = e.dst_id "
        "WHERE e.src_id IN :ids AND e.src_type = 'instruction' AND e.verb = 'wasAttributedTo' "
        "AND e.dst_type = 'model'",
        "ids",
    )
    out: dict[str, list[str]] = defaultdict(list)
    with store.engine.connect() as conn:
        for src, name in conn.execute(sql, {"ids": list(instruction_ids)}):
            out[src].append(name)
    return out


def pair_view(store: Store, pair_id: str) -> PairView | None:
    """The pair and every record written about it, grouped by the instruction it concerns."""
    found = store.records_with_step_runs("pair", [pair_id])
    if pair_id not in found:
        return None
    pair, pair_step = found[pair_id]
    assert isinstance(pair, Pair)
    instructions = _of_pair(store, "instruction", pair_id)
    views = {i.id: InstructionView(i, s) for i, s in instructions}
    for instruction, _ in instructions:
        if instruction.parent_id in views:
            views[instruction.parent_id].corrections.append(instruction.id)
    for instruction_id, names in _attributions(store, list(views)).items():
        views[instruction_id].trained_models = names
    pair_scores: list[tuple[Score, str | None]] = []
    for score, step in _of_pair(store, "score", pair_id):
        target = views.get(score.instruction_id or "")
        (target.scores if target else pair_scores).append((score, step))
    pair_verdicts: list[tuple[Verdict, str | None]] = []
    for verdict, step in _of_pair(store, "verdict", pair_id):
        target = views.get(verdict.instruction_id or "")
        (target.verdicts if target else pair_verdicts).append((verdict, step))
    return PairView(
        pair=pair,
        step_run_id=pair_step,
        instructions=list(views.values()),
        references=_of_pair(store, "reference", pair_id),
        pair_scores=pair_scores,
        pair_verdicts=pair_verdicts,
        preferences=_of_pair(store, "preference", pair_id),
    )


# -- search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What the search form asks. Every filter applies to the same instruction: its pair's
    category and benchmark, the step that wrote, scored or judged it, its author (model), a score
    range (the judge's weighted S, or the score named ``score_name``) and a human defect code."""

    step: str | None = None
    category: str | None = None
    benchmark: str | None = None
    model: str | None = None
    origin: str | None = None
    score_name: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    defect: str | None = None

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        """From a request's query string: empty fields are no filter; bad numbers are refused."""

        def text(name: str) -> str | None:
            value = str(params.get(name, "")).strip()
            return value or None

        def number(name: str) -> float | None:
            value = text(name)
            if value is None:
                return None
            try:
                return float(value)
            except ValueError:
                raise EcapError(f"{name} must be a number, not {value!r}") from None

        score_name = text("score_name")
        if score_name is not None and not _SCORE_NAME.match(score_name):
            raise EcapError(f"score name {score_name!r} is not a score's name")
        origin = text("origin")
        if origin is not None and origin not in ("model", "human", "reference"):
            raise EcapError(f"origin must be model, human or reference, not {origin!r}")
        defect = text("defect")
        return cls(
            step=text("step"),
            category=text("category"),
            benchmark=text("benchmark"),
            model=text("model"),
            origin=origin,
            score_name=score_name,
            min_score=number("min_score"),
            max_score=number("max_score"),
            defect=normalize_code(defect) if defect else None,
        )

    def query_string(self) -> dict[str, str]:
        """The filters as query parameters (for the next page's and the export's links)."""
        values = {
            "step": self.step,
            "category": self.category,
            "benchmark": self.benchmark,
            "model": self.model,
            "origin": self.origin,
            "score_name": self.score_name,
            "min_score": self.min_score,
            "max_score": self.max_score,
            "defect": self.defect,
        }
        return {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in values.items() if v}


def _search_sql(
    store: Store, filters: Filters, after: str | None
) -> tuple[str, dict[str, Any], list[str]]:
    """``FROM ... WHERE ...`` over instructions for ``filters`` after the keyset bound ``after``,
    built from fixed fragments only (every value the user typed is a bound parameter)."""
    d = dialect(store)
    joins = ["JOIN pairs p ON p.id = i.pair_id"]
    where = ["i.id < :after"] if after else ["1 = 1"]
    params: dict[str, Any] = {"after": after} if after else {}
    expanding: list[str] = []
    if filters.category:
        where.append(f"{d.without_index('p.category')} = :category")
        params["category"] = filters.category
    if filters.model:
        where.append("i.author = :model")
        params["model"] = filters.model
    if filters.origin:
        where.append(f"{d.without_index('i.origin')} = :origin")
        params["origin"] = filters.origin
    if filters.benchmark:
        joins.append("LEFT JOIN step_runs ps ON ps.id = p.step_run_id")
        where.append(f"COALESCE({d.json_text('p.meta', 'benchmark_key')}, ps.step_id) = :benchmark")
        params.update(benchmark_key="benchmark", benchmark=filters.benchmark)
    if filters.step:
        steps = step_run_ids(store, filters.step)
        where.append(
            f"({d.without_index('i.step_run_id')} IN :steps"
            " OR EXISTS (SELECT 1 FROM scores s WHERE s.instruction_id = i.id"
            f" AND {d.without_index('s.step_run_id')} IN :steps)"
            " OR EXISTS (SELECT 1 FROM verdicts v WHERE v.instruction_id = i.id"
            f" AND {d.without_index('v.step_run_id')} IN :steps))"
            if steps
            else "1 = 0"  # no run has this step
        )
        if steps:
            params["steps"] = steps
            expanding.append("steps")
    bounds = []
    if filters.min_score is not None:
        bounds.append("{value} >= :min_score")
        params["min_score"] = filters.min_score
    if filters.max_score is not None:
        bounds.append("{value} <= :max_score")
        params["max_score"] = filters.max_score
    if bounds and filters.score_name:
        column = 's2."values"'
        value = f"CAST({d.json_text(column, 'score_name')} AS DOUBLE PRECISION)"
        params["score_name"] = filters.score_name
        where.append(
            "EXISTS (SELECT 1 FROM scores s2 WHERE s2.instruction_id = i.id AND "
            + " AND ".join(b.format(value=value) for b in bounds)
            + ")"
        )
    elif bounds:
        where.append(
            "EXISTS (SELECT 1 FROM verdicts v2 WHERE v2.instruction_id = i.id AND "
            + " AND ".join(b.format(value="v2.weighted") for b in bounds)
            + ")"
        )
    if filters.defect:
        where.append(
            "EXISTS (SELECT 1 FROM verdicts v3 WHERE v3.instruction_id = i.id"
            " AND v3.kind = 'human' AND CAST(v3.labels AS TEXT) LIKE :defect)"
        )
        params["defect"] = f'%"{filters.defect}"%'
    return f"FROM instructions i {' '.join(joins)} WHERE {' AND '.join(where)}", params, expanding


def search_ids(store: Store, filters: Filters, after: str | None, limit: int = PAGE) -> Page:
    """Ids of the instructions matching ``filters``, newest first, one keyset page."""
    body, params, expanding = _search_sql(store, filters, after)
    sql = _text(f"SELECT i.id {body} ORDER BY i.id DESC LIMIT :n", *expanding)
    with store.engine.connect() as conn:
        ids = list(conn.execute(sql, {**params, "n": limit + 1}).scalars())
    return _page(ids, str, limit)


@dataclass
class Hit:
    """One search result: the instruction, its pair, and the latest verdict and scores on it."""

    instruction: Instruction
    pair: Pair
    verdict: Verdict | None
    scores: list[Score]


def _about(store: Store, record_type: str, instruction_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Instruction id -> the scores or verdicts about it, oldest first."""
    if not instruction_ids:
        return {}
    sql = _text(
        f"SELECT id FROM {TABLES[record_type]} WHERE instruction_id IN :ids ORDER BY id", "ids"
    )
    with store.engine.connect() as conn:
        ids = list(conn.execute(sql, {"ids": list(instruction_ids)}).scalars())
        records = store.records(record_type, ids, conn)
    out: dict[str, list[Any]] = defaultdict(list)
    for record_id in ids:
        record: Any = records[record_id]
        out[record.instruction_id].append(record)
    return out


def hits(store: Store, instruction_ids: Sequence[str]) -> list[Hit]:
    """Search results for these ids, in their order, each with its pair, latest verdict and
    scores, read in one query per record type."""
    instructions = store.records("instruction", instruction_ids)
    pairs = store.records("pair", {i.pair_id for i in instructions.values()})  # type: ignore[attr-defined]
    verdicts = _about(store, "verdict", list(instructions))
    scores = _about(store, "score", list(instructions))
    out = []
    for instruction_id in instruction_ids:
        instruction = instructions.get(instruction_id)
        if not isinstance(instruction, Instruction) or instruction.pair_id not in pairs:
            continue
        pair = pairs[instruction.pair_id]
        assert isinstance(pair, Pair)
        latest = verdicts.get(instruction_id, [])
        verdict = latest[-1] if latest else None
        out.append(Hit(instruction, pair, verdict, scores.get(instruction_id, [])))
    return out


def selection(store: Store, filters: Filters, batch: int = 1000) -> list[Hit]:
    """Every instruction the filters select, page by page (what an export writes)."""
    out: list[Hit] = []
    after: str | None = None
    while True:
        page = search_ids(store, filters, after, batch)
        out.extend(hits(store, page.rows))
        if page.after is None:
            return out
        after = page.after


def summary(record_type: str, record: Record | dict[str, Any]) -> str:
    """A record in a few words, for lists and lineage nodes."""
    data = record if isinstance(record, dict) else record.model_dump(mode="json")
    if record_type == "pair":
        return f"pair ({data.get('category') or 'no category'})"
    if record_type == "instruction":
        return f"{data.get('origin')} instruction: {data.get('text', '')[:120]}"
    if record_type == "score":
        values = ", ".join(f"{k} {v:g}" for k, v in (data.get("values") or {}).items())
        return f"score by {data.get('scorer')}: {values}"
    if record_type == "verdict":
        weighted = data.get("weighted")
        s = f"S {weighted:.2f}" if isinstance(weighted, int | float) else "no S"
        return f"{data.get('kind')} verdict by {data.get('judge')}: {s}"
    if record_type == "reference":
        return f"reference: {data.get('overall', '')[:120]}"
    if record_type == "preference":
        return "preference (chosen over rejected)"
    if record_type == "dataset":
        return f"dataset {data.get('name')} ({data.get('count')} items, {data.get('format')})"
    if record_type == "model":
        return f"model {data.get('name')}"
    return record_type
