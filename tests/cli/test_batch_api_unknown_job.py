"""Batch-API mode: a provider may answer 404 about a job it has just created (reported for
Anthropic's Message Batches: ``retrieve`` and ``results`` answer ``not_found_error`` for a
short while). A 404 at a stored job's status or results endpoint is asked again a few
times, waiting longer each time, before the run stops (INTERRUPTED, resumable) with an
error that names the unknown job, not a model.

The executor runs in the test's event loop with an injected ``sleep`` that records the
waits and returns at once: no real waiting. The mock's batch desk answers over HTTP in
each provider's own words; the refusals start once the first job's first poll is held
(a rendezvous, never timing).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cj_runner.judges.registry import build_batch_api, build_judge
from cj_runner.services.batch_jobs import FIRST_POLL_S, UNKNOWN_JOB_ATTEMPTS, poll_wait
from cj_runner.services.batches import (
    stored_judge_config,
)
from cj_runner.services.executor import RunResult
from cj_runner.storage import open_store, resolve_db_url
from tests.cli.helpers import query, run, write_profile
from tests.cli.test_batch_api import KEY, PATIENCE_S, SETTINGS, judge, serve
from tests.services.executor_setup import executor_for, new_batch

__all__ = ["serve"]  # the mock server fixture, shared with tests/cli/test_batch_api.py


async def run_refused(
    tmp_path: Path, provider: str, server: Any, refusals: int
) -> tuple[RunResult, list[float]]:
    """Run a batch-mode batch in process; once its first job's first poll is held, the
    desk answers the next ``refusals`` batch requests 404 (unknown job). Returns the
    result and the waits the job runner asked for. A closed gate (the job still running)
    opens once ``refusals`` waits were asked for: the 404s then meet its status polls."""
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, judge(provider, server, batch=True))
    store = await open_store(resolve_db_url(str(tmp_path / "cj.db")))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == refusals:
            server.batches.gate.set()

    try:
        batch = await new_batch(store, profile)
        config = stored_judge_config(batch)
        the_judge = build_judge(config)
        api = build_batch_api(the_judge)
        assert api is not None
        executor = await executor_for(
            store, batch, the_judge, sleep=sleep, batch_api=api, batch_poll_s=config.batch_poll_s
        )
        hold = server.batches.hold("poll")
        task = asyncio.create_task(executor.run())
        try:
            assert await asyncio.to_thread(hold.arrived.wait, PATIENCE_S), "no first poll"
            server.batches.refuse("not_found", times=refusals)
        finally:
            hold.release()  # this poll is let in; what follows is refused
        try:
            result = await task
        finally:
            await api.aclose()
            await the_judge.aclose()
    finally:
        await store.close()
    return result, waits


@pytest.mark.parametrize("endpoint", ["status", "results"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_404_soon_after_creation_is_asked_again_and_the_run_completes(
    tmp_path: Path, serve: Any, provider: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    if endpoint == "status":
        server.batches.gate.clear()  # the job runs: the 404s answer its polls
    result, waits = await run_refused(tmp_path, provider, server, refusals=2)
    assert result.status == "COMPLETED", result.unreachable
    assert result.unreachable is None and result.outstanding == 0
    assert waits == [2.0, 4.0]  # two 404s: asked again after 2 s, then 4 s (not slept)
    assert len(server.batches.refusals) == 0  # both refusals were met
    # nothing paid twice: four jobs of 12 requests, each submitted once, 48 answers
    assert [len(server.batches.jobs[j].requests) for j in server.batches.created] == [12] * 4
    db = tmp_path / "cj.db"
    assert query(db, "SELECT calls_sent FROM batch_state") == [(48,)]
    assert query(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [
        ("success", 48)
    ]
    assert query(db, "SELECT COUNT(DISTINCT slot), MAX(attempt) FROM comparisons") == [(48, 1)]


@pytest.mark.parametrize("endpoint", ["status", "results"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_404s_beyond_the_bound_stop_the_run_resumable_naming_the_unknown_job(
    tmp_path: Path, serve: Any, provider: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    if endpoint == "status":
        server.batches.gate.clear()  # the job runs: the 404s answer its polls
    result, waits = await run_refused(tmp_path, provider, server, refusals=UNKNOWN_JOB_ATTEMPTS)
    assert result.status == "INTERRUPTED"
    assert waits == [2.0, 4.0, 8.0, 16.0]  # asked 5 times in all, then the run stops
    (job_id,) = server.batches.created
    assert result.unreachable is not None
    assert f"HTTP 404: the provider does not know batch job {job_id}" in result.unreachable
    assert f"({UNKNOWN_JOB_ATTEMPTS} times)" in result.unreachable
    assert "model" not in result.unreachable
    polling = "polling" in result.unreachable
    assert polling == (endpoint == "status"), result.unreachable
    assert result.outstanding == 0  # not an unusable judge: the account is fine
    assert result.unknown_job == 12  # the job's calls, kept as sent (the stop line says so)
    db = tmp_path / "cj.db"
    # the job's 12 paid calls are kept (sent), nothing else was sent
    assert query(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [("sent", 12)]
    assert query(db, "SELECT calls_sent FROM batch_state") == [(12,)]
    (batch_id,) = query(db, "SELECT id FROM batches")[0]
    server.batches.gate.set()  # the job may end now
    resumed = await asyncio.to_thread(run, ["resume", batch_id, "--db", str(db), "--json"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "COMPLETED" and summary["calls_sent"] == 48
    assert [len(server.batches.jobs[j].requests) for j in server.batches.created] == [12] * 4


@given(
    poll_s=st.floats(min_value=0.0, max_value=86400.0, allow_nan=False),
    polls=st.integers(min_value=0, max_value=10**7),
)
def test_the_poll_wait_doubles_to_poll_s_and_never_overflows(poll_s: float, polls: int) -> None:
    """A job polled for a day at 30 s is polled ~2,900 times: the wait stays ``poll_s``
    (``2.0 ** polls`` overflowed after 1,023 polls and stopped the run)."""
    wait = poll_wait(poll_s, polls)
    assert 0.0 <= wait <= poll_s
    assert wait <= poll_wait(poll_s, polls + 1)  # never shorter than the wait before
    assert wait == min(poll_s, FIRST_POLL_S) or wait >= FIRST_POLL_S
    if polls >= 20:
        assert wait == poll_s  # 0.5 s doubled 20 times is over 6 days


def test_a_job_polled_over_a_thousand_times_waits_poll_s() -> None:
    assert [poll_wait(30.0, n) for n in (0, 1, 2, 6, 7, 1024, 2880)] == [
        0.5,
        1.0,
        2.0,
        30.0,
        30.0,
        30.0,
        30.0,
    ]
