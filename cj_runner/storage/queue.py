"""The cohort queue: batches waiting for a worker, claims, and taking over a dead worker's
batch.

A queue entry is one batch of a cohort (one class). Its progress is the batch's own status;
the entry only says who claimed it:

* **queued**: nobody claimed it (``claimed_by`` is empty).
* **claimed**: a worker took it; the worker beats ``heartbeat_at`` (and the batch's run
  lock) while it runs the batch.
* An entry whose worker stopped beating for longer than the stale timeout, and whose batch
  lock is free or equally stale, is taken over: in one transaction the new worker replaces
  the claim and frees the batch lock, both as a compare-and-set on what it read, so of two
  workers that race for it exactly one wins. The executor then takes the free lock and
  resumes the batch; should the old worker still be alive after all, its next write fails
  the lock's fence and it stops.

Claiming the next queued entry uses ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL
(workers never wait on each other's claims); on SQLite it is a conditional ``UPDATE``
(``... WHERE claimed_by IS NULL``) checked by its row count, which the single writer
makes safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update

from cj_runner.errors import InputError
from cj_runner.storage.batch_rows import insert_batch
from cj_runner.storage.engine import Store
from cj_runner.storage.schema import CohortQueueRow
from cj_runner.storage.tables import (
    T_ASSIGNMENTS,
    T_BATCHES,
    T_COMPARISONS,
    T_PROJECTIONS,
    T_STATE,
    aware,
    utcnow,
)

T_QUEUE = cast(Table, CohortQueueRow.__table__)
FINISHED = ("COMPLETED", "FAILED")


@dataclass(frozen=True)
class QueuedClass:
    """One class to enqueue: its id in the cohort and :func:`insert_batch`'s arguments."""

    class_id: str
    batch: dict[str, Any]


class _LostRace(Exception):
    """Another worker changed the entry between our read and our write."""


def batch_name(cohort: str, class_id: str) -> str:
    """The name a queued batch gets: ``cohort/class``."""
    return f"{cohort}/{class_id}"


async def enqueue(store: Store, cohort: str, classes: Sequence[QueuedClass]) -> list[str]:
    """Create every class's batch and queue it, all in one transaction; returns batch ids.

    Raises:
        InputError: the cohort already has one of these classes, or a batch name is taken
            (nothing is written).
    """
    now = utcnow()
    ids: list[str] = []
    async with store.engine.begin() as conn:
        class_ids = [c.class_id for c in classes]
        taken: set[str] = set()
        for start in range(0, len(class_ids), 500):
            chunk = class_ids[start : start + 500]
            rows = await conn.execute(
                select(T_QUEUE.c.class_id).where(
                    T_QUEUE.c.cohort == cohort, T_QUEUE.c.class_id.in_(chunk)
                )
            )
            taken.update(r[0] for r in rows)
        if taken:
            first = sorted(taken)[0]
            raise InputError(
                f"cohort {cohort!r} already has class {first!r} queued"
                + (f" (and {len(taken) - 1} more)" if len(taken) > 1 else "")
            )
        names = [c.batch.get("name") for c in classes if c.batch.get("name")]
        for start in range(0, len(names), 500):
            row = (
                await conn.execute(
                    select(T_BATCHES.c.name).where(T_BATCHES.c.name.in_(names[start : start + 500]))
                )
            ).first()
            if row is not None:
                raise InputError(f"a batch named {row[0]!r} already exists")
        for item in classes:
            batch_id = await insert_batch(conn, **item.batch)
            await conn.execute(
                insert(T_QUEUE).values(
                    batch_id=batch_id,
                    cohort=cohort,
                    class_id=item.class_id,
                    enqueued_at=now,
                    claims=0,
                )
            )
            ids.append(batch_id)
    return ids


def _scope(query: Any, cohort: str | None) -> Any:
    return query if cohort is None else query.where(T_QUEUE.c.cohort == cohort)


async def claim_next(store: Store, worker: str, cohort: str | None = None) -> str | None:
    """Claim the oldest queued entry for ``worker``; its batch id, or ``None`` when nothing
    is queued."""
    postgres = store.dialect == "postgresql"
    while True:
        now = utcnow()
        async with store.engine.begin() as conn:
            query = _scope(
                select(T_QUEUE.c.id, T_QUEUE.c.batch_id)
                .where(T_QUEUE.c.claimed_by.is_(None))
                .order_by(T_QUEUE.c.id)
                .limit(1),
                cohort,
            )
            if postgres:
                query = query.with_for_update(skip_locked=True)
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            result = await conn.execute(
                update(T_QUEUE)
                .where(and_(T_QUEUE.c.id == row.id, T_QUEUE.c.claimed_by.is_(None)))
                .values(
                    claimed_by=worker,
                    claimed_at=now,
                    heartbeat_at=now,
                    claims=T_QUEUE.c.claims + 1,
                )
            )
            if result.rowcount == 1:
                return str(row.batch_id)
        # SQLite: another process claimed it between our read and write; try the next


async def take_over_stale(
    store: Store, worker: str, stale_after: timedelta, cohort: str | None = None
) -> tuple[str, str] | None:
    """Take over an unfinished entry whose worker stopped beating for ``stale_after``
    (and whose batch lock is free or as stale); returns (batch id, previous worker).

    The previous worker may be ``worker`` itself: it beats only while it runs a batch.
    """
    postgres = store.dialect == "postgresql"
    while True:
        now = utcnow()
        cutoff = now - stale_after
        stale = and_(
            T_QUEUE.c.claimed_by.is_not(None),
            or_(T_QUEUE.c.heartbeat_at.is_(None), T_QUEUE.c.heartbeat_at < cutoff),
        )
        lock_free = or_(
            T_BATCHES.c.lock_owner.is_(None),
            T_BATCHES.c.lock_heartbeat.is_(None),
            T_BATCHES.c.lock_heartbeat < cutoff,
        )
        try:
            async with store.engine.begin() as conn:
                query = _scope(
                    select(T_QUEUE.c.id, T_QUEUE.c.batch_id, T_QUEUE.c.claimed_by)
                    .join(T_BATCHES, T_BATCHES.c.id == T_QUEUE.c.batch_id)
                    .where(stale, lock_free, T_BATCHES.c.status.not_in(FINISHED))
                    .order_by(T_QUEUE.c.id)
                    .limit(1),
                    cohort,
                )
                if postgres:
                    query = query.with_for_update(of=T_QUEUE, skip_locked=True)
                row = (await conn.execute(query)).first()
                if row is None:
                    return None
                claimed = await conn.execute(
                    update(T_QUEUE)
                    .where(and_(T_QUEUE.c.id == row.id, T_QUEUE.c.claimed_by == row.claimed_by))
                    .where(stale)
                    .values(
                        claimed_by=worker,
                        claimed_at=now,
                        heartbeat_at=now,
                        claims=T_QUEUE.c.claims + 1,
                    )
                )
                freed = await conn.execute(
                    update(T_BATCHES)
                    .where(and_(T_BATCHES.c.id == row.batch_id, lock_free))
                    .values(lock_owner=None, lock_heartbeat=None)
                )
                if claimed.rowcount != 1 or freed.rowcount != 1:
                    raise _LostRace
                return str(row.batch_id), str(row.claimed_by)
        except _LostRace:
            continue


async def beat(store: Store, batch_id: str, worker: str, lock_owner: str | None) -> bool:
    """Refresh the claim's heartbeat (and the batch lock's, when ``lock_owner`` holds it);
    ``False`` when ``worker`` no longer holds the claim."""
    now = utcnow()
    async with store.engine.begin() as conn:
        result = await conn.execute(
            update(T_QUEUE)
            .where(and_(T_QUEUE.c.batch_id == batch_id, T_QUEUE.c.claimed_by == worker))
            .values(heartbeat_at=now)
        )
        if lock_owner is not None:
            await conn.execute(
                update(T_BATCHES)
                .where(and_(T_BATCHES.c.id == batch_id, T_BATCHES.c.lock_owner == lock_owner))
                .values(lock_heartbeat=now)
            )
    return result.rowcount == 1


async def release(store: Store, batch_id: str, worker: str) -> None:
    """Put an entry back in the queue (an interrupted worker), if ``worker`` holds it."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(T_QUEUE)
            .where(and_(T_QUEUE.c.batch_id == batch_id, T_QUEUE.c.claimed_by == worker))
            .values(claimed_by=None, claimed_at=None, heartbeat_at=None)
        )


async def unfinished_claims(store: Store, cohort: str | None = None) -> int:
    """Entries claimed by some worker whose batch has not finished yet."""
    async with store.engine.connect() as conn:
        query = _scope(
            select(func.count())
            .select_from(T_QUEUE.join(T_BATCHES, T_BATCHES.c.id == T_QUEUE.c.batch_id))
            .where(T_QUEUE.c.claimed_by.is_not(None), T_BATCHES.c.status.not_in(FINISHED)),
            cohort,
        )
        return int((await conn.execute(query)).scalar_one())


async def cohort_names(store: Store) -> list[str]:
    """Every cohort in the queue, in the order they were first enqueued."""
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(T_QUEUE.c.cohort, func.min(T_QUEUE.c.id).label("first"))
            .group_by(T_QUEUE.c.cohort)
            .order_by("first")
        )
        return [r.cohort for r in rows]


async def cohort_rows(store: Store, cohort: str) -> list[dict[str, Any]]:
    """Every entry of ``cohort`` with its batch, state, grade counts, grade scale and
    calls of unknown cost."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    T_QUEUE,
                    T_BATCHES.c.status,
                    T_BATCHES.c.stop_reason,
                    T_BATCHES.c.assignment_id,
                    T_BATCHES.c.judge_name,
                    T_BATCHES.c.plan_json,
                    T_BATCHES.c.finished_at,
                    T_STATE.c.total_budget,
                    T_STATE.c.calls_sent,
                    T_STATE.c.successes,
                    T_STATE.c.failures,
                    T_STATE.c.ssr,
                    T_STATE.c.tokens_in,
                    T_STATE.c.tokens_out,
                    T_STATE.c.cost_usd,
                    T_STATE.c.extra_json,
                )
                .join(T_BATCHES, T_BATCHES.c.id == T_QUEUE.c.batch_id)
                .join(T_STATE, T_STATE.c.batch_id == T_QUEUE.c.batch_id)
                .where(T_QUEUE.c.cohort == cohort)
                .order_by(T_QUEUE.c.id)
            )
        ).all()
        ids = [r.batch_id for r in rows]
        grades: dict[str, dict[str, int]] = {}
        unknown: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            counted = await conn.execute(
                select(
                    T_PROJECTIONS.c.batch_id,
                    T_PROJECTIONS.c.projected_grade,
                    func.count().label("n"),
                )
                .where(
                    T_PROJECTIONS.c.batch_id.in_(ids[start : start + 500]),
                    T_PROJECTIONS.c.projected_grade.is_not(None),
                )
                .group_by(T_PROJECTIONS.c.batch_id, T_PROJECTIONS.c.projected_grade)
            )
            for r in counted:
                grades.setdefault(r.batch_id, {})[r.projected_grade] = int(r.n)
            # calls sent whose answer never came: their cost is unknown (the same rule as
            # cj_runner.services.summary.unknown_cost_calls)
            lost = await conn.execute(
                select(T_COMPARISONS.c.batch_id, func.count().label("n"))
                .where(
                    T_COMPARISONS.c.batch_id.in_(ids[start : start + 500]),
                    T_COMPARISONS.c.status == "lost",
                    T_COMPARISONS.c.error_kind.is_distinct_from("not_submitted"),
                    T_COMPARISONS.c.tokens_in.is_(None),
                    T_COMPARISONS.c.tokens_out.is_(None),
                )
                .group_by(T_COMPARISONS.c.batch_id)
            )
            for r in lost:
                unknown[r.batch_id] = int(r.n)
        scales: dict[str, list[str]] = {}
        assignment_ids = sorted({r.assignment_id for r in rows if r.assignment_id})
        if assignment_ids:
            for a in await conn.execute(
                select(T_ASSIGNMENTS.c.id, T_ASSIGNMENTS.c.grades).where(
                    T_ASSIGNMENTS.c.id.in_(assignment_ids)
                )
            ):
                scales[a.id] = list(a.grades)
    out = []
    for r in rows:
        values = dict(r._mapping)
        values["plan"] = dict(values.pop("plan_json") or {})
        values["extra"] = dict(values.pop("extra_json") or {})
        for key in ("enqueued_at", "claimed_at", "heartbeat_at", "finished_at"):
            values[key] = aware(cast(datetime | None, values[key]))
        values["grade_counts"] = grades.get(r.batch_id, {})
        values["unknown_cost_calls"] = unknown.get(r.batch_id, 0)
        values["grades"] = scales.get(r.assignment_id or "", [])
        out.append(values)
    return out
