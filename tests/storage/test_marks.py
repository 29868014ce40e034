"""Cancels, final failures and resume's "possibly sent" marks never overwrite a paid call,
and a mark that does not find its row fails loudly, on every backend.

SQLite reports the row count of an ``executemany``; asyncpg does not, so PostgreSQL
writes each kind of mark as one ``UPDATE ... FROM unnest(...)``
(:mod:`cj_runner.storage.marks`). Either way a mark whose row is absent or holds a call
or an answer fails its whole group (or, on resume, the whole marking): nothing of it is
written, and the stored answer stays as it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import update

from cj_runner.errors import BatchLockedError, StorageError
from cj_runner.storage import Store, open_store, resolve_db_url
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import AttemptResult, Recorder
from tests.storage.recorder_rows import make_batch
from tests.storage.recorder_rows import planned as _planned
from tests.storage.recorder_rows import sent as _sent

OWNER = "test-host:1:cccc"


def _result(slot: int, status: str, attempt: int = 1) -> AttemptResult:
    return AttemptResult(
        slot=slot,
        attempt=attempt,
        status=status,
        received_at=repo.utcnow(),
        winner="B" if status == "success" else None,
        confidence=3 if status == "success" else None,
        justification="B is better" if status == "success" else None,
        error_kind=None if status == "success" else "timeout",
        error_message=None if status == "success" else "timed out",
        tokens_in=10,
        tokens_out=5,
        latency_s=0.1,
    )


async def _rows(store: Store, batch_id: str) -> dict[tuple[int, int], dict[str, Any]]:
    return {
        (int(r["slot"]), int(r["attempt"])): r for r in await repo.load_attempts(store, batch_id)
    }


async def _one_group(recorder: Recorder, marks: list[tuple[str, int, int]]) -> None:
    """Queue ``marks`` (kind, slot, attempt) so that the writer commits them as one group:
    every task is queued before the writer wakes (no clock involved)."""
    calls = {"cancel": recorder.cancel, "mark_failed": recorder.mark_failed}
    tasks = [asyncio.create_task(calls[kind](slot, attempt)) for kind, slot, attempt in marks]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome


async def _stored(store: Store, batch_id: str, state: str) -> None:
    """Slots 1-3 planned; slot 3 then in ``state`` (absent: never planned)."""
    async with Recorder(store, batch_id, owner=OWNER) as recorder:
        await recorder.plan([_planned(s) for s in (1, 2)] + [_planned(3)] * (state != "absent"))
        await recorder.sent(_sent(2, 1))
        await recorder.result(_result(2, "retried"))  # slot 2: a retry was due
        if state in ("sent", "success"):
            await recorder.sent(_sent(3, 2))
        if state == "success":
            await recorder.result(_result(3, "success"))


@pytest.mark.parametrize("kind", ["cancel", "mark_failed"])
@pytest.mark.parametrize("state", ["absent", "sent", "success"])
async def test_a_mark_over_a_call_or_no_row_fails_its_group(
    db_url: str, kind: str, state: str
) -> None:
    """Slot 1 is planned (its cancel is fine), slot 2's attempt 1 retried (its final
    failure is fine); slot 3 is absent, sent or answered. A group with a mark of slot 3
    writes nothing, names the comparison, and slot 3's call and answer stay as stored."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, OWNER, 3)
        await _stored(store, batch_id, state)
        before = await _rows(store, batch_id)

        status = "failed" if kind == "mark_failed" else "cancelled"
        how = "it is not stored" if state == "absent" else f"it is stored as {state!r}"
        with pytest.raises(StorageError) as raised:
            async with Recorder(store, batch_id, owner=OWNER) as recorder:
                await _one_group(recorder, [("cancel", 1, 1), ("mark_failed", 2, 1), (kind, 3, 1)])
        assert str(raised.value) == (
            f"batch {batch_id}: attempt 1 of comparison 3 was to be marked {status!r}, but "
            f"{how}; nothing of its group was written"
        )
        assert await _rows(store, batch_id) == before  # nothing half-written
        if state == "success":
            row = before[(3, 1)]
            assert (row["status"], row["winner"], row["call_no"]) == ("success", "B", 2)
    finally:
        await store.close()


async def test_marks_over_the_rows_they_expect_are_stored(db_url: str) -> None:
    """A cancel over a planned or released row, a final failure over a retried or lost
    attempt, and a mark repeated (in one group or later) are stored, with
    ``received_at`` set once."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, OWNER, 5)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([_planned(s) for s in range(1, 6)])
            await recorder.release([2])
            await recorder.sent(_sent(3, 1))
            await recorder.result(_result(3, "retried"))
            await recorder.sent(_sent(4, 2))
            await recorder.sent(_sent(5, 3))
            await recorder.result(_result(5, "success"))
        await repo.mark_in_flight_lost(store, batch_id, owner=OWNER)  # slot 4: lost
        marks = [("cancel", 1, 1), ("cancel", 2, 1), ("cancel", 2, 1)]
        marks += [("mark_failed", 3, 1), ("mark_failed", 4, 1)]
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            commits = recorder.commits
            await _one_group(recorder, marks)
            assert recorder.commits == commits + 1
        first = await _rows(store, batch_id)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await _one_group(recorder, marks)  # a repeat changes nothing
        rows = await _rows(store, batch_id)
        assert rows == first
        assert [rows[(s, 1)]["status"] for s in range(1, 6)] == [
            "cancelled", "cancelled", "failed", "failed", "success",
        ]  # fmt: skip
        assert all(rows[(s, 1)]["received_at"] is not None for s in range(1, 5))
        assert rows[(4, 1)]["error_kind"] == "lost"  # still counted as a lost call
    finally:
        await store.close()


async def test_possibly_sent_fails_when_a_released_row_changed(db_url: str) -> None:
    """Resume counts released comparisons as sent and lost: when one of them is no
    longer released (it changed since resume read it), nothing is marked and
    ``calls_sent`` stays; otherwise each gets its call number."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, OWNER, 3)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([_planned(s) for s in (1, 2, 3)])
            await recorder.sent(_sent(1, 1))
            await recorder.release([2, 3])
            await recorder.cancel(3, 1)  # behind the resume's back
        before = await _rows(store, batch_id)
        calls_before = (await repo.find_batch(store, batch_id)).state["calls_sent"]

        with pytest.raises(StorageError) as raised:
            await repo.mark_possibly_sent(store, batch_id, [(2, 2), (3, 3)], owner=OWNER)
        assert str(raised.value) == (
            f"batch {batch_id}: comparison 3 was read as released on resume, but it is "
            "stored as 'cancelled' now; no call was counted as possibly sent"
        )
        assert await _rows(store, batch_id) == before
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == calls_before

        await repo.mark_possibly_sent(store, batch_id, [(2, 2)], owner=OWNER)
        row = (await _rows(store, batch_id))[(2, 1)]
        assert (row["status"], row["call_no"], row["error_kind"]) == ("lost", 2, "lost")
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == 2
    finally:
        await store.close()


async def _released(store: Store) -> str:
    """A batch locked by ``OWNER``: slot 1 sent as call 1, slots 2 and 3 released."""
    batch_id = await make_batch(store, OWNER, 3)
    async with Recorder(store, batch_id, owner=OWNER) as recorder:
        await recorder.plan([_planned(s) for s in (1, 2, 3)])
        await recorder.sent(_sent(1, 1))
        await recorder.release([2, 3])
    return batch_id


async def _set_calls_sent(store: Store, batch_id: str, calls_sent: int) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            update(repo.T_STATE)
            .where(repo.T_STATE.c.batch_id == batch_id)
            .values(calls_sent=calls_sent)
        )


@pytest.mark.parametrize(("stored", "after"), [(1, 3), (3, 3), (9, 9)])
async def test_possibly_sent_never_lowers_calls_sent(db_url: str, stored: int, after: int) -> None:
    """The released comparisons get calls 2 and 3: ``calls_sent`` rises to 3 when it was
    lower and stays when it was as high or higher (it counted calls this marking does not
    see); it is never lowered."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await _released(store)
        await _set_calls_sent(store, batch_id, stored)
        await repo.mark_possibly_sent(store, batch_id, [(2, 2), (3, 3)], owner=OWNER)
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == after
        rows = await _rows(store, batch_id)
        assert [(rows[(s, 1)]["status"], rows[(s, 1)]["call_no"]) for s in (2, 3)] == [
            ("lost", 2),
            ("lost", 3),
        ]
    finally:
        await store.close()


async def test_possibly_sent_and_unrelease_write_only_under_the_lock(db_url: str) -> None:
    """A resume whose lock was taken over changes nothing: neither the "possibly sent"
    marking (call numbers, ``calls_sent``) nor the release undone."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await _released(store)
        before = await _rows(store, batch_id)
        state_before = (await repo.find_batch(store, batch_id)).state["calls_sent"]
        other = "other-host:2:dddd"
        with pytest.raises(BatchLockedError, match="taken over by another process"):
            await repo.mark_possibly_sent(store, batch_id, [(2, 2), (3, 3)], owner=other)
        with pytest.raises(BatchLockedError, match="taken over by another process"):
            await repo.unrelease(store, batch_id, owner=other)
        assert await _rows(store, batch_id) == before
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == state_before
        # the holder of the lock may
        await repo.unrelease(store, batch_id, owner=OWNER)
        rows = await _rows(store, batch_id)
        assert [rows[(s, 1)]["status"] for s in (1, 2, 3)] == ["sent", "planned", "planned"]
    finally:
        await store.close()
