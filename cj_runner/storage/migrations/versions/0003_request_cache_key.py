"""Judgment cache keyed by the whole request: a new ``judgment_cache`` table (request key,
source batch) and ``comparisons.cache_source``.

The answers of the 0002 cache were keyed by the model, the prompt *template* and the
essays only, so the same essays under another rubric, temperature or server reused them.
Their keys cannot be rebuilt (the rendered request was never stored), so the old table
is dropped: an old database opens, and none of its old answers is ever reused.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("cache_source", sa.String(36)))
    op.drop_table("judgment_cache")
    op.create_table(
        "judgment_cache",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_key", sa.String(64), nullable=False, unique=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("batch_id", sa.String(36)),
        sa.Column("checksum_a", sa.String(64), nullable=False),
        sa.Column("checksum_b", sa.String(64), nullable=False),
        sa.Column("repeat_index", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(1), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_judgment_cache_model", "judgment_cache", ["model"])


def downgrade() -> None:
    op.drop_index("ix_judgment_cache_model", table_name="judgment_cache")
    op.drop_table("judgment_cache")
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
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_column("cache_source")
