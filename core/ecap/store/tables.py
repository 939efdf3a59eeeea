"""The store's tables, as SQLAlchemy Core ``Table`` objects: the one definition of its layout.

Alembic migrations in ``migrations/`` build them; a test checks that migrating an empty database
yields exactly this schema on every dialect. The store (:mod:`.store`) and its migrations use these
tables directly, so that opening a store and reading it (``ecap runs list``) never imports
SQLAlchemy's ORM: building the ORM's declarative classes took a quarter of that command's time.
:mod:`.schema` maps ORM classes onto the same tables for code that wants them.

Record tables mirror the pydantic records field for field, plus the step run that produced each row
(PROV ``wasGeneratedBy``). Every other lineage relation is a row of the generic ``edges`` table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeEngine

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
ID = String(64)
TIME = DateTime(timezone=True)

metadata = MetaData(naming_convention=NAMING)
ColumnType = TypeEngine[Any] | type[TypeEngine[Any]]


def required(name: str, kind: ColumnType, *constraints: Any, **options: Any) -> Column[Any]:
    """A ``NOT NULL`` column."""
    return Column(name, kind, *constraints, nullable=False, **options)


def optional(name: str, kind: ColumnType, **options: Any) -> Column[Any]:
    """A column that may hold ``NULL``."""
    return Column(name, kind, nullable=True, **options)


def record_table(name: str, *columns: Column[Any]) -> Table:
    """A record's table: the record's own fields, then the columns every record table has."""
    return Table(
        name,
        metadata,
        *columns,
        Column("id", ID, primary_key=True),
        required("meta", JSON),
        optional("step_run_id", ID, index=True),
        required("created_at", TIME),
    )


#: One execution of a spec.
runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    required("name", String(200)),
    required("spec_path", Text),
    required("spec_text", Text),
    required("spec_hash", String(64), index=True),
    required("status", String(16)),  # running, complete, waiting, failed
    required("ecap_version", String(32)),
    required("plugins", JSON),
    required("started_at", TIME),
    optional("finished_at", TIME),
    optional("error", Text),
)

#: One step of a run: which plugin, which version, which (redacted) config, how it went.
step_runs = Table(
    "step_runs",
    metadata,
    Column("id", ID, primary_key=True),
    required("run_id", ID, ForeignKey("runs.id"), index=True),
    required("step_id", String(200), index=True),
    required("kind", String(16)),
    required("plugin", String(200), index=True),
    required("plugin_version", String(64)),
    required("package", String(200)),
    required("config", JSON),
    required("step_key", String(80), index=True),
    required("status", String(16)),  # running, complete, cached, waiting, failed
    required("counts", JSON),
    required("started_at", TIME),
    optional("finished_at", TIME),
    optional("error", Text),
)

pairs = record_table(
    "pairs",
    required("source", JSON),
    required("target", JSON),
    optional("category", String(200), index=True),
)

instructions = record_table(
    "instructions",
    required("pair_id", ID, index=True),
    required("text", Text),
    required("origin", String(16), index=True),
    optional("parent_id", ID, index=True),
    optional("author", String(300)),
    required("candidate", Integer),
)

refs = record_table(
    "refs",  # "references" is reserved in SQL
    required("pair_id", ID, index=True),
    required("primary", JSON),
    required("secondary", JSON),
    required("overall", Text),
)

scores = record_table(
    "scores",
    required("pair_id", ID, index=True),
    optional("instruction_id", ID, index=True),
    required("scorer", String(200)),
    required("values", JSON),
)

verdicts = record_table(
    "verdicts",
    required("pair_id", ID, index=True),
    optional("instruction_id", ID, index=True),
    optional("reference_id", ID),
    required("judge", String(200)),
    required("kind", String(16)),
    required("axes", JSON),
    required("reasons", JSON),
    required("labels", JSON),
    optional("weighted", Float),
)

preferences = record_table(
    "preferences",
    required("pair_id", ID, index=True),
    required("chosen_id", ID),
    required("rejected_id", ID),
)

datasets = record_table(
    "datasets",
    required("name", String(200)),
    required("content_hash", String(80), index=True),
    required("format", String(32)),
    optional("uri", Text),
    required("count", Integer),
)

models = record_table(
    "models",
    required("name", String(300)),
    required("uri", Text),
    optional("revision", String(200)),
    optional("base_model_id", ID),
    optional("dataset_id", ID),
)

#: A W3C PROV relation: ``src`` (used | wasDerivedFrom | wasAttributedTo) ``dst``.
edges = Table(
    "edges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    required("src_type", String(32)),
    required("src_id", ID),
    required("verb", String(32)),
    required("dst_type", String(32)),
    required("dst_id", ID),
    optional("step_run_id", ID),
    Index("ix_edges_src", "src_id", "src_type"),
    Index("ix_edges_dst", "dst_id", "dst_type"),
)

#: A sample finished by a step: written with its outputs in one transaction, never before.
#: ``cache_key`` = hash(plugin, version, semantic config, fingerprint, input record ids).
#: ``outputs`` lists the items produced, each as ``{slot: record id}``.
sample_results = Table(
    "sample_results",
    metadata,
    Column("cache_key", String(80), primary_key=True),
    required("step_key", String(80), index=True),
    required("input_key", Text),
    required("outputs", JSON),
    required("step_run_id", ID, index=True),
    required("created_at", TIME),
)

#: A sample a step could not process, with the error. A re-run tries it again.
sample_failures = Table(
    "sample_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    required("step_run_id", ID, index=True),
    required("step_id", String(200)),
    required("input_key", Text),
    required("error_type", String(200)),
    required("message", Text),
    required("created_at", TIME),
)

#: Work handed to something outside the process (humans in Label Studio, a batch API job),
#: stored before waiting on it, so that a restart resumes the same task instead of a new one.
external_tasks = Table(
    "external_tasks",
    metadata,
    Column("cache_key", String(80), primary_key=True),
    required("step_key", String(80), index=True),
    required("input_key", Text),
    required("external_id", String(200)),
    required("step_run_id", ID),
    required("created_at", TIME),
)

#: One model or API call: the audit trail, and the cache that keeps a re-run from paying twice.
#: ``request_hash`` identifies the request's semantic content (model, prompt, images, schema); a
#: row with status ``ok`` answers any later identical request. A batch-API request is written with
#: status ``submitted`` and its ``batch_job_id`` before anything polls the job, so that a restart
#: resumes the same job instead of submitting (and paying for) a new one.
api_calls = Table(
    "api_calls",
    metadata,
    Column("id", ID, primary_key=True),
    required("request_hash", String(80), index=True),
    required("provider", String(64)),
    required("model", String(200)),
    required("status", String(16)),  # ok, error, rejected, submitted
    optional("response", JSON),
    optional("tokens_in", Integer),
    optional("tokens_out", Integer),
    optional("cost", Float),
    optional("latency_ms", Float),
    optional("batch_job_id", String(200), index=True),
    optional("error", Text),
    optional("step_run_id", ID, index=True),
    required("created_at", TIME),
)

#: Numbers a long step reports as it goes: a training's loss, learning rate, DPO margins and
#: tokens/s per logging step. ``values`` maps each metric's name to its value at ``step``.
metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    required("step_run_id", ID, index=True),
    required("step", Integer),
    required("values", JSON),
    required("created_at", TIME),
)

#: A sample one process is computing: writers sharing a store split a step's work by claiming
#: samples, and skip those another holds. The claim lapses at ``expires_at`` unless its holder
#: renews it, so a killed holder's samples go to the next writer; finishing a sample (or releasing
#: it) deletes the claim. ``holder_id`` is one claimant (a process's work on one step); the run,
#: pid, host and ``since`` say who it is when another writer waits.
claims = Table(
    "claims",
    metadata,
    Column("cache_key", String(80), primary_key=True),
    required("step_key", String(80), index=True),
    required("holder_id", ID, index=True),
    optional("run_id", ID),
    required("pid", Integer),
    required("host", String(255)),
    required("since", TIME),
    required("expires_at", TIME),
)

#: record_type -> its table, for generic record I/O and lineage walks.
RECORDS: dict[str, Table] = {
    "pair": pairs,
    "instruction": instructions,
    "reference": refs,
    "score": scores,
    "verdict": verdicts,
    "preference": preferences,
    "dataset": datasets,
    "model": models,
}
