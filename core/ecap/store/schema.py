"""The store's tables (SQLAlchemy 2 declarative). Alembic migrations in ``migrations/`` build them;
a test checks that migrating an empty database yields exactly this schema on every dialect.

Record tables mirror the pydantic records field for field, plus the step run that produced each row
(PROV ``wasGeneratedBy``). Every other lineage relation is a row of the generic ``edges`` table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
ID = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Run(Base):
    """One execution of a spec."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec_path: Mapped[str] = mapped_column(Text)
    spec_text: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # running, complete, waiting, failed
    ecap_version: Mapped[str] = mapped_column(String(32))
    plugins: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class StepRun(Base):
    """One step of a run: which plugin, which version, which (redacted) config, how it went."""

    __tablename__ = "step_runs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    plugin: Mapped[str] = mapped_column(String(200), index=True)
    plugin_version: Mapped[str] = mapped_column(String(64))
    package: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]
    step_key: Mapped[str] = mapped_column(String(80), index=True)
    status: Mapped[str] = mapped_column(String(16))  # running, complete, cached, waiting, failed
    counts: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class _RecordRow:
    """Columns every record table has."""

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    meta: Mapped[dict[str, Any]]
    step_run_id: Mapped[str | None] = mapped_column(ID, index=True)
    created_at: Mapped[datetime]


class PairRow(_RecordRow, Base):
    __tablename__ = "pairs"
    source: Mapped[dict[str, Any]]
    target: Mapped[dict[str, Any]]
    category: Mapped[str | None] = mapped_column(String(200), index=True)


class InstructionRow(_RecordRow, Base):
    __tablename__ = "instructions"
    pair_id: Mapped[str] = mapped_column(ID, index=True)
    text: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(16), index=True)
    parent_id: Mapped[str | None] = mapped_column(ID, index=True)
    author: Mapped[str | None] = mapped_column(String(300))
    candidate: Mapped[int] = mapped_column(Integer)


class ReferenceRow(_RecordRow, Base):
    __tablename__ = "refs"  # "references" is reserved in SQL
    pair_id: Mapped[str] = mapped_column(ID, index=True)
    primary: Mapped[list[Any]]
    secondary: Mapped[list[Any]]
    overall: Mapped[str] = mapped_column(Text)


class ScoreRow(_RecordRow, Base):
    __tablename__ = "scores"
    pair_id: Mapped[str] = mapped_column(ID, index=True)
    instruction_id: Mapped[str | None] = mapped_column(ID, index=True)
    scorer: Mapped[str] = mapped_column(String(200))
    values: Mapped[dict[str, Any]]


class VerdictRow(_RecordRow, Base):
    __tablename__ = "verdicts"
    pair_id: Mapped[str] = mapped_column(ID, index=True)
    instruction_id: Mapped[str | None] = mapped_column(ID, index=True)
    reference_id: Mapped[str | None] = mapped_column(ID)
    judge: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    axes: Mapped[dict[str, Any]]
    reasons: Mapped[dict[str, Any]]
    labels: Mapped[list[Any]]
    weighted: Mapped[float | None] = mapped_column(Float)


class PreferenceRow(_RecordRow, Base):
    __tablename__ = "preferences"
    pair_id: Mapped[str] = mapped_column(ID, index=True)
    chosen_id: Mapped[str] = mapped_column(ID)
    rejected_id: Mapped[str] = mapped_column(ID)


class DatasetRow(_RecordRow, Base):
    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(80), index=True)
    format: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str | None] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer)


class ModelRow(_RecordRow, Base):
    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(300))
    uri: Mapped[str] = mapped_column(Text)
    revision: Mapped[str | None] = mapped_column(String(200))
    base_model_id: Mapped[str | None] = mapped_column(ID)
    dataset_id: Mapped[str | None] = mapped_column(ID)


class Edge(Base):
    """A W3C PROV relation: ``src`` (used | wasDerivedFrom | wasAttributedTo) ``dst``."""

    __tablename__ = "edges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    src_type: Mapped[str] = mapped_column(String(32))
    src_id: Mapped[str] = mapped_column(ID)
    verb: Mapped[str] = mapped_column(String(32))
    dst_type: Mapped[str] = mapped_column(String(32))
    dst_id: Mapped[str] = mapped_column(ID)
    step_run_id: Mapped[str | None] = mapped_column(ID)

    __table_args__ = (
        Index("ix_edges_src", "src_id", "src_type"),
        Index("ix_edges_dst", "dst_id", "dst_type"),
    )


class SampleResult(Base):
    """A sample finished by a step: written with its outputs in one transaction, never before.

    ``cache_key`` = hash(plugin, version, semantic config, fingerprint, input record ids).
    ``outputs`` lists the items produced, each as ``{slot: record id}``.
    """

    __tablename__ = "sample_results"
    cache_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(80), index=True)
    input_key: Mapped[str] = mapped_column(Text)
    outputs: Mapped[list[Any]]
    step_run_id: Mapped[str] = mapped_column(ID, index=True)
    created_at: Mapped[datetime]


class SampleFailure(Base):
    """A sample a step could not process, with the error. A re-run tries it again."""

    __tablename__ = "sample_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_run_id: Mapped[str] = mapped_column(ID, index=True)
    step_id: Mapped[str] = mapped_column(String(200))
    input_key: Mapped[str] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class ExternalTask(Base):
    """Work handed to something outside the process (humans in Label Studio, a batch API job),
    stored before waiting on it, so that a restart resumes the same task instead of a new one."""

    __tablename__ = "external_tasks"
    cache_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(80), index=True)
    input_key: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str] = mapped_column(String(200))
    step_run_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime]


class ApiCall(Base):
    """One model or API call: the audit trail, and the cache that keeps a re-run from paying twice.

    ``request_hash`` identifies the request's semantic content (model, prompt, images, schema);
    a row with status ``ok`` answers any later identical request. A batch-API request is written
    with status ``submitted`` and its ``batch_job_id`` before anything polls the job, so that a
    restart resumes the same job instead of submitting (and paying for) a new one.
    """

    __tablename__ = "api_calls"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(80), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # ok, error, rejected, submitted
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    batch_job_id: Mapped[str | None] = mapped_column(String(200), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    step_run_id: Mapped[str | None] = mapped_column(ID, index=True)
    created_at: Mapped[datetime]


class Metric(Base):
    """Numbers a long step reports as it goes: a training's loss, learning rate, DPO margins and
    tokens/s per logging step. ``values`` maps each metric's name to its value at ``step``."""

    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_run_id: Mapped[str] = mapped_column(ID, index=True)
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Claim(Base):
    """A sample one process is computing: writers sharing a store split a step's work by claiming
    samples, and skip those another holds. The claim lapses at ``expires_at`` unless its holder
    renews it, so a killed holder's samples go to the next writer; finishing a sample (or
    releasing it) deletes the claim. ``holder_id`` is one claimant (a process's work on one step);
    the run, pid, host and ``since`` say who it is when another writer waits."""

    __tablename__ = "claims"
    cache_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(80), index=True)
    holder_id: Mapped[str] = mapped_column(ID, index=True)
    run_id: Mapped[str | None] = mapped_column(ID)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    since: Mapped[datetime]
    expires_at: Mapped[datetime]


#: record_type -> table, for generic record I/O and lineage walks.
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
