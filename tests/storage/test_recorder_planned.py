"""A first call is stored only on its wave's planned row, and an answer only on its call's
row, on every backend.

SQLite reports the row count of the recorder's ``executemany`` statements; asyncpg does
not, so on PostgreSQL a group's first calls and answers are each one ``UPDATE ... FROM
unnest(...)`` (:func:`cj_runner.storage.group_writes._store`). Either way a call about to
be sent for a comparison that is absent, or stored in any other state than
``planned``/``released``, or an answer for a call that is not stored, fails its whole
group: nothing of it is written, and no stored answer is overwritten.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cj_runner.errors import StorageError
from cj_runner.storage import Store, open_store, resolve_db_url
from cj_runner.storage import repository as repo
from cj_runner.storage.group_writes import READ_BACK_CHUNK
from cj_runner.storage.recorder import (
    AttemptResult,
    Recorder,
    SentAttempt,
)
from tests.storage.recorder_rows import make_batch
from tests.storage.recorder_rows import planned as _planned
from tests.storage.recorder_rows import sent as _sent

OWNER = "test-host:1:bbbb"


def _success(slot: int, winner: str = "A") -> AttemptResult:
    return AttemptResult(
        slot=slot,
        attempt=1,
        status="success",
        received_at=repo.utcnow(),
        winner=winner,
        confidence=3,
        justification=f"{winner} is better",
        tokens_in=10,
        tokens_out=5,
        latency_s=0.1,
    )


async def _rows(store: Store, batch_id: str) -> dict[int, dict[str, Any]]:
    return {int(r["slot"]): r for r in await repo.load_attempts(store, batch_id)}


async def _one_group(
    recorder: Recorder, sent: list[SentAttempt], results: list[AttemptResult]
) -> None:
    """Queue ``sent`` rows and ``results`` so that the writer commits them as one group:
    the result tasks are queued before the writer wakes (the event loop runs ready
    callbacks in order), no clock involved."""
    tasks = [asyncio.create_task(recorder.result(r)) for r in results]
    for attempt in sent:
        recorder.sent_ahead(attempt)
    await asyncio.gather(*tasks, return_exceptions=True)  # the flush raises the failure
    await recorder.flush()


@pytest.mark.parametrize("answered", [False, True], ids=["sent", "sent-and-answered"])
@pytest.mark.parametrize("state", ["absent", "cancelled", "success"])
async def test_a_first_call_for_a_row_not_planned_fails_its_group(
    db_url: str, state: str, answered: bool
) -> None:
    """Slot 1 is planned and fine; slot 2 is absent, cancelled or already answered. A
    group holding both calls (with their answers or without) writes nothing, names the
    comparison in the error the user sees, and leaves slot 2's stored answer as it was."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, OWNER, 2)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([_planned(1)] + ([_planned(2)] if state != "absent" else []))
            if state == "cancelled":
                await recorder.cancel(2, 1)
            elif state == "success":
                await recorder.sent(_sent(2, 1))
                await recorder.result(_success(2, winner="B"))
        before = await _rows(store, batch_id)
        calls_before = (await repo.find_batch(store, batch_id)).state["calls_sent"]

        stored = "absent" if state == "absent" else f"stored as '{state}'"
        expected = (
            f"batch {batch_id}: call 3 was about to be sent for comparison 2, which is not "
            f"stored as planned ({stored}); nothing of its group was written"
        )
        with pytest.raises(StorageError) as raised:
            async with Recorder(store, batch_id, owner=OWNER) as recorder:
                results = [_success(1), _success(2)] if answered else []
                await _one_group(recorder, [_sent(1, 2), _sent(2, 3)], results)
        assert str(raised.value) == expected

        assert await _rows(store, batch_id) == before  # nothing half-written
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == calls_before
        if state == "success":
            assert (before[2]["status"], before[2]["winner"], before[2]["call_no"]) == (
                "success", "B", 1,
            )  # fmt: skip
    finally:
        await store.close()


async def test_released_rows_and_groups_larger_than_one_read_back_are_stored(
    db_url: str,
) -> None:
    """The check passes for every planned and released row of a group larger than one
    read-back chunk (PostgreSQL reads a group back in chunks), and names the one row of
    such a group that is not planned, in its last chunk."""
    n = READ_BACK_CHUNK + 7
    last = 2 * n + 1
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, OWNER, last)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([_planned(s) for s in range(1, last + 1)])
            await recorder.release(list(range(1, last + 1, 2)))
            await recorder.cancel(last, 1)
            await _one_group(recorder, [_sent(s, s) for s in range(1, n + 1)], [])
        rows = await _rows(store, batch_id)
        assert all(rows[s]["status"] == "sent" and rows[s]["call_no"] == s for s in range(1, n + 1))
        assert {rows[s]["status"] for s in range(n + 1, last)} == {"planned", "released"}
        assert rows[last]["status"] == "cancelled"
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == n

        with pytest.raises(StorageError, match=f"comparison {last}, which is not stored as"):
            async with Recorder(store, batch_id, owner=OWNER) as recorder:
                await _one_group(recorder, [_sent(s, s) for s in range(n + 1, last + 1)], [])
        assert await _rows(store, batch_id) == rows
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == n
    finally:
        await store.close()


async def test_an_answer_without_its_call_fails_its_group(db_url: str) -> None:
    """An answer for a call that is not stored (a comparison never planned) in the same
    group as a good one: nothing of the group is written and the error names it. Two
    answers of one call in one group: the later one is stored, on every backend."""
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, OWNER, 2)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([_planned(1), _planned(2)])
            await recorder.sent(_sent(1, 1))
            await recorder.sent(_sent(2, 2))
        before = await _rows(store, batch_id)

        with pytest.raises(StorageError) as raised:
            async with Recorder(store, batch_id, owner=OWNER) as recorder:
                # queued before the writer wakes: one group (no clock involved)
                tasks = [asyncio.create_task(recorder.result(_success(s))) for s in (1, 9)]
                await asyncio.gather(*tasks)
        assert str(raised.value) == (
            f"batch {batch_id}: an answer (success) came for attempt 1 of comparison 9, "
            "which is not stored; nothing of its group was written"
        )
        assert await _rows(store, batch_id) == before

        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            commits = recorder.commits
            tasks = [
                asyncio.create_task(recorder.result(_success(s, winner=w)))
                for s, w in ((1, "A"), (2, "A"), (1, "B"))
            ]
            await asyncio.gather(*tasks)
            assert recorder.commits == commits + 1
        rows = await _rows(store, batch_id)
        assert [(rows[s]["status"], rows[s]["winner"]) for s in (1, 2)] == [
            ("success", "B"),
            ("success", "A"),
        ]
    finally:
        await store.close()
