"""Provider batch jobs (issue 16): ``provider_jobs`` (one OpenAI Batch or Anthropic Message
Batch of a batch run, its state, file and job ids) and ``provider_job_requests`` (each
request's ``custom_id``, the comparison attempt it answers and its body).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_jobs",
        sa.Column("job_key", sa.String(64), primary_key=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_no", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("input_file_id", sa.String(200)),
        sa.Column("provider_job_id", sa.String(200)),
        sa.Column("provider_status", sa.String(40)),
        sa.Column("counts_json", sa.JSON()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitting_at", sa.DateTime(timezone=True)),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "provider_job_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_key",
            sa.String(64),
            sa.ForeignKey("provider_jobs.job_key", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("custom_id", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("judge_attempt", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.UniqueConstraint("job_key", "custom_id"),
    )
    op.create_index(
        "ix_provider_job_requests_slot", "provider_job_requests", ["job_key", "slot", "attempt"]
    )


def downgrade() -> None:
    op.drop_index("ix_provider_job_requests_slot", table_name="provider_job_requests")
    op.drop_table("provider_job_requests")
    op.drop_table("provider_jobs")
