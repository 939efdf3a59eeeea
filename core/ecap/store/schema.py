"""ORM classes mapped onto the store's tables (:mod:`.tables`, the one definition of its layout),
for code that queries with them (reports, provenance, tests); ``Base.metadata`` is
:data:`.tables.metadata`. The store itself uses the Core tables and never imports this module, so
that reading commands do not pay for SQLAlchemy's ORM.

Each class's annotations give its columns' Python types to type checkers; a test checks that they
name exactly its table's columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import DeclarativeBase, Mapped

from . import tables


class Base(DeclarativeBase):
    metadata = tables.metadata

    def __init_subclass__(cls, **options: Any) -> None:
        cls.__tablename__ = cast(Table, cls.__table__).name  # as declarative classes name it
        super().__init_subclass__(**options)


class Run(Base):
    __table__ = tables.runs
    id: Mapped[str]
    name: Mapped[str]
    spec_path: Mapped[str]
    spec_text: Mapped[str]
    spec_hash: Mapped[str]
    status: Mapped[str]
    ecap_version: Mapped[str]
    plugins: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None]


class StepRun(Base):
    __table__ = tables.step_runs
    id: Mapped[str]
    run_id: Mapped[str]
    step_id: Mapped[str]
    kind: Mapped[str]
    plugin: Mapped[str]
    plugin_version: Mapped[str]
    package: Mapped[str]
    config: Mapped[dict[str, Any]]
    step_key: Mapped[str]
    status: Mapped[str]
    counts: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None]


class _RecordRow:
    """Columns every record table has."""

    id: Mapped[str]
    meta: Mapped[dict[str, Any]]
    step_run_id: Mapped[str | None]
    created_at: Mapped[datetime]


class PairRow(_RecordRow, Base):
    __table__ = tables.pairs
    source: Mapped[dict[str, Any]]
    target: Mapped[dict[str, Any]]
    category: Mapped[str | None]


class InstructionRow(_RecordRow, Base):
    __table__ = tables.instructions
    pair_id: Mapped[str]
    text: Mapped[str]
    origin: Mapped[str]
    parent_id: Mapped[str | None]
    author: Mapped[str | None]
    candidate: Mapped[int]


class ReferenceRow(_RecordRow, Base):
    __table__ = tables.refs
    pair_id: Mapped[str]
    primary: Mapped[list[Any]]
    secondary: Mapped[list[Any]]
    overall: Mapped[str]


class ScoreRow(_RecordRow, Base):
    __table__ = tables.scores
    pair_id: Mapped[str]
    instruction_id: Mapped[str | None]
    scorer: Mapped[str]
    values: Mapped[dict[str, Any]]


class VerdictRow(_RecordRow, Base):
    __table__ = tables.verdicts
    pair_id: Mapped[str]
    instruction_id: Mapped[str | None]
    reference_id: Mapped[str | None]
    judge: Mapped[str]
    kind: Mapped[str]
    axes: Mapped[dict[str, Any]]
    reasons: Mapped[dict[str, Any]]
    labels: Mapped[list[Any]]
    weighted: Mapped[float | None]


class PreferenceRow(_RecordRow, Base):
    __table__ = tables.preferences
    pair_id: Mapped[str]
    chosen_id: Mapped[str]
    rejected_id: Mapped[str]


class DatasetRow(_RecordRow, Base):
    __table__ = tables.datasets
    name: Mapped[str]
    content_hash: Mapped[str]
    format: Mapped[str]
    uri: Mapped[str | None]
    count: Mapped[int]


class ModelRow(_RecordRow, Base):
    __table__ = tables.models
    name: Mapped[str]
    uri: Mapped[str]
    revision: Mapped[str | None]
    base_model_id: Mapped[str | None]
    dataset_id: Mapped[str | None]


class Edge(Base):
    __table__ = tables.edges
    id: Mapped[int]
    src_type: Mapped[str]
    src_id: Mapped[str]
    verb: Mapped[str]
    dst_type: Mapped[str]
    dst_id: Mapped[str]
    step_run_id: Mapped[str | None]


class SampleResult(Base):
    __table__ = tables.sample_results
    cache_key: Mapped[str]
    step_key: Mapped[str]
    input_key: Mapped[str]
    outputs: Mapped[list[Any]]
    step_run_id: Mapped[str]
    created_at: Mapped[datetime]


class SampleFailure(Base):
    __table__ = tables.sample_failures
    id: Mapped[int]
    step_run_id: Mapped[str]
    step_id: Mapped[str]
    input_key: Mapped[str]
    error_type: Mapped[str]
    message: Mapped[str]
    created_at: Mapped[datetime]


class ExternalTask(Base):
    __table__ = tables.external_tasks
    cache_key: Mapped[str]
    step_key: Mapped[str]
    input_key: Mapped[str]
    external_id: Mapped[str]
    step_run_id: Mapped[str]
    created_at: Mapped[datetime]


class ApiCall(Base):
    __table__ = tables.api_calls
    id: Mapped[str]
    request_hash: Mapped[str]
    provider: Mapped[str]
    model: Mapped[str]
    status: Mapped[str]
    response: Mapped[dict[str, Any] | None]
    tokens_in: Mapped[int | None]
    tokens_out: Mapped[int | None]
    cost: Mapped[float | None]
    latency_ms: Mapped[float | None]
    batch_job_id: Mapped[str | None]
    error: Mapped[str | None]
    step_run_id: Mapped[str | None]
    created_at: Mapped[datetime]


class Metric(Base):
    __table__ = tables.metrics
    id: Mapped[int]
    step_run_id: Mapped[str]
    step: Mapped[int]
    values: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Claim(Base):
    __table__ = tables.claims
    cache_key: Mapped[str]
    step_key: Mapped[str]
    holder_id: Mapped[str]
    run_id: Mapped[str | None]
    pid: Mapped[int]
    host: Mapped[str]
    since: Mapped[datetime]
    expires_at: Mapped[datetime]


#: record_type -> its mapped class (:data:`.tables.RECORDS` holds the tables).
RECORD_TABLES: dict[str, type[_RecordRow]] = {
    "pair": PairRow,
    "instruction": InstructionRow,
    "reference": ReferenceRow,
    "score": ScoreRow,
    "verdict": VerdictRow,
    "preference": PreferenceRow,
    "dataset": DatasetRow,
    "model": ModelRow,
}
