"""The store on every backend: SQLite always, PostgreSQL when ``CJ_TEST_POSTGRES_URL`` is
set (``.ci/services.d/postgres.sh start``). Migrations, the group-committing recorder, the
run lock, and whole batches through the CLI give the same results on both."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from cj_runner.errors import BatchLockedError, StorageError
from cj_runner.services.executor import lock_owner_alive
from cj_runner.storage import Store, open_store, resolve_db_url
from cj_runner.storage import engine as engine_mod
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import (
    AttemptResult,
    CacheKey,
    PlannedRow,
    Recorder,
    SentAttempt,
    UnstorableAnswer,
)
from cj_runner.storage.schema import Base
from cj_runner.storage.storable import MAX_JUSTIFICATION_CHARS
from tests.cli.helpers import LOWER5, REGULAR24, execute_json, register_example_anchors
from tests.storage.recorder_rows import sent as _sent

OWNER = "test-host:1:aaaa"


async def _open(db_url: str) -> Store:
    return await open_store(resolve_db_url(db_url))


def _nodes(n: int) -> list[repo.NewNode]:
    return [
        repo.NewNode(essay_id=f"e{i}", is_anchor=False, checksum=f"{i:064d}", text=f"essay {i}")
        for i in range(n)
    ]


async def _batch(store: Store, name: str | None = None, budget: int = 50) -> str:
    return await repo.create_batch(
        store,
        name=name,
        assignment_id=None,
        seed=1,
        settings={},
        judge={"kind": "mock"},
        judge_name="mock",
        inventory="inv",
        plan={},
        total_budget=budget,
        nodes=_nodes(4),
        max_possible_pairs=6,
    )


def _success(slot: int, attempt: int = 1, cache: bool = True) -> AttemptResult:
    return AttemptResult(
        slot=slot,
        attempt=attempt,
        status="success",
        received_at=repo.utcnow(),
        winner="A",
        confidence=3,
        justification="A is better",
        tokens_in=10,
        tokens_out=5,
        latency_s=0.1,
        cache_key=CacheKey(f"key{slot % 2}", "m", "ca", f"cb{slot % 2}", 0) if cache else None,
    )


# ---------------------------------------------------------------- migrations


async def test_migrations_give_the_current_schema(db_url: str) -> None:
    store = await _open(db_url)
    try:
        assert await store.revision() == engine_mod.head_revision()

        def columns(conn: Any) -> dict[str, set[str]]:
            insp = inspect(conn)
            return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}

        async with store.engine.connect() as conn:
            found = await conn.run_sync(columns)
        for table in Base.metadata.sorted_tables:
            assert found[table.name] == {c.name for c in table.columns}, table.name
    finally:
        await store.close()
    # opening again is a no-op at head
    store = await _open(db_url)
    await store.close()


async def test_a_migration_that_dies_halfway_leaves_nothing_behind(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upgrade = engine_mod._upgrade

    def upgrade_then_die(connection: Any, revision: str) -> None:
        real_upgrade(connection, revision)  # every CREATE TABLE ran...
        raise RuntimeError("killed")  # ...then the process died before the commit

    monkeypatch.setattr(engine_mod, "_upgrade", upgrade_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        await _open(db_url)
    monkeypatch.setattr(engine_mod, "_upgrade", real_upgrade)
    store = await _open(db_url)  # would fail with "table ... already exists" otherwise
    try:
        assert await store.revision() == engine_mod.head_revision()
        assert await repo.count_rows(store, "batches") == 0
    finally:
        await store.close()


async def test_processes_opening_a_new_database_together_all_succeed(db_url: str) -> None:
    stores = await asyncio.gather(*(_open(db_url) for _ in range(4)))
    try:
        for store in stores:
            assert await store.revision() == engine_mod.head_revision()
    finally:
        for store in stores:
            await store.close()


# ---------------------------------------------------------------- the recorder


async def test_recorder_stores_every_call_before_and_after(db_url: str) -> None:
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        await repo.acquire_lock(store, batch_id, OWNER)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan(
                [PlannedRow(s, 0, s % 3 + 1, "coverage", 1, 0) for s in (1, 2, 3, 4)]
            )
            # three calls go out together: one group commit
            await asyncio.gather(*(recorder.sent(_sent(s, s)) for s in (1, 2, 3)))
            await recorder.result(_success(1))
            await recorder.result(
                AttemptResult(
                    slot=2,
                    attempt=1,
                    status="retried",
                    received_at=repo.utcnow(),
                    error_kind="timeout",
                    error_message="slow",
                )
            )
            await recorder.sent(_sent(2, 4, 2))
            await recorder.result(_success(2, attempt=2))
            await recorder.cancel(4, 1)  # planned, never sent
            await recorder.flush()
        attempts = await repo.load_attempts(store, batch_id)
        by_key = {(r["slot"], r["attempt"]): r for r in attempts}
        assert by_key[(1, 1)]["status"] == "success" and by_key[(1, 1)]["call_no"] == 1
        assert by_key[(2, 1)]["status"] == "retried" and by_key[(2, 1)]["error_kind"] == "timeout"
        assert by_key[(2, 2)]["status"] == "success" and by_key[(2, 2)]["call_no"] == 4
        assert by_key[(3, 1)]["status"] == "sent" and by_key[(3, 1)]["call_no"] == 3
        assert by_key[(4, 1)]["status"] == "cancelled" and by_key[(4, 1)]["call_no"] is None
        batch = await repo.find_batch(store, batch_id)
        assert batch.state["calls_sent"] == 4
        cache = await repo.cache_entries(store, "m")
        assert set(cache) == {"key1", "key0"}
        assert {entry["batch_id"] for entry in cache.values()} == {batch_id}
        for row in attempts:
            for key in ("sent_at", "received_at"):
                if row[key] is not None:  # SQLite gives naive UTC, PostgreSQL aware
                    assert row[key].utcoffset() in (None, timedelta(0))
    finally:
        await store.close()


async def test_a_call_sent_and_answered_within_one_group_is_one_write(db_url: str) -> None:
    """A fast judge: the ``sent`` rows and the answers reach the writer before its next
    commit (first calls and a retry) and are stored as if committed one by one; a call for
    a comparison never planned still fails its whole group."""

    async def sent_and_answered(
        recorder: Recorder, sent: list[SentAttempt], results: list[AttemptResult]
    ) -> None:
        # the answers' tasks are queued before the writer wakes up (the event loop runs
        # ready callbacks in order), so one group holds all of it: no clock involved
        tasks = [asyncio.create_task(recorder.result(r)) for r in results]
        for attempt in sent:
            recorder.sent_ahead(attempt)
        await asyncio.gather(*tasks)

    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        await repo.acquire_lock(store, batch_id, OWNER)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([PlannedRow(s, 0, s % 3 + 1, "coverage", 1, 0) for s in (1, 2)])
            commits = recorder.commits
            retried = AttemptResult(
                slot=2,
                attempt=1,
                status="retried",
                received_at=repo.utcnow(),
                error_kind="timeout",
                error_message="slow",
            )
            await sent_and_answered(
                recorder,
                [_sent(1, 1), _sent(2, 2), _sent(2, 3, 2)],
                [_success(1), retried, _success(2, attempt=2)],
            )
            assert recorder.commits == commits + 1  # one transaction for all of it
        by_key = {(r["slot"], r["attempt"]): r for r in await repo.load_attempts(store, batch_id)}
        assert set(by_key) == {(1, 1), (2, 1), (2, 2)}
        one, first, second = by_key[(1, 1)], by_key[(2, 1)], by_key[(2, 2)]
        assert (one["status"], one["call_no"], one["winner"], one["model"]) == (
            "success", 1, "A", "m",
        )  # fmt: skip
        assert (first["status"], first["call_no"], first["error_kind"]) == ("retried", 2, "timeout")
        assert (second["status"], second["call_no"], second["mode"]) == ("success", 3, "coverage")
        assert second["sent_at"] is not None and second["received_at"] is not None
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == 3
        assert set(await repo.cache_entries(store, "m")) == {"key1", "key0"}

        with pytest.raises(StorageError, match="comparison 3, which is not stored as planned"):
            async with Recorder(store, batch_id, owner=OWNER) as recorder:
                # slot 3 was never planned
                unplanned = [_success(3, cache=False)]
                await sent_and_answered(recorder, [_sent(3, 4)], unplanned)
        assert len(await repo.load_attempts(store, batch_id)) == 3
        assert (await repo.find_batch(store, batch_id)).state["calls_sent"] == 3
    finally:
        await store.close()


async def test_in_flight_calls_become_lost_and_stay_counted(db_url: str) -> None:
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        async with Recorder(store, batch_id) as recorder:
            await recorder.plan([PlannedRow(s, 0, s % 3 + 1, "coverage", 1, 0) for s in (1, 2)])
            await recorder.sent(_sent(1, 1))
            await recorder.sent(_sent(2, 2))
            await recorder.result(_success(1, cache=False))
        assert await repo.mark_in_flight_lost(store, batch_id) == 1
        assert await repo.mark_in_flight_lost(store, batch_id) == 0
        rows = {r["slot"]: r for r in await repo.load_attempts(store, batch_id)}
        assert rows[2]["status"] == "lost" and rows[2]["call_no"] == 2
        assert rows[1]["status"] == "success"
    finally:
        await store.close()


async def test_a_process_whose_lock_was_taken_over_marks_nothing_lost(db_url: str) -> None:
    """The process that took the lock over has calls in flight (``sent``); the old holder,
    stopping, must neither mark them lost nor re-plan released rows."""
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        await repo.acquire_lock(store, batch_id, "old-host:1:old")
        await repo.acquire_lock(store, batch_id, OWNER, owner_alive=lambda _owner: False)
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([PlannedRow(1, 0, 2, "coverage", 1, 0)])
            await recorder.sent(_sent(1, 1))
        with pytest.raises(BatchLockedError):
            await repo.mark_in_flight_lost(store, batch_id, owner="old-host:1:old")
        with pytest.raises(BatchLockedError):
            await repo.unrelease(store, batch_id, owner="old-host:1:old")
        rows = await repo.load_attempts(store, batch_id)
        assert [r["status"] for r in rows] == ["sent"]
        assert await repo.mark_in_flight_lost(store, batch_id, owner=OWNER) == 1
    finally:
        await store.close()


# ---------------------------------------------------------------- the run lock


async def test_lock_refuses_a_live_holder_and_takes_over_a_dead_or_silent_one(
    db_url: str,
) -> None:
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        await repo.acquire_lock(store, batch_id, "otherhost:1:live")
        with pytest.raises(BatchLockedError, match="another process"):
            await repo.acquire_lock(store, batch_id, OWNER, owner_alive=lock_owner_alive)
        # a silent holder: its heartbeat is older than LOCK_STALE_AFTER
        async with store.engine.begin() as conn:
            old = repo.utcnow() - repo.LOCK_STALE_AFTER - timedelta(seconds=1)
            await conn.execute(
                repo.T_BATCHES.update()
                .where(repo.T_BATCHES.c.id == batch_id)
                .values(lock_heartbeat=old)
            )
        await repo.acquire_lock(store, batch_id, OWNER, owner_alive=lock_owner_alive)
        assert (await repo.lock_holder(store, batch_id))[0] == OWNER
        # the old holder wakes up: it no longer holds the lock and cannot write
        assert not await repo.heartbeat(store, batch_id, "otherhost:1:live")
        async with Recorder(store, batch_id, owner="otherhost:1:live") as stale:
            with pytest.raises(BatchLockedError, match="taken over"):
                await stale.plan([PlannedRow(1, 0, 1, "coverage", 1, 0)])
        assert await repo.count_rows(store, "comparisons") == 0
        await repo.release_lock(store, batch_id, OWNER)
        assert (await repo.lock_holder(store, batch_id))[0] is None
    finally:
        await store.close()


async def test_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(db_url: str) -> None:
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid is free
    dead_owner = f"{socket.gethostname()}:{gone.pid}:dead"
    live_owner = f"{socket.gethostname()}:{os.getpid()}:live"
    assert not lock_owner_alive(dead_owner)
    assert lock_owner_alive(live_owner)
    assert lock_owner_alive(f"elsewhere:{gone.pid}:x")  # another host: only the heartbeat
    if Path("/proc").is_dir():  # killed but not reaped yet: a zombie holds nothing
        zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            zombie.kill()
            deadline = time.monotonic() + 10
            while Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] != "Z":
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert not lock_owner_alive(f"{socket.gethostname()}:{zombie.pid}:z")
        finally:
            zombie.wait()
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        await repo.acquire_lock(store, batch_id, live_owner)
        with pytest.raises(BatchLockedError):
            await repo.acquire_lock(store, batch_id, OWNER, owner_alive=lock_owner_alive)
        await repo.release_lock(store, batch_id, live_owner)
        await repo.acquire_lock(store, batch_id, dead_owner)  # fresh heartbeat, dead pid
        await repo.acquire_lock(store, batch_id, OWNER, owner_alive=lock_owner_alive)
        assert (await repo.lock_holder(store, batch_id))[0] == OWNER
    finally:
        await store.close()


async def test_two_processes_racing_for_a_free_lock_one_wins(db_url: str) -> None:
    first, second = await _open(db_url), await _open(db_url)
    try:
        batch_id = await _batch(first)
        results = await asyncio.gather(
            repo.acquire_lock(first, batch_id, "h:1:one"),
            repo.acquire_lock(second, batch_id, "h:2:two"),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], BatchLockedError), results
    finally:
        await first.close()
        await second.close()


async def test_storage_errors_reach_the_caller_as_storage_error(db_url: str) -> None:
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        async with Recorder(store, batch_id) as recorder:
            await recorder.plan([PlannedRow(1, 0, 1, "coverage", 1, 0)])
            with pytest.raises(StorageError, match="cannot write"):
                await recorder.plan([PlannedRow(1, 0, 1, "coverage", 1, 0)])  # same slot
            await recorder.flush()  # the writer survives a failed group
    finally:
        await store.close()


async def test_one_unstorable_row_never_costs_the_others_of_its_group(db_url: str) -> None:
    """Five answers committed as one group, one of them with a count the database cannot
    hold (the executor refuses such counts first; this is the recorder's last line): the
    other four are stored as they came, the bad one as its call's error."""
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        await repo.acquire_lock(store, batch_id, OWNER)
        slots = [1, 2, 3, 4, 5]
        async with Recorder(store, batch_id, owner=OWNER) as recorder:
            await recorder.plan([PlannedRow(s, 0, s % 3 + 1, "coverage", 1, 0) for s in slots])
            await asyncio.gather(*(recorder.sent(_sent(s, s)) for s in slots))
            results = [_success(s, cache=False) for s in slots]
            results[2] = replace(results[2], tokens_in=10**30, justification="nul \x00 \ud83d")
            outcomes = await asyncio.gather(
                *(recorder.result(r) for r in results), return_exceptions=True
            )
        assert [type(o).__name__ for o in outcomes] == [
            "NoneType", "NoneType", "UnstorableAnswer", "NoneType", "NoneType",
        ]  # fmt: skip
        bad = outcomes[2]
        assert isinstance(bad, UnstorableAnswer) and bad.result.error_kind == "unstorable"
        rows = {r["slot"]: r for r in await repo.load_attempts(store, batch_id)}
        assert [rows[s]["status"] for s in slots] == [
            "success", "success", "failed", "success", "success",
        ]  # fmt: skip
        assert rows[3]["error_kind"] == "unstorable" and rows[3]["tokens_in"] is None
        assert "could not be stored" in rows[3]["error_message"]
    finally:
        await store.close()


async def test_text_is_made_storable_before_it_is_written(db_url: str) -> None:
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        async with Recorder(store, batch_id) as recorder:
            await recorder.plan([PlannedRow(1, 0, 1, "coverage", 1, 0)])
            await recorder.sent(_sent(1, 1))
            await recorder.result(
                replace(_success(1), justification="a\x00b\ud83dc" + "x" * 10_000)
            )
        (row,) = await repo.load_attempts(store, batch_id)
        assert row["justification"].startswith("a\ufffdb\ufffdc")
        assert len(row["justification"]) <= MAX_JUSTIFICATION_CHARS
        assert row["justification"].endswith("more characters cut]")
        cached = await repo.cache_entries(store, "m")
        assert cached and all("\x00" not in v["justification"] for v in cached.values())
    finally:
        await store.close()


# ---------------------------------------------------------------- whole batches


def _successes(db_url: str, batch_id: str) -> list[tuple[Any, ...]]:
    async def fetch() -> list[tuple[Any, ...]]:
        store = await _open(db_url)
        try:
            async with store.engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT a_idx, b_idx, mode, wave, winner FROM comparisons "
                        "WHERE batch_id = :b AND status = 'success' ORDER BY slot"
                    ),
                    {"b": batch_id},
                )
                return [tuple(r) for r in rows]
        finally:
            await store.close()

    return asyncio.run(fetch())


def test_lower5_and_a_regular_batch_with_anchors_run_the_same_on_every_backend(
    db_url: str, tmp_path: Path
) -> None:
    """The workflow test: LOWER5 and the README's regular batch; a PostgreSQL run must
    store exactly what the SQLite run stores for the same seed."""
    reference = tmp_path / "reference.db"  # SQLite
    db: Any = db_url  # the helpers take a path; a URL passes through str() unchanged
    register_example_anchors(db)
    register_example_anchors(reference)
    lower5 = execute_json(db, ["--inventory", str(LOWER5), "--profile", "mock_lower5"])
    assert lower5["status"] == "COMPLETED" and lower5["stop_reason"] == "resampling_cap"
    assert lower5["calls_sent"] == 40 and lower5["max_skew"] == 0.0
    regular_args = [
        "--inventory",
        str(REGULAR24),
        "--assignment-id",
        "phones",
        "--profile",
        "mock_generic_batch",
        "--max-comparisons",
        "150",
    ]
    regular = execute_json(db, regular_args)
    same = execute_json(reference, regular_args)
    assert regular["status"] == "COMPLETED" and regular["anchors"] == 8
    assert regular["grades"]["projected"]
    keep = ("status", "stop_reason", "calls_sent", "successful_comparisons", "waves", "top")
    assert {k: regular[k] for k in keep} == {k: same[k] for k in keep}
    assert _successes(db_url, regular["batch_id"]) == _successes(str(reference), same["batch_id"])
    assert json.dumps(regular["grades"]) == json.dumps(same["grades"])


@pytest.mark.parametrize("in_flight", [True, False])
async def test_group_commits_wait_the_window_only_while_calls_are_in_flight(
    db_url: str, in_flight: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cj_runner.storage.recorder as recorder_module

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, *args: Any) -> Any:
        waits.append(delay)
        return await real_sleep(0)  # no real wait: the test does not race the clock

    monkeypatch.setattr(recorder_module.asyncio, "sleep", recorded)
    store = await _open(db_url)
    try:
        batch_id = await _batch(store)
        window = 3600.0
        async with Recorder(
            store, batch_id, group_window_s=window, gather_while=lambda: in_flight
        ) as recorder:
            await recorder.plan([PlannedRow(s, 0, s % 3 + 1, "coverage", 1, 0) for s in (1, 2)])
            await recorder.sent(_sent(1, 1))
            await recorder.result(_success(1))
            await recorder.flush()
        assert waits, "a commit right after another one waits for the window"
        if in_flight:  # answers are on their way: gather them for up to the window
            assert max(waits) > recorder_module.IDLE_WINDOW_S
            assert max(waits) <= window
        else:  # none is: at most the short idle window
            assert max(waits) <= recorder_module.IDLE_WINDOW_S
        attempts = {(r["slot"], r["attempt"]): r for r in await repo.load_attempts(store, batch_id)}
        assert attempts[(1, 1)]["status"] == "success"
    finally:
        await store.close()
