"""A comparison that is no longer planned when its first call is about to be stored stops
the run with the recorder's error, on every backend; the row is left as it was.

(First calls released ahead go out before their ``sent`` rows commit: the calls that were
already on their way when the group was refused reached the judge but are not stored.
The release mark that lets them go is not checked; docs/decisions.md.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cj_runner.errors import StorageError
from cj_runner.judges.base import Judge, JudgeRequest, Verdict
from cj_runner.judges.registry import build_judge
from cj_runner.services.batches import (
    stored_judge_config,
)
from cj_runner.storage import Store, open_store, resolve_db_url
from cj_runner.storage import repository as repo
from tests.cli.helpers import write_profile
from tests.services.executor_setup import executor_for, new_batch

JUDGE: dict[str, Any] = {"kind": "mock", "seed": 5, "latency": {"distribution": "zero"}}


class TamperingJudge:
    """The mock judge; before answering its first call it marks every comparison still
    ``planned`` as ``cancelled`` behind the executor's back (another process, a bug)."""

    def __init__(self, inner: Judge, store: Store, batch_id: str) -> None:
        self.inner, self.store, self.batch_id = inner, store, batch_id
        self.name, self.model, self.prompt_hash = inner.name, inner.model, inner.prompt_hash
        self.price_input_per_mtok = inner.price_input_per_mtok
        self.price_output_per_mtok = inner.price_output_per_mtok
        self.calls = 0

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        if self.calls == 1:
            c = repo.T_COMPARISONS.c
            async with self.store.engine.begin() as conn:
                await conn.execute(
                    update(repo.T_COMPARISONS)
                    .where(c.batch_id == self.batch_id, c.status == "planned")
                    .values(status="cancelled")
                )
        return await self.inner.judge(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_first_call_for_a_row_no_longer_planned_stops_the_run(
    db_url: str, tmp_path: Path
) -> None:
    settings = {"MAX_CONCURRENT_REQUESTS": 2, "MAX_PAIRWISE_COMPARISONS": 60, "SEED": 3}
    profile = write_profile(tmp_path / "p.yaml", settings | {"USE_ANCHORS": False}, JUDGE)
    store = await open_store(resolve_db_url(db_url))
    try:
        batch = await new_batch(store, profile)
        batch_id = batch.id
        judge = TamperingJudge(build_judge(stored_judge_config(batch)), store, batch_id)
        runner = await executor_for(store, batch, judge, use_cache=False)
        try:
            with pytest.raises(StorageError, match="which is not stored as planned") as raised:
                await runner.run()
        finally:
            await judge.aclose()
        assert str(raised.value).startswith(f"batch {batch_id}: call ")
        assert "(stored as 'cancelled'); nothing of its group was written" in str(raised.value)
        rows = await repo.load_attempts(store, batch_id)
        # the comparisons cancelled behind the run's back are as they were left
        cancelled = [r for r in rows if r["status"] == "cancelled"]
        assert cancelled and all(r["call_no"] is None for r in cancelled)
        assert all(r["winner"] is None and r["sent_at"] is None for r in cancelled)
        # the calls stored are 1..calls_sent, each with its row
        calls = sorted(r["call_no"] for r in rows if r["call_no"] is not None)
        sent = (await repo.find_batch(store, batch_id)).state["calls_sent"]
        assert calls == list(range(1, sent + 1))
        assert all(r["winner"] is not None for r in rows if r["status"] == "success")
    finally:
        await store.close()
