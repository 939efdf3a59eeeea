"""The store as reports read it: plain rows, never the store's tables.

Report sections (ecap's own and plugins') read verdicts through these functions, so that a change
of table layout changes this module alone. Each returns frozen dataclasses of plain values, read
with one joined query (verdict -> its step run, instruction -> its step run, pair -> its step run):
a report over 100k verdicts takes seconds.

What a verdict is grouped by:

- its *model* is its instruction's ``author``, else the id of the step that wrote the
  instruction; an author that is a local folder with its content hash (a checkpoint this store's
  train steps wrote, ``/work/.ecap/work/sft/.../model#sha256:...``) is shown as the step that wrote
  the instruction with the folder's content-hash prefix, which is what a reader can tell apart;
- its *benchmark* is ``pair.meta["benchmark"]``, else the id of the step that imported the pair;
- its *rubric* is what the judge stored in ``meta["rubric"]`` and ``meta["weights"]``: verdicts
  whose weighted scores follow different formulas must never be averaged together.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import EcapError, did_you_mean

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

    from ..store import Store

#: The model or benchmark of a verdict whose instruction or pair cannot be traced.
UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class Rubric:
    """How a judge's weighted score was computed: the rubric's id and its axis weights (``None``
    where the judge did not say)."""

    id: str | None
    weights: tuple[tuple[str, float], ...] | None = None

    @property
    def label(self) -> str:
        name = self.id or "(no rubric)"
        if not self.weights:
            return name
        return f"{name} ({', '.join(f'{axis} {weight:g}' for axis, weight in self.weights)})"


@dataclass(frozen=True)
class VerdictFact:
    """One verdict, judge's (``kind="model"``) or human's, with what reports group it by.

    ``axes`` are the judge's per-axis scores and ``weighted`` its overall score; ``labels`` are a
    human's defect codes, or the failure-mode tags a judge wrote (``orientation_error`` ...).
    ``run_id`` and ``step_id`` name the step run that wrote the verdict.
    """

    verdict_id: str
    kind: str
    judge: str
    instruction_id: str | None
    run_id: str | None
    step_id: str | None
    model: str
    benchmark: str
    weighted: float | None
    axes: Mapping[str, float]
    labels: tuple[str, ...]
    rubric: Rubric


@dataclass(frozen=True)
class ScoreFact:
    """One filter score (``values`` by name, as the scorer wrote them) with what reports group it
    by. ``run_id`` and ``step_id`` name the step run that scored."""

    score_id: str
    scorer: str
    instruction_id: str | None
    run_id: str | None
    step_id: str | None
    model: str
    benchmark: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class StepRunFact:
    """One step run: which step of which run, its kind and plugin, how it ended, the (redacted)
    config it ran with, its sample counts (a filter's ``kept`` and ``dropped`` among them) and
    its step key (what its outputs are stored under)."""

    step_run_id: str
    run_id: str
    step_id: str
    kind: str
    plugin: str
    status: str
    step_key: str
    config: Mapping[str, Any]
    counts: Mapping[str, int]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StepRunFact:
        """From a step run as the store's API returns it (``Store.latest_step_run``)."""
        return cls(
            step_run_id=row["id"],
            run_id=row["run_id"],
            step_id=row["step_id"],
            kind=row["kind"],
            plugin=row["plugin"],
            status=row["status"],
            step_key=row["step_key"],
            config=dict(row["config"] or {}),
            counts={k: int(v) for k, v in (row["counts"] or {}).items() if _is_number(v)},
        )


@dataclass(frozen=True)
class MetricFact:
    """What a long step (a training) reported at one of its logging steps."""

    step_run_id: str
    step: int
    values: Mapping[str, float]


def step_runs(
    store: Store, *, kind: str | None = None, runs: Sequence[str] = ()
) -> list[StepRunFact]:
    """Step runs of ``kind`` (every kind by default) in ``runs`` (id prefixes; all runs by
    default), oldest first."""
    from sqlalchemy import select, true

    from ..store.schema import StepRun

    statement = (
        select(StepRun)
        .where(StepRun.kind == kind if kind else true())
        .where(_prefixed(StepRun.run_id, runs) if runs else true())
        .order_by(StepRun.id)
    )
    with store.engine.connect() as conn:
        return [StepRunFact.from_row(dict(row)) for row in conn.execute(statement).mappings()]


def metrics(store: Store, step_run_ids: Sequence[str]) -> list[MetricFact]:
    """Every metric these step runs reported, in the order reported (numbers only)."""
    return [
        MetricFact(
            step_run_id=row["step_run_id"],
            step=int(row["step"]),
            values={k: float(v) for k, v in (row["values"] or {}).items() if _is_number(v)},
        )
        for row in store.metrics(list(step_run_ids))
    ]


def verdicts(
    store: Store,
    *,
    judge: str | None = None,
    runs: Sequence[str] = (),
    steps: Sequence[str] = (),
    human_runs: Sequence[str] = (),
    human_steps: Sequence[str] = (),
    humans: bool = True,
) -> list[VerdictFact]:
    """Judge verdicts written by ``runs`` (id prefixes) and ``steps`` (ids), from ``judge`` (a
    full name, or the plugin alone: ``gemini`` for ``gemini:gemini-2.5-pro``), and human verdicts
    written by ``human_runs`` and ``human_steps``; an empty selection means all."""
    from sqlalchemy import JSON, and_, false, or_, true, type_coerce

    from ..store.schema import VerdictRow

    traced = _Traced(VerdictRow)

    def scope(kind: str, runs: Sequence[str], steps: Sequence[str]) -> ColumnElement[bool]:
        return and_(VerdictRow.kind == kind, traced.written_by(runs, steps))

    by_judge = (
        or_(VerdictRow.judge == judge, VerdictRow.judge.startswith(f"{judge}:", autoescape=True))
        if judge
        else true()
    )
    meta = VerdictRow.__table__.c.meta
    statement = traced.select(
        VerdictRow.id,
        VerdictRow.kind,
        VerdictRow.judge,
        VerdictRow.instruction_id,
        VerdictRow.weighted,
        VerdictRow.axes,
        type_coerce(VerdictRow.labels, JSON),
        meta["rubric"].as_string(),
        type_coerce(meta["weights"], JSON),
    ).where(
        or_(
            and_(scope("model", runs, steps), by_judge),
            scope("human", human_runs, human_steps) if humans else false(),
        )
    )
    facts = []
    with store.engine.connect() as conn:
        for row in conn.execute(statement).all():
            vid, kind, judge_name, instruction_id, weighted, axes, labels, rubric, weights = row[:9]
            facts.append(
                VerdictFact(
                    verdict_id=vid,
                    kind=kind,
                    judge=judge_name,
                    instruction_id=instruction_id,
                    weighted=weighted,
                    axes={k: float(v) for k, v in (axes or {}).items() if _is_number(v)},
                    labels=tuple(labels or ()),
                    rubric=Rubric(rubric, _weights(weights)),
                    **_Traced.grouping(row[9:]),
                )
            )
    return facts


def scores(
    store: Store,
    *,
    scorer: str | None = None,
    runs: Sequence[str] = (),
    steps: Sequence[str] = (),
) -> list[ScoreFact]:
    """Filter scores from ``scorer`` (a filter's name), written by ``runs`` (id prefixes) and
    ``steps`` (ids); an empty selection means all."""
    from sqlalchemy import and_, true

    from ..store.schema import ScoreRow

    traced = _Traced(ScoreRow)
    statement = traced.select(
        ScoreRow.id, ScoreRow.scorer, ScoreRow.instruction_id, ScoreRow.values
    ).where(
        and_(
            ScoreRow.scorer == scorer if scorer else true(),
            traced.written_by(runs, steps),
        )
    )
    with store.engine.connect() as conn:
        return [
            ScoreFact(
                score_id=row[0],
                scorer=row[1],
                instruction_id=row[2],
                values=dict(row[3] or {}),
                **_Traced.grouping(row[4:]),
            )
            for row in conn.execute(statement).all()
        ]


class _Traced:
    """A record table joined with what reports group its rows by: the step run that wrote the
    record, its instruction's author and step, and its pair's benchmark and step."""

    def __init__(self, record: Any) -> None:
        from sqlalchemy.orm import aliased

        from ..store.schema import StepRun

        self.record = record
        self.record_step = aliased(StepRun, name="record_step")
        self.instruction_step = aliased(StepRun, name="instruction_step")
        self.pair_step = aliased(StepRun, name="pair_step")

    def select(self, *columns: Any) -> Any:
        """``columns``, then the six columns :meth:`grouping` reads, over the joined tables."""
        from sqlalchemy import select

        from ..store.schema import InstructionRow, PairRow

        record = self.record
        return (
            select(
                *columns,
                self.record_step.run_id,
                self.record_step.step_id,
                InstructionRow.author,
                self.instruction_step.step_id,
                PairRow.__table__.c.meta["benchmark"].as_string(),
                self.pair_step.step_id,
            )
            .select_from(record)
            .outerjoin(self.record_step, self.record_step.id == record.step_run_id)
            .outerjoin(InstructionRow, InstructionRow.id == record.instruction_id)
            .outerjoin(
                self.instruction_step, self.instruction_step.id == InstructionRow.step_run_id
            )
            .outerjoin(PairRow, PairRow.id == record.pair_id)
            .outerjoin(self.pair_step, self.pair_step.id == PairRow.step_run_id)
        )

    def written_by(self, runs: Sequence[str], steps: Sequence[str]) -> ColumnElement[bool]:
        from sqlalchemy import and_, true

        conditions = []
        if runs:
            conditions.append(_prefixed(self.record_step.run_id, runs))
        if steps:
            conditions.append(self.record_step.step_id.in_(list(steps)))
        return and_(*conditions) if conditions else true()

    @staticmethod
    def grouping(columns: Sequence[Any]) -> dict[str, Any]:
        """run_id, step_id, model and benchmark from the six columns :meth:`select` adds."""
        run_id, step_id, author, instruction_step, benchmark, pair_step = columns
        return {
            "run_id": run_id,
            "step_id": step_id,
            "model": model_label(author, instruction_step),
            "benchmark": str(benchmark) if benchmark is not None else pair_step or UNKNOWN,
        }


def model_label(author: str | None, instruction_step: str | None) -> str:
    """How a report names the model that wrote an instruction (see the module docstring)."""
    if author and "#sha256:" in author and instruction_step:
        return f"{instruction_step} (#{author.rpartition('#sha256:')[2][:8]})"
    return author or instruction_step or UNKNOWN


def judges(store: Store) -> Counter[str]:
    """Every judge with verdicts in the store, and how many."""
    from sqlalchemy import func, select

    from ..store.schema import VerdictRow

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(VerdictRow.judge, func.count())
            .where(VerdictRow.kind == "model")
            .group_by(VerdictRow.judge)
        )
        return Counter({name: count for name, count in rows})


def check_selection(store: Store, runs: Iterable[str], steps: Iterable[str]) -> None:
    """Refuse a run id prefix that matches no run, or a step id no run has, naming what is."""
    from sqlalchemy import func, select

    from ..store.schema import Run, StepRun

    with store.engine.connect() as conn:
        for ref in runs:
            found = conn.execute(
                select(func.count()).select_from(Run).where(_prefixed(Run.id, [ref]))
            ).scalar_one()
            if not found:
                raise EcapError(f"no run '{ref}' in {store.redacted_url} (see: ecap runs list)")
        wanted = list(steps)
        if wanted:
            known = set(conn.execute(select(StepRun.step_id).distinct()).scalars())
            for step in wanted:
                if step not in known:
                    raise EcapError(
                        f"no step '{step}' in {store.redacted_url}" + did_you_mean(step, known)
                    )


def _prefixed(column: Any, prefixes: Sequence[str]) -> ColumnElement[bool]:
    from sqlalchemy import or_

    return or_(*(column.startswith(p, autoescape=True) for p in prefixes))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _weights(value: Any) -> tuple[tuple[str, float], ...] | None:
    if isinstance(value, str):  # some backends hand JSON back as text
        value = json.loads(value)
    if not isinstance(value, dict):
        return None
    return tuple(sorted((str(k), float(v)) for k, v in value.items() if _is_number(v)))


__all__ = [
    "UNKNOWN",
    "MetricFact",
    "Rubric",
    "ScoreFact",
    "StepRunFact",
    "VerdictFact",
    "check_selection",
    "judges",
    "metrics",
    "scores",
    "step_runs",
    "verdicts",
]
