"""Cohort queue and shared rate limits: the ``cohort_queue`` table (which cohort and class
a queued batch belongs to, which worker claimed it) and ``rate_buckets`` (token buckets
shared by every worker on the database).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cohort_queue",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("cohort", sa.String(200), nullable=False),
        sa.Column("class_id", sa.String(200), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.UniqueConstraint("cohort", "class_id"),
    )
    op.create_index("ix_cohort_queue_claimed_by", "cohort_queue", ["claimed_by"])
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("rate_per_s", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Float(), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index("ix_cohort_queue_claimed_by", table_name="cohort_queue")
    op.drop_table("cohort_queue")
