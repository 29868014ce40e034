"""Calls left unanswered by a stop or a crash: ``sent`` calls become ``lost``, ``released``
comparisons are planned again or counted as sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, and_, case, exists, func, select, update

from cj_runner.storage.engine import Store
from cj_runner.storage.locks import fence
from cj_runner.storage.marks import write_possibly_sent
from cj_runner.storage.tables import T_COMPARISONS, T_STATE


async def mark_in_flight_lost(store: Store, batch_id: str, *, owner: str | None = None) -> int:
    """Calls stored as ``sent`` with no answer (a crash) become ``lost``; returns how many.
    Calls inside a provider job that has not ended stay ``sent`` (batch-API mode). With
    ``owner``, only while that process holds the lock (a process whose lock was taken
    over must not mark the new holder's calls in flight as lost)."""
    from cj_runner.storage.schema import ProviderJobRequestRow, ProviderJobRow

    jobs = cast(Table, ProviderJobRow.__table__)
    requests = cast(Table, ProviderJobRequestRow.__table__)
    # a call inside a provider job that has not ended is not lost: its answer is coming
    in_live_job = exists(
        select(requests.c.id)
        .select_from(requests.join(jobs, requests.c.job_key == jobs.c.job_key))
        .where(
            and_(
                jobs.c.batch_id == T_COMPARISONS.c.batch_id,
                jobs.c.state != "ended",
                requests.c.slot == T_COMPARISONS.c.slot,
                requests.c.attempt == T_COMPARISONS.c.attempt,
            )
        )
    )
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        result = await conn.execute(
            update(T_COMPARISONS)
            .where(
                and_(
                    T_COMPARISONS.c.batch_id == batch_id,
                    T_COMPARISONS.c.status == "sent",
                    ~in_live_job,
                )
            )
            .values(
                status="lost", error_kind="lost", error_message="in flight when the run stopped"
            )
        )
    return int(result.rowcount or 0)


async def unrelease(store: Store, batch_id: str, *, owner: str | None = None) -> None:
    """``released`` comparisons become ``planned`` again (after a clean stop); with
    ``owner``, only while that process holds the lock."""
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        await conn.execute(
            update(T_COMPARISONS)
            .where(and_(T_COMPARISONS.c.batch_id == batch_id, T_COMPARISONS.c.status == "released"))
            .values(status="planned")
        )


async def mark_possibly_sent(
    store: Store, batch_id: str, calls: Sequence[tuple[int, int]], *, owner: str | None
) -> None:
    """Released first calls that may have gone out unrecorded become ``lost`` calls.

    ``calls`` holds ``(slot, call_no)``: each released row (attempt 1) gets its call
    number and counts against the budget like a call lost in flight: the stored
    ``calls_sent`` becomes the largest of these numbers, unless it is larger already (it
    is never lowered). With ``owner``, only while that process holds the lock.

    Raises:
        StorageError: a comparison is no longer stored as ``released``; nothing is
            changed (:func:`~cj_runner.storage.marks.write_possibly_sent`).
        BatchLockedError: ``owner`` no longer holds the lock; nothing is changed.
    """
    if not calls:
        return
    top = max(call_no for _, call_no in calls)
    stored = func.coalesce(T_STATE.c.calls_sent, 0)
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        await write_possibly_sent(conn, batch_id, calls)
        await conn.execute(
            update(T_STATE)
            .where(T_STATE.c.batch_id == batch_id)
            # max(stored, top) in SQL both backends run (PostgreSQL's max() is only an
            # aggregate, SQLite has no greatest())
            .values(calls_sent=case((stored < top, top), else_=stored))
        )
