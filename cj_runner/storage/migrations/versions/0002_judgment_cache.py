"""Judgment cache: model, prompt hash, repeat index and cache flag on comparisons, and the
``judgment_cache`` table of reusable answers.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("model", sa.String(200)))
        batch.add_column(sa.Column("prompt_hash", sa.String(64)))
        batch.add_column(
            sa.Column("repeat_index", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "judgment_cache",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("checksum_a", sa.String(64), nullable=False),
        sa.Column("checksum_b", sa.String(64), nullable=False),
        sa.Column("repeat_index", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(1), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model", "prompt_hash", "checksum_a", "checksum_b", "repeat_index"),
    )


def downgrade() -> None:
    op.drop_table("judgment_cache")
    with op.batch_alter_table("comparisons") as batch:
        for column in ("cached", "repeat_index", "prompt_hash", "model"):
            batch.drop_column(column)
