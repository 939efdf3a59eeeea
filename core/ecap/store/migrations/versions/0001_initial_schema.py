"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:48:51.104522
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_datasets_content_hash"), ["content_hash"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_datasets_step_run_id"), ["step_run_id"], unique=False)

    op.create_table(
        "edges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("src_type", sa.String(length=32), nullable=False),
        sa.Column("src_id", sa.String(length=64), nullable=False),
        sa.Column("verb", sa.String(length=32), nullable=False),
        sa.Column("dst_type", sa.String(length=32), nullable=False),
        sa.Column("dst_id", sa.String(length=64), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edges")),
    )
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.create_index("ix_edges_dst", ["dst_id", "dst_type"], unique=False)
        batch_op.create_index("ix_edges_src", ["src_id", "src_type"], unique=False)

    op.create_table(
        "external_tasks",
        sa.Column("cache_key", sa.String(length=80), nullable=False),
        sa.Column("step_key", sa.String(length=80), nullable=False),
        sa.Column("input_key", sa.Text(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_external_tasks")),
    )
    with op.batch_alter_table("external_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_external_tasks_step_key"), ["step_key"], unique=False)

    op.create_table(
        "instructions",
        sa.Column("pair_id", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("author", sa.String(length=300), nullable=True),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instructions")),
    )
    with op.batch_alter_table("instructions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instructions_origin"), ["origin"], unique=False)
        batch_op.create_index(batch_op.f("ix_instructions_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instructions_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instructions_step_run_id"), ["step_run_id"], unique=False
        )

    op.create_table(
        "models",
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("revision", sa.String(length=200), nullable=True),
        sa.Column("base_model_id", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_step_run_id"), ["step_run_id"], unique=False)

    op.create_table(
        "pairs",
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairs")),
    )
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pairs_category"), ["category"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairs_step_run_id"), ["step_run_id"], unique=False)

    op.create_table(
        "preferences",
        sa.Column("pair_id", sa.String(length=64), nullable=False),
        sa.Column("chosen_id", sa.String(length=64), nullable=False),
        sa.Column("rejected_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preferences")),
    )
    with op.batch_alter_table("preferences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_preferences_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_preferences_step_run_id"), ["step_run_id"], unique=False
        )

    op.create_table(
        "refs",
        sa.Column("pair_id", sa.String(length=64), nullable=False),
        sa.Column("primary", sa.JSON(), nullable=False),
        sa.Column("secondary", sa.JSON(), nullable=False),
        sa.Column("overall", sa.Text(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refs")),
    )
    with op.batch_alter_table("refs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refs_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_refs_step_run_id"), ["step_run_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec_path", sa.Text(), nullable=False),
        sa.Column("spec_text", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ecap_version", sa.String(length=32), nullable=False),
        sa.Column("plugins", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_spec_hash"), ["spec_hash"], unique=False)

    op.create_table(
        "sample_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("input_key", sa.Text(), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_failures")),
    )
    with op.batch_alter_table("sample_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sample_failures_step_run_id"), ["step_run_id"], unique=False
        )

    op.create_table(
        "sample_results",
        sa.Column("cache_key", sa.String(length=80), nullable=False),
        sa.Column("step_key", sa.String(length=80), nullable=False),
        sa.Column("input_key", sa.Text(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_sample_results")),
    )
    with op.batch_alter_table("sample_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sample_results_step_key"), ["step_key"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sample_results_step_run_id"), ["step_run_id"], unique=False
        )

    op.create_table(
        "scores",
        sa.Column("pair_id", sa.String(length=64), nullable=False),
        sa.Column("instruction_id", sa.String(length=64), nullable=True),
        sa.Column("scorer", sa.String(length=200), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scores")),
    )
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scores_instruction_id"), ["instruction_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_scores_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_scores_step_run_id"), ["step_run_id"], unique=False)

    op.create_table(
        "verdicts",
        sa.Column("pair_id", sa.String(length=64), nullable=False),
        sa.Column("instruction_id", sa.String(length=64), nullable=True),
        sa.Column("reference_id", sa.String(length=64), nullable=True),
        sa.Column("judge", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("weighted", sa.Float(), nullable=True),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdicts")),
    )
    with op.batch_alter_table("verdicts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_verdicts_instruction_id"), ["instruction_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_verdicts_pair_id"), ["pair_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verdicts_step_run_id"), ["step_run_id"], unique=False)

    op.create_table(
        "step_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("plugin", sa.String(length=200), nullable=False),
        sa.Column("plugin_version", sa.String(length=64), nullable=False),
        sa.Column("package", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("step_key", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_step_runs_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_runs")),
    )
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_runs_plugin"), ["plugin"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_runs_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_runs_step_id"), ["step_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_runs_step_key"), ["step_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_runs_step_key"))
        batch_op.drop_index(batch_op.f("ix_step_runs_step_id"))
        batch_op.drop_index(batch_op.f("ix_step_runs_run_id"))
        batch_op.drop_index(batch_op.f("ix_step_runs_plugin"))

    op.drop_table("step_runs")
    with op.batch_alter_table("verdicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verdicts_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_verdicts_pair_id"))
        batch_op.drop_index(batch_op.f("ix_verdicts_instruction_id"))

    op.drop_table("verdicts")
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scores_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_scores_pair_id"))
        batch_op.drop_index(batch_op.f("ix_scores_instruction_id"))

    op.drop_table("scores")
    with op.batch_alter_table("sample_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sample_results_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_sample_results_step_key"))

    op.drop_table("sample_results")
    with op.batch_alter_table("sample_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sample_failures_step_run_id"))

    op.drop_table("sample_failures")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_spec_hash"))

    op.drop_table("runs")
    with op.batch_alter_table("refs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refs_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_refs_pair_id"))

    op.drop_table("refs")
    with op.batch_alter_table("preferences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_preferences_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_preferences_pair_id"))

    op.drop_table("preferences")
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pairs_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_pairs_category"))

    op.drop_table("pairs")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_step_run_id"))

    op.drop_table("models")
    with op.batch_alter_table("instructions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instructions_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_instructions_parent_id"))
        batch_op.drop_index(batch_op.f("ix_instructions_pair_id"))
        batch_op.drop_index(batch_op.f("ix_instructions_origin"))

    op.drop_table("instructions")
    with op.batch_alter_table("external_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_external_tasks_step_key"))

    op.drop_table("external_tasks")
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.drop_index("ix_edges_src")
        batch_op.drop_index("ix_edges_dst")

    op.drop_table("edges")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_datasets_content_hash"))

    op.drop_table("datasets")
