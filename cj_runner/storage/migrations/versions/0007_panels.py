"""Panels: judgments imported from outside (a human panel, another tool) with their
provenance.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imported_judgments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("a_idx", sa.Integer(), nullable=False),
        sa.Column("b_idx", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(1), nullable=False),
        sa.Column("judge", sa.String(200), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True)),
        sa.Column("source_name", sa.String(500), nullable=False),
        sa.Column("source_checksum", sa.String(64), nullable=False),
        sa.Column("source_row", sa.Integer(), nullable=False),
        sa.Column("metadata_json", sa.JSON(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_imported_judgments_batch", "imported_judgments", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_imported_judgments_batch", table_name="imported_judgments")
    op.drop_table("imported_judgments")
