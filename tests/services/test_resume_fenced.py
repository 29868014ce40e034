"""Resume's rebuild writes only while its process holds the batch's lock: when another
process has taken the lock over since, the rebuild changes nothing (the calls in flight
stay ``sent``, the released comparisons stay ``released``, ``calls_sent`` stays), on every
backend. Before, the "lost in flight", "possibly sent" and "planned again" marks were not
fenced, so a resume that had lost its lock could mark the new holder's calls."""

from __future__ import annotations

import pytest

from cj_runner.config import settings_from_stored
from cj_runner.errors import BatchLockedError
from cj_runner.judges.registry import build_judge
from cj_runner.services.batches import stored_judge_config
from cj_runner.services.executor import BatchExecutor
from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import Recorder
from tests.storage.recorder_rows import make_batch, planned, sent

HOLDER = "other-host:7:eeee"


@pytest.mark.parametrize("status", ["RUNNING", "INTERRUPTED"], ids=["crashed", "stopped"])
async def test_a_rebuild_without_the_lock_changes_nothing(db_url: str, status: str) -> None:
    store = await open_store(resolve_db_url(db_url))
    try:
        batch_id = await make_batch(store, HOLDER, 3)  # the lock is HOLDER's
        async with Recorder(store, batch_id, owner=HOLDER) as recorder:
            await recorder.plan([planned(s) for s in (1, 2, 3)])
            await recorder.sent(sent(1, 1))  # in flight at HOLDER
            await recorder.release([2, 3])  # about to be sent by HOLDER
        await repo.set_status(store, batch_id, status, owner=HOLDER)
        before = await repo.load_attempts(store, batch_id)
        batch = await repo.find_batch(store, batch_id)
        judge = build_judge(stored_judge_config(batch))
        runner = BatchExecutor(
            store,
            batch,
            await repo.load_nodes(store, batch_id),
            judge,
            settings_from_stored(batch.settings),
            use_cache=False,
        )
        try:
            with pytest.raises(BatchLockedError, match="taken over by another process"):
                await runner._rebuild()  # as run() does once it holds the lock
        finally:
            await judge.aclose()
        assert await repo.load_attempts(store, batch_id) == before
        assert [r["status"] for r in before] == ["sent", "released", "released"]
        after = await repo.find_batch(store, batch_id)
        assert after.state["calls_sent"] == batch.state["calls_sent"]
    finally:
        await store.close()
