"""Status marks on stored comparisons, each checked to match every row it names.

* a group's cancels (a planned comparison that will not be sent) and final failures (an
  attempt stored as ``retried`` or ``lost`` that will not be retried), written by the
  recorder's group commit (:mod:`~cj_runner.storage.group_writes`);
* released comparisons counted as sent and lost on resume after a crash
  (:func:`cj_runner.storage.attempts.mark_possibly_sent`).

Each matches only a row in the state it expects, so a mark never overwrites a call or
an answer (a paid call marked ``cancelled``, an answer marked ``failed``), and its row
count is checked: SQLite reports the count of an ``executemany``, asyncpg does not, so
PostgreSQL writes each kind as one ``UPDATE ... FROM unnest(...)`` (one array parameter
per column), whose count it reports. A short count raises :class:`StorageError` naming
the first comparison and how it is stored; the caller's transaction then writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from cj_runner.errors import StorageError
from cj_runner.storage.tables import T_COMPARISONS

_C = T_COMPARISONS.c

#: the states a mark may be written over: the row it expects, or the mark itself (a
#: repeat changes nothing)
MARK_FROM: dict[str, tuple[str, ...]] = {
    "cancelled": ("planned", "released", "cancelled"),
    "failed": ("retried", "lost", "failed"),
}

_CHUNK = 1000
"""Slots read back per statement (far below both drivers' parameter limits)."""


def _from(status: str) -> Any:
    # no IN: an expanding parameter cannot go into an executemany
    return or_(*(_C.status == s for s in MARK_FROM[status]))


def _sqlite_mark(status: str) -> Any:
    return (
        update(T_COMPARISONS)
        .where(
            _C.batch_id == bindparam("k_batch"),
            _C.slot == bindparam("k_slot"),
            _C.attempt == bindparam("k_attempt"),
            _from(status),
        )
        .values(
            status=status,
            received_at=func.coalesce(
                _C.received_at, bindparam("v_now", type_=_C.received_at.type)
            ),
        )
    )


def _pg_mark(status: str) -> Any:
    keys = func.unnest(
        bindparam("a_slot", type_=ARRAY(Integer)), bindparam("a_attempt", type_=ARRAY(Integer))
    ).table_valued("slot", "attempt")
    keys = keys.render_derived()
    return (
        update(T_COMPARISONS)
        .where(
            _C.batch_id == bindparam("k_batch"),
            _C.slot == keys.c.slot,
            _C.attempt == keys.c.attempt,
            _from(status),
        )
        .values(
            status=status,
            received_at=func.coalesce(
                _C.received_at, bindparam("v_now", type_=_C.received_at.type)
            ),
        )
    )


_SQLITE_MARKS = {status: _sqlite_mark(status) for status in MARK_FROM}
_PG_MARKS = {status: _pg_mark(status) for status in MARK_FROM}


async def write_marks(
    conn: AsyncConnection,
    bid: str,
    status: str,
    keys: Sequence[tuple[int, int]],
    now: datetime,
) -> None:
    """Mark the attempts ``keys`` (slot, attempt) of batch ``bid`` as ``status``
    (``cancelled`` or ``failed``; ``received_at`` set where it is empty).

    Raises:
        StorageError: an attempt is not stored, or not in a state the mark may be
            written over (:data:`MARK_FROM`); names the first such comparison.
    """
    unique = sorted(set(keys))  # a mark queued twice is written once
    if not unique:
        return
    if conn.dialect.name == "postgresql":
        done = await conn.execute(
            _PG_MARKS[status],
            {
                "k_batch": bid,
                "a_slot": [s for s, _ in unique],
                "a_attempt": [a for _, a in unique],
                "v_now": now,
            },
        )
        stored: int | None = int(done.rowcount)
    else:
        done = await conn.execute(
            _SQLITE_MARKS[status],
            [{"k_batch": bid, "k_slot": s, "k_attempt": a, "v_now": now} for s, a in unique],
        )
        stored = int(done.rowcount) if conn.dialect.supports_sane_multi_rowcount else None
    if stored == len(unique):
        return
    # short, or not known (other databases): read the rows back to name the comparison
    found = await stored_statuses(conn, bid, sorted({s for s, _ in unique}))
    for slot, attempt in unique:
        now_status = found.get((slot, attempt))
        if now_status == status:
            continue
        state = "it is not stored" if now_status is None else f"it is stored as {now_status!r}"
        raise StorageError(
            f"batch {bid}: attempt {attempt} of comparison {slot} was to be marked "
            f"{status!r}, but {state}; nothing of its group was written"
        )
    if stored is not None:  # pragma: no cover - a short count the read-back cannot place
        raise StorageError(
            f"batch {bid}: {len(unique) - stored} comparison(s) could not be marked "
            f"{status!r}; nothing of their group was written"
        )


async def stored_statuses(
    conn: AsyncConnection, bid: str, slots: Sequence[int]
) -> dict[tuple[int, int], str]:
    """The status of every stored attempt of ``slots``, by (slot, attempt)."""
    found: dict[tuple[int, int], str] = {}
    for start in range(0, len(slots), _CHUNK):
        chunk = list(slots[start : start + _CHUNK])
        rows = await conn.execute(
            select(_C.slot, _C.attempt, _C.status).where(_C.batch_id == bid, _C.slot.in_(chunk))
        )
        found.update({(int(s), int(a)): str(st) for s, a, st in rows})
    return found


_POSSIBLY_SENT_VALUES: dict[str, Any] = {
    "status": "lost",
    "error_kind": "lost",
    "error_message": "possibly sent when the run stopped",
}


def _possibly_sent_update(*, postgres: bool) -> Any:
    if postgres:
        calls = (
            func.unnest(
                bindparam("a_slot", type_=ARRAY(Integer)),
                bindparam("a_call", type_=ARRAY(Integer)),
            )
            .table_valued("slot", "call_no")
            .render_derived()
        )
        slot, call_no = calls.c.slot, calls.c.call_no
    else:
        slot, call_no = bindparam("k_slot"), bindparam("v_call")
    return (
        update(T_COMPARISONS)
        .where(
            and_(
                _C.batch_id == bindparam("k_batch"),
                _C.slot == slot,
                _C.attempt == 1,
                _C.status == "released",
            )
        )
        .values(call_no=call_no, **_POSSIBLY_SENT_VALUES)
    )


_SQLITE_POSSIBLY_SENT = _possibly_sent_update(postgres=False)
_PG_POSSIBLY_SENT = _possibly_sent_update(postgres=True)


async def write_possibly_sent(
    conn: AsyncConnection, bid: str, calls: Sequence[tuple[int, int]]
) -> None:
    """Released first calls ``calls`` (slot, call number) become ``lost`` calls with
    those numbers.

    Raises:
        StorageError: a comparison is no longer stored as ``released`` (the rows changed
            since resume read them); names the first one.
    """
    if conn.dialect.name == "postgresql":
        done = await conn.execute(
            _PG_POSSIBLY_SENT,
            {"k_batch": bid, "a_slot": [s for s, _ in calls], "a_call": [c for _, c in calls]},
        )
        stored: int | None = int(done.rowcount)
    else:
        done = await conn.execute(
            _SQLITE_POSSIBLY_SENT,
            [{"k_batch": bid, "k_slot": s, "v_call": c} for s, c in calls],
        )
        stored = int(done.rowcount) if conn.dialect.supports_sane_multi_rowcount else None
    if stored == len(calls):
        return
    found = await stored_statuses(conn, bid, sorted({s for s, _ in calls}))
    for slot, _ in sorted(calls):
        now_status = found.get((slot, 1))
        if now_status == "lost":
            continue
        state = "it is not stored" if now_status is None else f"it is stored as {now_status!r}"
        raise StorageError(
            f"batch {bid}: comparison {slot} was read as released on resume, but {state} "
            "now; no call was counted as possibly sent"
        )
    if stored is not None:  # pragma: no cover - a short count the read-back cannot place
        raise StorageError(
            f"batch {bid}: {len(calls) - stored} released comparison(s) changed on resume; "
            "no call was counted as possibly sent"
        )
