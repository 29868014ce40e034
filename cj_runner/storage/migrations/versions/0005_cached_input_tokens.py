"""Cached input tokens per attempt (the part of ``tokens_in`` read from the provider's
prompt cache, billed at the profile's cached price).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("tokens_cached", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_column("tokens_cached")
