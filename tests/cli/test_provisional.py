"""Provisional results and `cj-run finalize` (issue 13 item 9), and scoring errors that
must not leave a batch RUNNING (item 8).

The interruption is an explicit rendezvous: a judge that holds its calls after the first
``HOLD_AFTER`` until the test has pressed "Ctrl-C" (the executor's stop event)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from cj_runner.core.bt import MLENotFoundError
from cj_runner.judges.base import Judge, JudgeRequest, Verdict
from cj_runner.judges.registry import build_judge
from cj_runner.services.batches import (
    RunRequest,
    batch_context,
    create_batch,
    plan_summary,
    prepare,
    stored_executor,
    stored_judge_config,
)
from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage import repository as repo
from tests.cli.helpers import (
    REGULAR24,
    query,
    register_example_anchors,
    report,
    run,
    write_profile,
)

HOLD_AFTER = 100
SETTINGS = {
    "MAX_PAIRWISE_COMPARISONS": 200,
    "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 12,
    "MAX_CONCURRENT_REQUESTS": 3,
    "SEED": 9,
}
JUDGE = {"kind": "mock", "seed": 9, "noise": 1.0}


class HoldingJudge:
    """The batch's judge; calls after the first ``hold_after`` wait for ``release``."""

    def __init__(self, inner: Judge, hold_after: int) -> None:
        self.inner = inner
        self.hold_after = hold_after
        self.calls = 0
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.name, self.model, self.prompt_hash = inner.name, inner.model, inner.prompt_hash
        self.price_input_per_mtok = inner.price_input_per_mtok
        self.price_output_per_mtok = inner.price_output_per_mtok

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        if self.calls > self.hold_after:
            self.reached.set()
            await self.release.wait()
        return await self.inner.judge(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _new_batch(db: Path, profile: Path, name: str) -> str:
    store = await open_store(resolve_db_url(str(db)))
    try:
        request = RunRequest(
            inventory=REGULAR24, assignment_id="phones", profile=str(profile), batch_name=name
        )
        prepared = await prepare(store, request)
        return await create_batch(store, prepared, plan_summary(prepared))
    finally:
        await store.close()


async def _interrupted_batch(db: Path, profile: Path, name: str) -> str:
    """A batch stopped by its stop event while calls were held (the rendezvous)."""
    batch_id = await _new_batch(db, profile, name)
    store = await open_store(resolve_db_url(str(db)))
    try:
        context = await batch_context(store, batch_id)
        judge = HoldingJudge(build_judge(stored_judge_config(context["batch"])), HOLD_AFTER)
        stop = asyncio.Event()
        executor = stored_executor(store, context, judge, stop_event=stop)
        running = asyncio.create_task(executor.run())
        await judge.reached.wait()  # calls are held: the batch is mid-wave
        stop.set()  # Ctrl-C
        judge.release.set()
        result = await running
        assert result.status == "INTERRUPTED"
        await judge.aclose()
        return batch_id
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cj.db"
    register_example_anchors(path)
    return path


def report_json(db: Path, *args: str) -> dict[str, Any]:
    result = report([*args, "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_an_interrupted_batch_has_provisional_scores_and_finalize_ends_it(
    db: Path, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, JUDGE)
    batch_id = asyncio.run(_interrupted_batch(db, profile, "stopped"))

    ranking = report_json(db, "ranking", "stopped")
    assert ranking["status"] == "INTERRUPTED" and ranking["provisional"] is True
    assert all(row["score"] is not None and row["se"] is not None for row in ranking["rows"])
    assert ranking["ssr"] is not None and ranking["judge_health"]["status"] == "ok"
    table = report(["ranking", "stopped", "--db", str(db)])
    assert table.exit_code == 0 and "provisional" in table.stdout
    assert "the batch did not finish" in " ".join(table.stdout.split())
    csv_text = report(["ranking", "stopped", "--db", str(db), "--format", "csv"]).stdout
    assert csv_text.splitlines()[1].split(",")[-2] == "True"  # the provisional column
    grades = report_json(db, "grades", "stopped")
    assert grades["provisional"] is True and grades["projected"] is True, grades["deferred_reason"]
    summary = report_json(db, "summary", "stopped")
    assert summary["provisional"] is True and summary["top"]
    planned = query(db, "SELECT COUNT(*) FROM comparisons WHERE status = 'planned'")
    assert planned[0][0] > 0  # the rest of the wave waits for a resume

    done = run(["finalize", "stopped", "--db", str(db), "--json"])
    assert done.exit_code == 0, done.output
    final = json.loads(done.stdout)
    assert (final["status"], final["stop_reason"]) == ("COMPLETED", "finalized_early")
    assert final["provisional"] is False and final["grades"]["projected"] is True
    assert final["calls_sent"] == final["successful_comparisons"] > HOLD_AFTER
    statuses = dict(query(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status"))
    assert "planned" not in statuses and statuses["cancelled"] > 0
    assert report_json(db, "ranking", "stopped")["provisional"] is False

    again = run(["finalize", batch_id, "--db", str(db)])
    assert again.exit_code == 2
    assert again.stderr.strip() == (
        f"error: batch {batch_id} already finished (COMPLETED, finalized_early); "
        "nothing to finalize"
    )


def test_finalize_refuses_a_batch_another_live_process_runs(db: Path, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, JUDGE)
    batch_id = asyncio.run(_new_batch(db, profile, "running"))
    owner = f"{socket.gethostname()}:{os.getpid()}:other"

    async def lock() -> None:
        store = await open_store(resolve_db_url(str(db)))
        try:
            await repo.acquire_lock(store, batch_id, owner)
            await repo.set_status(store, batch_id, "RUNNING", owner=owner)
        finally:
            await store.close()

    asyncio.run(lock())
    result = run(["finalize", "running", "--db", str(db)])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert "being run by another process" in message
    assert query(db, "SELECT status FROM batches WHERE id = ?", (batch_id,)) == [("RUNNING",)]


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise MLENotFoundError("node 3 won every comparison")


@pytest.mark.parametrize("where", ["wave_end", "finalize"])
def test_a_scoring_error_ends_the_batch_failed_with_the_reason(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "wave_end":
        monkeypatch.setattr("cj_runner.core.workflow.WorkflowState.end_wave", _boom)
    else:
        monkeypatch.setattr("cj_runner.services.finalize.final_fit", _boom)
    profile = write_profile(
        tmp_path / "p.yaml", {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 24}, JUDGE
    )
    result = run(
        ["execute", "-i", str(REGULAR24), "--assignment-id", "phones", "--profile",
         str(profile), "--db", str(db), "-q"]
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("error: batch ") and "\n" not in message
    assert "MLENotFoundError: node 3 won every comparison" in message
    assert "marked FAILED" in message and "Traceback" not in result.output
    ((status, reason, lock),) = query(db, "SELECT status, stop_reason, lock_owner FROM batches")
    assert (status, reason, lock) == ("FAILED", "scoring_error", None)
    summary = report_json(db, "summary", query(db, "SELECT id FROM batches")[0][0])
    assert "MLENotFoundError" in summary["error"]


def test_final_scoring_runs_off_the_event_loop_while_the_heartbeat_beats(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendezvous: the final scoring waits, from inside, until the event loop has renewed
    the batch's lock heartbeat. Scoring on the loop's own thread would never see it (the
    wait then fails after its guard timeout instead of hanging)."""
    import threading

    from cj_runner.services import finalize

    profile = write_profile(
        tmp_path / "p.yaml", {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 36}, JUDGE
    )
    seen: dict[str, Any] = {}
    real = finalize.final_posterior

    async def scenario() -> None:
        batch_id = await _new_batch(db, profile, "threaded")
        store = await open_store(resolve_db_url(str(db)))
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        try:
            context = await batch_context(store, batch_id)
            judge = build_judge(stored_judge_config(context["batch"]))
            executor = stored_executor(store, context, judge)

            def scoring(*args: Any, **kwargs: Any) -> Any:
                seen["off_loop"] = threading.get_ident() != loop_thread
                beat = asyncio.run_coroutine_threadsafe(
                    repo.heartbeat(store, batch_id, executor.owner), loop
                )
                seen["heartbeat"] = beat.result(timeout=120)
                return real(*args, **kwargs)

            monkeypatch.setattr(finalize, "final_posterior", scoring)
            result = await executor.run()
            assert result.status == "COMPLETED"
            await judge.aclose()
        finally:
            await store.close()

    asyncio.run(scenario())
    assert seen == {"off_loop": True, "heartbeat": True}
    ranking = report_json(db, "ranking", "threaded")
    assert all(row["score"] is not None for row in ranking["rows"])
