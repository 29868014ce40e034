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


#: provider job states whose requests never went out (nothing to bill)
_NOT_SUBMITTED = ("prepared", "uploaded")

UNANSWERED_MESSAGE = (
    "in provider job {job} when the batch was finalized: its answer was never received "
    "(the provider may have billed it; its cost is unknown)"
)
NOT_SUBMITTED_MESSAGE = (
    "in provider job {job}, never submitted, when the batch was finalized: not sent, not billed"
)


async def mark_unanswered_lost(store: Store, batch_id: str, *, owner: str | None = None) -> int:
    """``cj-run finalize``: the calls still stored as ``sent`` (inside provider jobs that
    have not ended: the provider no longer knows the job, or its answers are given up)
    become ``lost``, the terminal state of a call whose answer never came, with a message
    naming the job. A call of a job that was never submitted (``prepared``, ``uploaded``)
    gets the error kind ``not_submitted`` (it was not sent, so not billed); every other
    one ``lost`` (it may have been billed: its cost is unknown). Returns how many calls
    became ``lost``. With ``owner``, only while that process holds the lock."""
    from cj_runner.storage.schema import ProviderJobRequestRow, ProviderJobRow

    jobs = cast(Table, ProviderJobRow.__table__)
    requests = cast(Table, ProviderJobRequestRow.__table__)
    # this batch's job requests (slot numbers are per batch)
    mine = (
        select(
            requests.c.slot,
            requests.c.attempt,
            jobs.c.job_no,
            jobs.c.provider_job_id,
            jobs.c.state,
        )
        .select_from(requests.join(jobs, jobs.c.job_key == requests.c.job_key))
        .where(jobs.c.batch_id == batch_id)
        .subquery()
    )
    async with store.engine.begin() as conn:
        if owner is not None:
            await fence(conn, batch_id, owner)
        rows = (
            await conn.execute(
                select(
                    T_COMPARISONS.c.slot,
                    mine.c.job_no,
                    mine.c.provider_job_id,
                    mine.c.state,
                )
                .select_from(
                    T_COMPARISONS.outerjoin(
                        mine,
                        and_(
                            mine.c.slot == T_COMPARISONS.c.slot,
                            mine.c.attempt == T_COMPARISONS.c.attempt,
                        ),
                    )
                )
                .where(T_COMPARISONS.c.batch_id == batch_id, T_COMPARISONS.c.status == "sent")
                .order_by(T_COMPARISONS.c.slot, mine.c.job_no)
            )
        ).all()
        # a slot has one ``sent`` attempt (its last); asked in two jobs, the later counts
        latest = {int(row.slot): row for row in rows}
        groups: dict[tuple[str, str], list[int]] = {}
        for slot, row in latest.items():
            if row.job_no is None:  # in no job (_rebuild leaves none such): in flight
                kind, message = "lost", "in flight when the batch was finalized"
            else:
                job = f"{row.job_no}" + (f" ({row.provider_job_id})" if row.provider_job_id else "")
                if row.state in _NOT_SUBMITTED:
                    kind, message = "not_submitted", NOT_SUBMITTED_MESSAGE.format(job=job)
                else:
                    kind, message = "lost", UNANSWERED_MESSAGE.format(job=job)
            groups.setdefault((kind, message), []).append(slot)
        for (kind, message), slots in groups.items():
            for start in range(0, len(slots), 500):
                await conn.execute(
                    update(T_COMPARISONS)
                    .where(
                        T_COMPARISONS.c.batch_id == batch_id,
                        T_COMPARISONS.c.status == "sent",
                        T_COMPARISONS.c.slot.in_(slots[start : start + 500]),
                    )
                    .values(status="lost", error_kind=kind, error_message=message)
                )
    return len(latest)
