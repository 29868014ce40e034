"""Initial schema: assignments, anchors, texts, batches, state, nodes, comparisons, waves,
grade projections.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "texts",
        sa.Column("checksum", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_table(
        "assignments",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("grade_scale", sa.String(100), nullable=False),
        sa.Column("grades", sa.JSON(), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("student_prompt", sa.Text(), nullable=False),
        sa.Column("rubric", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "anchors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "assignment_id",
            sa.String(200),
            sa.ForeignKey("assignments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("grade", sa.String(50), nullable=False),
        sa.Column("checksum", sa.String(64), sa.ForeignKey("texts.checksum"), nullable=False),
        sa.Column("source_name", sa.String(500), nullable=False),
        sa.Column("metadata_json", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("assignment_id", "checksum"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), unique=True),
        sa.Column("assignment_id", sa.String(200), sa.ForeignKey("assignments.id")),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stop_reason", sa.String(50)),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("settings_json", sa.JSON(), nullable=False),
        sa.Column("judge_json", sa.JSON(), nullable=False),
        sa.Column("judge_name", sa.String(200), nullable=False),
        sa.Column("inventory", sa.Text(), nullable=False),
        sa.Column("plan_json", sa.JSON(), nullable=False),
        sa.Column("lock_owner", sa.String(200)),
        sa.Column("lock_heartbeat", TZ),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
    )
    op.create_table(
        "batch_state",
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("total_budget", sa.Integer(), nullable=False),
        sa.Column("calls_sent", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("current_mode", sa.String(20), nullable=False),
        sa.Column("max_possible_pairs", sa.Integer(), nullable=False),
        sa.Column("successful_pairs_count", sa.Integer(), nullable=False),
        sa.Column("unique_coverage_complete", sa.Boolean(), nullable=False),
        sa.Column("resampling_pass_count", sa.Integer(), nullable=False),
        sa.Column("pass_remaining", sa.JSON(), nullable=False),
        sa.Column("ssr", sa.Float()),
        sa.Column("order_effect", sa.Float()),
        sa.Column("order_effect_se", sa.Float()),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("extra_json", sa.JSON(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("essay_id", sa.String(500), nullable=False),
        sa.Column("is_anchor", sa.Boolean(), nullable=False),
        sa.Column("known_grade", sa.String(50)),
        sa.Column("checksum", sa.String(64), sa.ForeignKey("texts.checksum"), nullable=False),
        sa.Column("metadata_json", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float()),
        sa.Column("se", sa.Float()),
        sa.Column("comparison_count", sa.Integer(), nullable=False),
        sa.Column("a_count", sa.Integer(), nullable=False),
        sa.Column("b_count", sa.Integer(), nullable=False),
        sa.Column("infit", sa.Float()),
        sa.Column("outfit", sa.Float()),
        sa.UniqueConstraint("batch_id", "idx"),
        sa.UniqueConstraint("batch_id", "essay_id"),
    )
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("call_no", sa.Integer()),
        sa.Column("a_idx", sa.Integer(), nullable=False),
        sa.Column("b_idx", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("winner", sa.String(1)),
        sa.Column("confidence", sa.Integer()),
        sa.Column("justification", sa.Text()),
        sa.Column("error_kind", sa.String(50)),
        sa.Column("error_message", sa.Text()),
        sa.Column("tokens_in", sa.Integer()),
        sa.Column("tokens_out", sa.Integer()),
        sa.Column("latency_s", sa.Float()),
        sa.Column("sent_at", TZ),
        sa.Column("received_at", TZ),
        sa.UniqueConstraint("batch_id", "slot", "attempt"),
    )
    op.create_index("ix_comparisons_batch_status", "comparisons", ["batch_id", "status"])
    op.create_table(
        "waves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("max_score_change", sa.Float()),
        sa.Column("ssr", sa.Float()),
        sa.Column("calls_sent", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(40)),
        sa.Column("reason", sa.String(50)),
        sa.Column("finished_at", TZ, nullable=False),
        sa.UniqueConstraint("batch_id", "wave"),
    )
    op.create_table(
        "grade_projections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.String(32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("node_idx", sa.Integer(), nullable=False),
        sa.Column("projected_grade", sa.String(50)),
        sa.Column("confidence", sa.Float()),
        sa.Column("expected_index", sa.Float()),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("deferred_reason", sa.Text()),
        sa.UniqueConstraint("batch_id", "node_idx"),
    )


def downgrade() -> None:
    for table in (
        "grade_projections",
        "waves",
        "comparisons",
        "nodes",
        "batch_state",
        "batches",
        "anchors",
        "assignments",
        "texts",
    ):
        op.drop_table(table)
