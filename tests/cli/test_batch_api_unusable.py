"""Batch-API mode: the judge turns unusable (its key is refused) while a provider job holds
a wave's calls. Those calls are paid and their answers may still come: they stay ``sent``,
the run stops at once (INTERRUPTED, one line, exit 2, no traceback, nothing else sent),
and ``cj-run resume`` collects the job's answers once the key works again: nothing lost,
nothing paid twice, ``calls_sent`` right. On SQLite and PostgreSQL.

Rendezvous, never timing: the mock holds the job's first status request until the key
has been revoked, and a closed gate keeps the job running until the test opens it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from benchmarks.crash_resume import clean_env
from cj_runner.storage import open_store, resolve_db_url
from tests.cli.helpers import REGULAR24, run, write_profile
from tests.cli.test_batch_api import (
    KEY,
    PATIENCE_S,
    SETTINGS,
    cj_run,
    job_keys,
    judge,
    serve,
)

__all__ = ["serve"]  # the mock server fixture, shared with tests/cli/test_batch_api.py


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in the batch database (either backend)."""

    async def _read() -> list[tuple[Any, ...]]:
        store = await open_store(resolve_db_url(db_url))
        try:
            async with store.engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(sql))).all()]
        finally:
            await store.engine.dispose()

    return asyncio.run(_read())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_key_refused_while_a_job_runs_keeps_its_calls_for_resume(
    db_url: str, tmp_path: Path, serve: Any, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()  # the job keeps running until the gate opens
    profile = write_profile(
        tmp_path / "p.yaml",
        SETTINGS,
        judge(provider, server, batch=True),
    )
    hold = server.batches.hold("poll")
    process = subprocess.Popen(
        [cj_run(), "execute", "-i", str(REGULAR24), "--profile", str(profile), "--db", db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env(), "CJ_TEST_BATCH_KEY": KEY},
    )
    try:
        assert hold.arrived.wait(PATIENCE_S), "the job's first poll never came"
        server.api_key = "sk-another-key"  # the user's key is revoked: every request is 401
        hold.release()  # this poll was let in: the job is running; the next poll is refused
        _out, err = process.communicate(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # the run ends at once, resumable, with one line that says what to do
    assert process.returncode == 2, err
    assert "Traceback" not in err and "StorageError" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "HTTP 401" in line
    assert "12 paid calls in provider jobs that have not ended stay stored as sent" in line
    assert "cj-run resume" in line
    assert query(db_url, "SELECT status FROM batches") == [("INTERRUPTED",)]
    # the job's 12 calls are paid and still coming: not cancelled, not failed, not lost
    assert query(db_url, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [
        ("sent", 12)
    ]
    assert query(db_url, "SELECT state FROM provider_jobs") == [("submitted",)]
    assert query(db_url, "SELECT calls_sent FROM batch_state") == [(12,)]
    assert len(server.batches.created) == 1

    server.api_key = KEY  # the user fixes the key
    server.batches.gate.set()
    (batch_id,) = query(db_url, "SELECT id FROM batches")[0]
    result = run(["resume", batch_id, "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("{")
    summary = json.loads(result.stdout)
    assert summary["status"] == "COMPLETED"
    # every job submitted once; the first job's answers collected, not asked again
    keys = job_keys(server)
    assert len(keys) == len(set(keys)) == 4
    asked = [len(server.batches.jobs[j].requests) for j in server.batches.created]
    assert asked == [12] * 4  # the provider was asked 48 requests in all, none twice
    assert (
        summary["calls_sent"]
        == 48
        == query(db_url, "SELECT COUNT(*) FROM provider_job_requests")[0][0]
    )
    assert query(db_url, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [
        ("success", 48)
    ]
    assert query(db_url, "SELECT COUNT(DISTINCT slot), MAX(attempt) FROM comparisons") == [(48, 1)]
    assert summary["successful_comparisons"] == 48
