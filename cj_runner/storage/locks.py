"""A batch's run lock: one process writes a batch at a time, and a process whose lock was
taken over writes nothing more (:func:`fence`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import BatchLockedError, NotFoundError
from cj_runner.storage.engine import Store
from cj_runner.storage.tables import T_BATCHES, aware, utcnow

LOCK_STALE_AFTER = timedelta(seconds=30)
"""A lock whose heartbeat is older than this is free, whoever holds it."""


async def acquire_lock(
    store: Store,
    batch_id: str,
    owner: str,
    *,
    owner_alive: Callable[[str], bool] | None = None,
) -> None:
    """Take the batch's run lock, or raise :class:`BatchLockedError`.

    A lock is free when nobody holds it, when its heartbeat is older than
    ``LOCK_STALE_AFTER``, or when ``owner_alive(lock_owner)`` says its process is gone.
    Taking it over is a compare-and-set on the previous holder, so of two processes that
    race for a free lock exactly one wins.
    """
    now = utcnow()
    async with store.engine.begin() as conn:
        row = (
            await conn.execute(
                select(T_BATCHES.c.lock_owner, T_BATCHES.c.lock_heartbeat).where(
                    T_BATCHES.c.id == batch_id
                )
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        holder, beat = row.lock_owner, aware(row.lock_heartbeat)
        if holder and holder != owner:
            fresh = beat is not None and now - beat < LOCK_STALE_AFTER
            alive = owner_alive(holder) if owner_alive is not None else True
            if fresh and alive:
                raise BatchLockedError(
                    f"batch {batch_id} is being run by another process ({holder}); "
                    "wait for it or stop it first"
                )
        result = await conn.execute(
            update(T_BATCHES)
            .where(
                and_(
                    T_BATCHES.c.id == batch_id,
                    T_BATCHES.c.lock_owner.is_(None)
                    if holder is None
                    else T_BATCHES.c.lock_owner == holder,
                )
            )
            .values(lock_owner=owner, lock_heartbeat=now)
        )
        if result.rowcount != 1:
            raise BatchLockedError(f"batch {batch_id} was locked by another process just now")


# built once: a statement built per transaction costs SQLAlchemy a cache-key walk each time
_HEARTBEAT = (
    update(T_BATCHES)
    .where(
        and_(T_BATCHES.c.id == bindparam("k_batch"), T_BATCHES.c.lock_owner == bindparam("k_owner"))
    )
    .values(lock_heartbeat=bindparam("k_now"))
)


async def fence(conn: AsyncConnection, batch_id: str, owner: str) -> None:
    """Inside a write transaction: refresh the heartbeat, or raise when ``owner`` no longer
    holds the lock (another process took it over), so that nothing of this transaction
    is written."""
    result = await conn.execute(
        _HEARTBEAT, {"k_batch": batch_id, "k_owner": owner, "k_now": utcnow()}
    )
    if result.rowcount != 1:
        raise BatchLockedError(
            f"batch {batch_id} was taken over by another process; this one stopped writing"
        )


async def heartbeat(store: Store, batch_id: str, owner: str) -> bool:
    """Refresh the lock's heartbeat; ``False`` when ``owner`` no longer holds the lock."""
    async with store.engine.begin() as conn:
        result = await conn.execute(
            _HEARTBEAT, {"k_batch": batch_id, "k_owner": owner, "k_now": utcnow()}
        )
    return result.rowcount == 1


async def release_lock(store: Store, batch_id: str, owner: str) -> None:
    """Give the lock back (nothing happens when ``owner`` does not hold it)."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(T_BATCHES)
            .where(and_(T_BATCHES.c.id == batch_id, T_BATCHES.c.lock_owner == owner))
            .values(lock_owner=None, lock_heartbeat=None)
        )


async def lock_holder(store: Store, batch_id: str) -> tuple[str | None, datetime | None]:
    """Who holds the batch's lock and its last heartbeat (diagnostics and tests)."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(T_BATCHES.c.lock_owner, T_BATCHES.c.lock_heartbeat).where(
                    T_BATCHES.c.id == batch_id
                )
            )
        ).first()
    if row is None:
        raise NotFoundError(f"no batch {batch_id!r}")
    return row.lock_owner, aware(row.lock_heartbeat)
