"""Batch-API mode: the judge turns unusable (its key, credit or permission is refused)
while a provider job holds a wave's calls. Those calls are paid and their answers may
still come: they stay ``sent``, the run stops at once (INTERRUPTED, one line, exit 2, no
traceback, nothing else sent), and ``cj-run resume`` collects the job's answers once the
account works again: nothing lost, nothing paid twice, ``calls_sent`` right. On SQLite
and PostgreSQL.

Rendezvous, never timing: the mock holds the job's first status request until the
refusal is in place, and a closed gate keeps the job running until the test opens it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from benchmarks.crash_resume import clean_env
from cj_runner.services.batch_jobs import UNKNOWN_JOB_ATTEMPTS
from cj_runner.storage import open_store, resolve_db_url
from tests.cli.helpers import REGULAR24, report, run, write_profile
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


def interrupted_run(
    db_url: str, profile: Path, server: Any, refuse: Any, args: list[str] | None = None
) -> str:
    """Start ``cj-run execute`` (or ``cj-run ARGS``); once its job runs (its first poll
    held), ``refuse()`` makes the batch endpoints refuse what follows; returns the run's
    error line after checking that it stopped at once, exit 2, without a traceback."""
    hold = server.batches.hold("poll")
    command = args or ["execute", "-i", str(REGULAR24), "--profile", str(profile)]
    process = subprocess.Popen(
        [cj_run(), *command, "--db", db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env(), "CJ_TEST_BATCH_KEY": KEY},
    )
    try:
        assert hold.arrived.wait(PATIENCE_S), "the job's first poll never came"
        refuse()
        hold.release()  # this poll was let in: the job is running; the next one is refused
        _out, err = process.communicate(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, err
    assert "Traceback" not in err and "StorageError" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return line


def check_stopped_with_the_job_due(db_url: str, server: Any) -> None:
    """The run stopped resumable; the job's 12 calls are paid and still coming: not
    cancelled, not failed, not lost."""
    assert query(db_url, "SELECT status FROM batches") == [("INTERRUPTED",)]
    assert query(db_url, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [
        ("sent", 12)
    ]
    assert query(db_url, "SELECT state FROM provider_jobs") == [("submitted",)]
    assert query(db_url, "SELECT calls_sent FROM batch_state") == [(12,)]
    assert len(server.batches.created) == 1


def resume_collects_the_job(db_url: str, server: Any) -> None:
    """``cj-run resume`` collects the job's answers and finishes: every job submitted once,
    48 calls for 48 answers, nothing asked twice."""
    server.batches.gate.set()
    (batch_id,) = query(db_url, "SELECT id FROM batches")[0]
    result = run(["resume", batch_id, "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "COMPLETED"
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


@pytest.mark.parametrize(
    ("provider", "cause", "status"),
    [
        ("openai", "revoked", 401),
        ("anthropic", "revoked", 401),
        ("openai", "quota", 429),
        ("anthropic", "permission", 403),
    ],
    ids=["openai-key-revoked", "anthropic-key-revoked", "openai-no-credit", "anthropic-forbidden"],
)
def test_judge_unusable_while_a_job_runs_keeps_its_calls_for_resume(
    db_url: str,
    tmp_path: Path,
    serve: Any,
    provider: str,
    cause: str,
    status: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()  # the job keeps running until the gate opens
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, judge(provider, server, batch=True))

    def refuse() -> None:
        if cause == "revoked":
            server.api_key = "sk-another-key"  # every request is 401 from now on
        else:
            server.batches.refuse(cause, times=100)  # until the user sorts it out

    line = interrupted_run(db_url, profile, server, refuse)
    assert f"HTTP {status}" in line
    assert "12 paid calls in provider jobs that have not ended stay stored as sent" in line
    assert "cj-run resume" in line
    check_stopped_with_the_job_due(db_url, server)

    server.api_key = KEY  # the user fixes the key, buys credit
    server.batches.refusals.clear()
    resume_collects_the_job(db_url, server)


def test_an_unknown_job_at_a_poll_stops_the_run_but_is_not_an_unusable_judge(
    db_url: str, tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 404 at the status endpoint that lasts (the provider does not know the job: asked
    UNKNOWN_JOB_ATTEMPTS times) stops the run resumable, the job's calls kept, with one
    line naming the unknown job and what to do (the key's project or workspace, a job
    deleted or past retention; resume asks again, nothing is paid twice): the exact line.
    (No backoff waits: RETRY_MAX_DELAY_S is 0; tests/cli/test_batch_api_unknown_job.py
    checks them.)"""
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()
    settings = {**SETTINGS, "RETRY_BASE_DELAY_S": 0.0, "RETRY_MAX_DELAY_S": 0.0}
    profile = write_profile(tmp_path / "p.yaml", settings, judge("anthropic", server, batch=True))
    line = interrupted_run(
        db_url,
        profile,
        server,
        lambda: server.batches.refuse("not_found", times=UNKNOWN_JOB_ATTEMPTS),
    )
    (job_id,) = server.batches.created
    (batch_id,) = query(db_url, "SELECT id FROM batches")[0]
    assert line == (
        f"error: job 1: polling: judge anthropic: polling the batch: HTTP 404: the provider "
        f"does not know batch job {job_id} (Not found.) "
        f"({UNKNOWN_JOB_ATTEMPTS} times); the batch stopped at once (INTERRUPTED, nothing "
        "else sent): the key in use may belong to another project, workspace or organisation "
        "than the key the batch was started with, or the job was deleted or is past the "
        "provider's retention; its 12 calls stay stored as sent and are not paid again: set "
        f"the key the batch was started with, then cj-run resume {batch_id} asks for the job "
        f"again (if the job is gone, cj-run finalize {batch_id} ends the batch with what it "
        "has)"
    )
    assert not server.batches.refusals  # every refusal was met: asked again each time
    check_stopped_with_the_job_due(db_url, server)
    resume_collects_the_job(db_url, server)


def test_a_job_the_provider_never_knows_again_is_ended_by_finalize(
    db_url: str, tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop line's way out when the job is gone for good (deleted, past retention):
    ``cj-run resume`` meets the same 404s and stops with the same advice; ``cj-run
    finalize`` ends the batch with what it has. The job's calls were sent and may have
    been paid: they end ``lost`` (answer never received, the job named), still counted as
    sent; every cost shown says their cost is unknown (a lower bound, not a bare 0.0); a
    resume after finalize sends nothing. On SQLite and PostgreSQL."""
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()
    settings = {**SETTINGS, "RETRY_BASE_DELAY_S": 0.0, "RETRY_MAX_DELAY_S": 0.0}
    profile = write_profile(tmp_path / "p.yaml", settings, judge("openai", server, batch=True))
    line = interrupted_run(
        db_url, profile, server, lambda: server.batches.refuse("not_found", times=1000)
    )
    (batch_id,) = query(db_url, "SELECT id FROM batches")[0]
    assert f"cj-run finalize {batch_id} ends the batch with what it has" in line
    again = run(["resume", batch_id, "--db", db_url])
    assert again.exit_code == 2, again.output
    assert f"then cj-run resume {batch_id} asks for the job again" in again.stderr
    check_stopped_with_the_job_due(db_url, server)
    ended = run(["finalize", batch_id, "--db", db_url, "--json"])
    assert ended.exit_code == 0, ended.output
    check_finalized_with_the_job_lost(db_url, server, batch_id, json.loads(ended.stdout))


def flat(text: str) -> str:
    """A rich table's text with its frame gone and wrapped cells joined."""
    return " ".join(text.replace("│", " ").split())


def check_finalized_with_the_job_lost(
    db_url: str, server: Any, batch_id: str, summary: dict[str, Any]
) -> None:
    """After ``cj-run finalize`` of a batch whose only job (12 calls, no answer) the
    provider no longer knows: the honest record, the cost shown, nothing sent again."""
    (job_id,) = server.batches.created
    assert (summary["status"], summary["stop_reason"]) == ("COMPLETED", "finalized_early")
    # the job's calls were paid for: still counted; no answer, so no score is shown
    assert (summary["calls_sent"], summary["successful_comparisons"]) == (12, 0)
    assert summary["tau"] is None and summary["ssr"] is None
    # a terminal state that says the answer never came, naming the job
    assert query(
        db_url,
        "SELECT status, error_kind, error_message, COUNT(*) FROM comparisons "
        "GROUP BY status, error_kind, error_message",
    ) == [
        (
            "lost",
            "lost",
            f"in provider job 1 ({job_id}) when the batch was finalized: its answer was never "
            "received (the provider may have billed it; its cost is unknown)",
            12,
        )
    ]
    assert summary["attempt_errors"] == {"lost": 12}
    # the cost known is 0.0 (no tokens were ever reported); 12 calls' cost is unknown
    assert summary["cost_usd"] == 0.0 and summary["unknown_cost_calls"] == 12
    assert summary["cost_note"] == (
        "cost ≥ $0.0000: 12 calls with unknown cost (sent, answer never received; the "
        "provider may have billed them)"
    )
    table = report(["summary", batch_id, "--db", db_url])
    assert table.exit_code == 0, table.output
    assert "≥ $0.0000 (12 calls with unknown cost: no answer received)" in flat(table.stdout)
    assert "saved ≥ $0.0000 (≥ $0.0000 at the synchronous price)" in flat(table.stdout)
    exported = report(["comparisons", batch_id, "--db", db_url, "--format", "json"])
    assert exported.exit_code == 0, exported.output
    rows = json.loads(exported.stdout)
    rows = rows["comparisons"] if isinstance(rows, dict) else rows
    assert len(rows) == 12 and {r["cost_usd"] for r in rows} == {None}  # unknown, not 0
    # never paid twice: a resume after finalize sends nothing
    resumed = run(["resume", batch_id, "--db", db_url])
    assert resumed.exit_code == 2, resumed.output
    assert "already finished (COMPLETED, finalized_early); nothing to resume" in resumed.stderr
    server.batches.refusals.clear()
    server.batches.gate.set()
    assert len(server.batches.created) == 1
    assert [len(server.batches.jobs[j].requests) for j in server.batches.created] == [12]
    assert query(db_url, "SELECT calls_sent FROM batch_state") == [(12,)]


def test_a_cohort_class_whose_job_is_gone_shows_its_unknown_cost(
    db_url: str, tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through the queue: ``cj-run worker`` stops on the unknown job (the batch
    back in the queue), ``cj-run finalize`` ends it, and ``cj-report cohort`` shows the
    class's cost as a lower bound with its calls of unknown cost, in every format."""
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()
    settings = {**SETTINGS, "RETRY_BASE_DELAY_S": 0.0, "RETRY_MAX_DELAY_S": 0.0}
    profile = write_profile(tmp_path / "p.yaml", settings, judge("openai", server, batch=True))
    cohort_csv = tmp_path / "cohort.csv"
    cohort_csv.write_text(f"class_id,inventory\nall,{REGULAR24}\n", encoding="utf-8")
    queued = run(
        ["enqueue", str(cohort_csv), "--cohort", "y7", "--profile", str(profile), "--db", db_url]
    )
    assert queued.exit_code == 0, queued.output
    line = interrupted_run(
        db_url,
        profile,
        server,
        lambda: server.batches.refuse("not_found", times=1000),
        args=["worker"],
    )
    assert "the provider does not know batch job" in line
    (batch_id,) = query(db_url, "SELECT id FROM batches")[0]
    ended = run(["finalize", batch_id, "--db", db_url, "--json"])
    assert ended.exit_code == 0, ended.output
    check_finalized_with_the_job_lost(db_url, server, batch_id, json.loads(ended.stdout))
    as_json = report(["cohort", "y7", "--db", db_url, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    ((cls),) = data["per_class"]
    assert (cls["state"], cls["cost_usd"], cls["unknown_cost_calls"]) == ("done", 0.0, 12)
    assert data["overall"]["unknown_cost_calls"] == 12
    as_csv = report(["cohort", "y7", "--db", db_url, "--format", "csv"])
    header, row = as_csv.stdout.splitlines()[:2]
    assert dict(zip(header.split(","), row.split(","), strict=True))["unknown_cost_calls"] == "12"
    table = report(["cohort", "y7", "--db", db_url])
    assert table.exit_code == 0, table.output
    assert "≥0.0000" in table.stdout
    assert (
        "cost ≥: 12 calls with unknown cost (sent, answer never received; the provider may "
        "have billed them)" in flat(table.stdout)
    )


def test_finalize_counts_a_job_never_submitted_as_not_sent(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose requests were stored but never went out (``prepared``: a crash before
    its upload) holds calls that were not sent, so not billed: finalize ends them ``lost``
    with the kind ``not_submitted``, and no cost is shown as unknown. (The stored job's
    state is set to ``prepared`` in the database of a real stopped run: the point a crash
    between storing a job and uploading it leaves.)"""
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()
    settings = {**SETTINGS, "RETRY_BASE_DELAY_S": 0.0, "RETRY_MAX_DELAY_S": 0.0}
    profile = write_profile(tmp_path / "p.yaml", settings, judge("openai", server, batch=True))
    db_url = str(tmp_path / "cj.db")
    interrupted_run(db_url, profile, server, lambda: server.batches.refuse("not_found", times=1000))
    (batch_id,) = query(db_url, "SELECT id FROM batches")[0]
    with sqlite3.connect(db_url) as conn:
        conn.execute("UPDATE provider_jobs SET state = 'prepared', provider_job_id = NULL")
    ended = run(["finalize", batch_id, "--db", db_url, "--json"])
    assert ended.exit_code == 0, ended.output
    summary = json.loads(ended.stdout)
    assert query(
        db_url,
        "SELECT status, error_kind, error_message, COUNT(*) FROM comparisons "
        "GROUP BY status, error_kind, error_message",
    ) == [
        (
            "lost",
            "not_submitted",
            "in provider job 1, never submitted, when the batch was finalized: not sent, "
            "not billed",
            12,
        )
    ]
    assert (summary["unknown_cost_calls"], summary["cost_note"]) == (0, None)
    table = report(["summary", batch_id, "--db", db_url])
    assert "0 in / 0 out; $0.0000" in flat(table.stdout)
