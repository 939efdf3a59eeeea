"""api calls

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 22:15:07.971117
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_calls",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=80), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("batch_job_id", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("step_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_calls")),
    )
    with op.batch_alter_table("api_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_calls_batch_job_id"), ["batch_job_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_api_calls_request_hash"), ["request_hash"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_api_calls_step_run_id"), ["step_run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_calls_step_run_id"))
        batch_op.drop_index(batch_op.f("ix_api_calls_request_hash"))
        batch_op.drop_index(batch_op.f("ix_api_calls_batch_job_id"))

    op.drop_table("api_calls")
