"""Tables of the store (SQLAlchemy 2 declarative, ``Mapped[...]``).

One row of ``comparisons`` is one judge call (an *attempt*). Attempts of the same logical
comparison share ``slot``; ``call_no`` numbers the calls sent in a batch (1..budget), so
``batch_state.calls_sent`` can never disagree with the rows. Texts are stored once per
checksum in ``texts`` and referenced by nodes and anchors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class TextRow(Base):
    """An essay text, stored once per SHA-256 checksum."""

    __tablename__ = "texts"
    checksum: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class AssignmentRow(Base):
    """An assignment: grade scale and the texts used in the judge prompt."""

    __tablename__ = "assignments"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    grade_scale: Mapped[str] = mapped_column(String(100))
    grades: Mapped[list[Any]] = mapped_column(JSON)
    instructions: Mapped[str] = mapped_column(Text, default="")
    student_prompt: Mapped[str] = mapped_column(Text, default="")
    rubric: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AnchorRow(Base):
    """An anchor essay with a known grade, registered for one assignment."""

    __tablename__ = "anchors"
    __table_args__ = (UniqueConstraint("assignment_id", "checksum"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[str] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    grade: Mapped[str] = mapped_column(String(50))
    checksum: Mapped[str] = mapped_column(ForeignKey("texts.checksum"))
    source_name: Mapped[str] = mapped_column(String(500))
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchRow(Base):
    """One CJ run."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), unique=True)
    assignment_id: Mapped[str | None] = mapped_column(ForeignKey("assignments.id"))
    status: Mapped[str] = mapped_column(String(20))
    stop_reason: Mapped[str | None] = mapped_column(String(50))
    seed: Mapped[int] = mapped_column(BigInteger)
    settings_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    judge_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    judge_name: Mapped[str] = mapped_column(String(200))
    inventory: Mapped[str] = mapped_column(Text, default="")
    plan_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lock_owner: Mapped[str | None] = mapped_column(String(200))
    lock_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BatchStateRow(Base):
    """Counters and coverage metadata of a batch (spec §4), updated after every wave."""

    __tablename__ = "batch_state"
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    total_budget: Mapped[int] = mapped_column(Integer)
    calls_sent: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    current_mode: Mapped[str] = mapped_column(String(20), default="coverage")
    max_possible_pairs: Mapped[int] = mapped_column(Integer, default=0)
    successful_pairs_count: Mapped[int] = mapped_column(Integer, default=0)
    unique_coverage_complete: Mapped[bool] = mapped_column(Boolean, default=False)
    resampling_pass_count: Mapped[int] = mapped_column(Integer, default=0)
    pass_remaining: Mapped[list[Any]] = mapped_column(JSON, default=list)
    ssr: Mapped[float | None] = mapped_column(Float)
    order_effect: Mapped[float | None] = mapped_column(Float)
    order_effect_se: Mapped[float | None] = mapped_column(Float)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    extra_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NodeRow(Base):
    """An essay or anchor inside a batch; ``idx`` is its index in the core's arrays."""

    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("batch_id", "idx"), UniqueConstraint("batch_id", "essay_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    essay_id: Mapped[str] = mapped_column(String(500))
    is_anchor: Mapped[bool] = mapped_column(Boolean, default=False)
    known_grade: Mapped[str | None] = mapped_column(String(50))
    checksum: Mapped[str] = mapped_column(ForeignKey("texts.checksum"))
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    score: Mapped[float | None] = mapped_column(Float)
    se: Mapped[float | None] = mapped_column(Float)
    comparison_count: Mapped[int] = mapped_column(Integer, default=0)
    a_count: Mapped[int] = mapped_column(Integer, default=0)
    b_count: Mapped[int] = mapped_column(Integer, default=0)
    infit: Mapped[float | None] = mapped_column(Float)
    outfit: Mapped[float | None] = mapped_column(Float)


class ComparisonRow(Base):
    """One judge call (attempt) of one logical comparison (``slot``)."""

    __tablename__ = "comparisons"
    __table_args__ = (
        UniqueConstraint("batch_id", "slot", "attempt"),
        Index("ix_comparisons_batch_status", "batch_id", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    slot: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    call_no: Mapped[int | None] = mapped_column(Integer)
    a_idx: Mapped[int] = mapped_column(Integer)
    b_idx: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(20))
    wave: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    winner: Mapped[str | None] = mapped_column(String(1))
    confidence: Mapped[int | None] = mapped_column(Integer)
    justification: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    latency_s: Mapped[float | None] = mapped_column(Float)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # added by migration 0002 (judgment cache)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_hash: Mapped[str | None] = mapped_column(String(64))
    repeat_index: Mapped[int] = mapped_column(Integer, default=0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    # added by migration 0003: the batch that paid for a reused (cached) answer
    cache_source: Mapped[str | None] = mapped_column(String(36))
    # added by migration 0005: the part of tokens_in read from the provider's prompt cache
    tokens_cached: Mapped[int | None] = mapped_column(Integer)
    # added by migration 0008: in a panel batch, the judge asked (NULL: the batch's judge,
    # or a panel batch stored before 0008, whose judge is recomputed from the pair)
    judge: Mapped[str | None] = mapped_column(String(200))


class ImportedJudgmentRow(Base):
    """A judgment made outside cj-runner (a human panel, another tool) and imported into a
    batch (added by migration 0006): who judged which pair shown how, who won, and where
    it came from (file name, its SHA-256 and the row). Never counted against the budget."""

    __tablename__ = "imported_judgments"
    __table_args__ = (Index("ix_imported_judgments_batch", "batch_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    a_idx: Mapped[int] = mapped_column(Integer)
    b_idx: Mapped[int] = mapped_column(Integer)
    winner: Mapped[str] = mapped_column(String(1))
    judge: Mapped[str] = mapped_column(String(200))
    judged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_name: Mapped[str] = mapped_column(String(500))
    source_checksum: Mapped[str] = mapped_column(String(64))
    source_row: Mapped[int] = mapped_column(Integer)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WaveRow(Base):
    """Per-wave history: mode, size, largest score change, SSR, decision."""

    __tablename__ = "waves"
    __table_args__ = (UniqueConstraint("batch_id", "wave"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    wave: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(Integer)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    max_score_change: Mapped[float | None] = mapped_column(Float)
    ssr: Mapped[float | None] = mapped_column(Float)
    calls_sent: Mapped[int] = mapped_column(Integer, default=0)
    decision: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(String(50))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GradeProjectionRow(Base):
    """A student's projected grade (or the reason it was deferred)."""

    __tablename__ = "grade_projections"
    __table_args__ = (UniqueConstraint("batch_id", "node_idx"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    node_idx: Mapped[int] = mapped_column(Integer)
    projected_grade: Mapped[str | None] = mapped_column(String(50))
    confidence: Mapped[float | None] = mapped_column(Float)
    expected_index: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deferred_reason: Mapped[str | None] = mapped_column(Text)


class JudgmentCacheRow(Base):
    """Answers reusable across batches, keyed by a hash of the whole request.

    ``request_key`` is the judge's :meth:`cache_key` of the request (endpoint, model, full
    rendered messages, sampling and reasoning parameters, repeat index); the other key
    columns are kept for reading only. ``batch_id`` is the batch that paid for the answer
    (no foreign key: the answer outlives a deleted batch).
    """

    __tablename__ = "judgment_cache"
    __table_args__ = (Index("ix_judgment_cache_model", "model"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_key: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    batch_id: Mapped[str | None] = mapped_column(String(36))
    checksum_a: Mapped[str] = mapped_column(String(64))
    checksum_b: Mapped[str] = mapped_column(String(64))
    repeat_index: Mapped[int] = mapped_column(Integer)
    winner: Mapped[str] = mapped_column(String(1))
    confidence: Mapped[int] = mapped_column(Integer)
    justification: Mapped[str] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(Integer)
    tokens_out: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CohortQueueRow(Base):
    """A batch in the cohort queue (added by the cohort-queue migration): which cohort
    and class it belongs to, and which worker claimed it. Its progress is the batch's."""

    __tablename__ = "cohort_queue"
    __table_args__ = (
        UniqueConstraint("cohort", "class_id"),
        Index("ix_cohort_queue_claimed_by", "claimed_by"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), unique=True)
    cohort: Mapped[str] = mapped_column(String(200))
    class_id: Mapped[str] = mapped_column(String(200))
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claims: Mapped[int] = mapped_column(Integer, default=0)


class RateBucketRow(Base):
    """A token bucket shared by every process on the database (requests or tokens per
    minute of one provider model). ``stamp`` is the database's clock in epoch seconds."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    rate_per_s: Mapped[float] = mapped_column(Float)
    capacity: Mapped[float] = mapped_column(Float)
    level: Mapped[float] = mapped_column(Float)
    stamp: Mapped[float] = mapped_column(Float)


class ProviderJobRow(Base):
    """One provider batch job (OpenAI Batch, Anthropic Message Batches) of a batch run in
    batch-API mode. ``state``: ``prepared`` (its requests and their ``sent`` attempts are
    stored; nothing went out), ``uploaded`` (OpenAI: the input file is up, ``input_file_id``
    known), ``submitting`` (the create request may be out: a resume looks the job up by
    ``job_key`` before sending another), ``submitted`` (``provider_job_id`` known),
    ``ended`` (every answer is stored in ``comparisons``)."""

    __tablename__ = "provider_jobs"
    job_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    job_no: Mapped[int] = mapped_column(Integer)
    wave: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    input_file_id: Mapped[str | None] = mapped_column(String(200))
    provider_job_id: Mapped[str | None] = mapped_column(String(200))
    provider_status: Mapped[str | None] = mapped_column(String(40))
    counts_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submitting_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProviderJobRequestRow(Base):
    """One request of a provider job: the comparison attempt it answers (``slot``,
    ``attempt``) and the request body exactly as it is (or was) sent."""

    __tablename__ = "provider_job_requests"
    __table_args__ = (
        UniqueConstraint("job_key", "custom_id"),
        Index("ix_provider_job_requests_slot", "job_key", "slot", "attempt"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_key: Mapped[str] = mapped_column(ForeignKey("provider_jobs.job_key", ondelete="CASCADE"))
    custom_id: Mapped[str] = mapped_column(String(64))
    slot: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    judge_attempt: Mapped[int] = mapped_column(Integer, default=1)
    body: Mapped[str] = mapped_column(Text)
