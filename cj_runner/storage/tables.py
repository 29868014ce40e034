"""The tables as SQLAlchemy Core handles, and the helpers every store module shares."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.storage.schema import (
    AnchorRow,
    AssignmentRow,
    BatchRow,
    BatchStateRow,
    ComparisonRow,
    GradeProjectionRow,
    JudgmentCacheRow,
    NodeRow,
    TextRow,
    WaveRow,
)

T_TEXTS = cast(Table, TextRow.__table__)
T_ASSIGNMENTS = cast(Table, AssignmentRow.__table__)
T_ANCHORS = cast(Table, AnchorRow.__table__)
T_BATCHES = cast(Table, BatchRow.__table__)
T_STATE = cast(Table, BatchStateRow.__table__)
T_NODES = cast(Table, NodeRow.__table__)
T_COMPARISONS = cast(Table, ComparisonRow.__table__)
T_WAVES = cast(Table, WaveRow.__table__)
T_PROJECTIONS = cast(Table, GradeProjectionRow.__table__)
T_CACHE = cast(Table, JudgmentCacheRow.__table__)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; they were stored as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


async def put_texts(conn: AsyncConnection, texts: Iterable[tuple[str, str]]) -> None:
    """Store the texts (checksum, text) not stored yet, inside the caller's transaction."""
    wanted = dict(texts)
    if not wanted:
        return
    existing: set[str] = set()
    keys = list(wanted)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = await conn.execute(select(T_TEXTS.c.checksum).where(T_TEXTS.c.checksum.in_(chunk)))
        existing.update(r[0] for r in rows)
    missing = [{"checksum": k, "text": v} for k, v in wanted.items() if k not in existing]
    if missing:
        await conn.execute(insert(T_TEXTS), missing)
