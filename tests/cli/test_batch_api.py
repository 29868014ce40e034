"""Batch-API mode (issue 16) end to end: ``cj-run execute --batch-api`` against serve-mock's
OpenAI Batch and Anthropic Message Batches endpoints, and SIGKILL after the upload, after
the submission and during polling, then ``cj-run resume``: exactly one job per wave is
submitted, no answer is lost, the budget holds.

Rendezvous, never timing: the mock holds a create request (before or after the job
exists) or a status request until the test has killed the process, and a closed gate
keeps jobs running.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.crash_resume import clean_env
from cj_runner.judges.config import ErrorRates, JudgeConfig, MockBatchConfig, MockServerConfig
from cj_runner.judges.server import MockJudgeServer
from tests.cli.helpers import REGULAR24, run, write_profile

KEY = "sk-batch-test-key"
PATIENCE_S = 120
SETTINGS = {
    "MAX_PAIRWISE_COMPARISONS": 48,
    "COMPARISONS_PER_STABILITY_CHECK_ITERATION": 12,
    "SCORE_STABILITY_THRESHOLD": 0.0,
    "MAX_ITERATIONS": 100,
    "USE_ANCHORS": False,
    "SEED": 11,
}
PRICES = {"price_input_per_mtok": 1.0, "price_output_per_mtok": 4.0}


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[MockJudgeServer] = []

    def _serve(**batch: Any) -> MockJudgeServer:
        errors = batch.pop("errors", ErrorRates())
        config = JudgeConfig(
            model="mock-model",
            seed=3,
            errors=errors,
            server=MockServerConfig(batch=MockBatchConfig(**batch)),
        )
        server = MockJudgeServer(config, api_key=KEY).start()
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


def judge(provider: str, server: MockJudgeServer, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "openai_compatible" if provider == "openai" else "anthropic",
        "name": provider,
        "model": "mock-model",
        "base_url": server.url if provider == "openai" else server.root_url,
        "api_key_env": "CJ_TEST_BATCH_KEY",
        "batch_poll_s": 0.05,
        **PRICES,
        **extra,
    }


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return list(conn.execute(sql))


def execute(db: Path, profile: Path, *extra: str) -> dict[str, Any]:
    result = run(
        [
            "execute",
            "-i",
            str(REGULAR24),
            "--profile",
            str(profile),
            "--db",
            str(db),
            "--json",
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def check_no_answer_lost_or_paid_twice(db: Path, summary: dict[str, Any]) -> None:
    """Every call stored is one request of one stored job; every comparison answered once."""
    requests = rows(db, "SELECT COUNT(*) FROM provider_job_requests")[0][0]
    assert summary["calls_sent"] == requests
    statuses = dict(rows(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status"))
    assert "sent" not in statuses and "lost" not in statuses
    per_slot = rows(
        db, "SELECT slot, COUNT(*) FROM comparisons WHERE status = 'success' GROUP BY slot"
    )
    assert all(n == 1 for _, n in per_slot)
    assert len(per_slot) == summary["successful_comparisons"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_api_run_costs_half_the_synchronous_run(
    tmp_path: Path, serve: Any, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same seed through the synchronous endpoint and through the batch API: the same
    first wave (pairs, verdicts, tokens), the batch run at half the synchronous price of
    its own calls; one job per wave.

    (The synchronous run plans later waves ahead of the last closed one (pipelined waves),
    the batch API mode each wave after the one before closed, so from the second wave on
    they may ask different pairs.)"""
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    sync_server, batch_server = serve(), serve(polls_to_end=2)
    sync_profile = write_profile(tmp_path / "sync.yaml", SETTINGS, judge(provider, sync_server))
    batch_profile = write_profile(tmp_path / "batch.yaml", SETTINGS, judge(provider, batch_server))
    sync = execute(tmp_path / "sync.db", sync_profile)
    batch = execute(tmp_path / "batch.db", batch_profile, "--batch-api")
    assert sync["status"] == batch["status"] == "COMPLETED"
    assert sync["calls_sent"] == batch["calls_sent"] == 48
    assert batch["cost_usd"] == pytest.approx(batch["sync_cost_usd"] / 2, abs=2e-6)
    assert batch["batch_api"] is True and batch["provider_jobs"] == 4
    assert batch["sync_cost_usd"] == pytest.approx(sync["cost_usd"], rel=0.05)
    assert batch["saved_usd"] == pytest.approx(batch["sync_cost_usd"] / 2, abs=2e-6)
    pairs = (
        "SELECT slot, a_idx, b_idx, winner, tokens_in, tokens_out FROM comparisons "
        "WHERE wave = 1 ORDER BY slot"
    )
    first_wave = rows(tmp_path / "sync.db", pairs)
    assert len(first_wave) == 12
    assert first_wave == rows(tmp_path / "batch.db", pairs)
    # every judge request went through the batch endpoints, one job per wave of 12
    judge_paths = [
        p for p in batch_server.requests_seen if "completions" in p or p.endswith("/messages")
    ]
    assert judge_paths == []
    assert len(batch_server.batches.created) == 4
    assert [len(batch_server.batches.jobs[j].requests) for j in batch_server.batches.created] == [
        12
    ] * 4
    check_no_answer_lost_or_paid_twice(tmp_path / "batch.db", batch)


def test_expired_and_failed_requests_are_asked_again_and_only_they(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0, expire=0.25, errors=ErrorRates(server_error=0.1))
    profile = write_profile(
        tmp_path / "p.yaml",
        {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 80},
        judge("openai", server, batch=True),
    )
    summary = execute(tmp_path / "cj.db", profile)
    assert summary["status"] == "COMPLETED"
    db = tmp_path / "cj.db"
    kinds = dict(
        rows(
            db,
            "SELECT error_kind, COUNT(*) FROM comparisons WHERE status = 'retried' "
            "GROUP BY error_kind",
        )
    )
    assert kinds.get("expired", 0) > 0 and kinds.get("server_error", 0) > 0
    # a later job of a wave holds only what had no answer after the earlier ones
    jobs = rows(db, "SELECT job_key, wave FROM provider_jobs ORDER BY job_no")
    assert len(jobs) > len({w for _, w in jobs})
    answered: set[int] = set()
    for job_key, _wave in jobs:
        slots = {
            s
            for (s,) in rows(
                db, f"SELECT slot FROM provider_job_requests WHERE job_key = '{job_key}'"
            )
        }
        assert not slots & answered
        answered |= {
            s
            for (s,) in rows(
                db,
                "SELECT c.slot FROM comparisons c JOIN provider_job_requests r ON "
                f"r.slot = c.slot AND r.attempt = c.attempt WHERE r.job_key = '{job_key}' "
                "AND c.status IN ('success', 'failed')",
            )
        }
    check_no_answer_lost_or_paid_twice(db, summary)
    assert summary["calls_sent"] <= 80


# ------------------------------------------------------------------ kill and resume


def cj_run() -> str:
    return str(Path(sys.executable).with_name("cj-run"))


def start(db: Path, profile: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [cj_run(), "execute", "-i", str(REGULAR24), "--profile", str(profile), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env(), "CJ_TEST_BATCH_KEY": KEY},
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.kill()  # SIGKILL
    process.communicate(timeout=PATIENCE_S)


def resume(db: Path) -> dict[str, Any]:
    ((batch_id,),) = rows(db, "SELECT id FROM batches")
    result = run(["resume", batch_id, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def job_keys(server: MockJudgeServer) -> list[str]:
    """The cj-runner job key of every job the provider created (OpenAI: its metadata;
    Anthropic: the prefix of its custom ids)."""
    keys = []
    for job_id in server.batches.created:
        job = server.batches.jobs[job_id]
        custom_id = job.requests[0][0]
        keys.append(custom_id.rsplit("-s", 1)[0])
        if job.metadata is not None:
            assert job.metadata["cj_runner_job"] == keys[-1]
    return keys


@pytest.mark.parametrize(
    ("provider", "point"),
    [
        ("openai", "before_create"),
        ("openai", "after_create"),
        ("anthropic", "after_create"),
        ("openai", "poll"),
    ],
    ids=[
        "openai-after-upload",
        "openai-after-submission",
        "anthropic-after-submission",
        "openai-while-polling",
    ],
)
def test_sigkill_then_resume_submits_each_job_once(
    tmp_path: Path, serve: Any, provider: str, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    db = tmp_path / "cj.db"
    server = serve(polls_to_end=1)
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, judge(provider, server, batch=True))
    hold = server.batches.hold(point)  # type: ignore[arg-type]
    process = start(db, profile)
    try:
        assert hold.arrived.wait(PATIENCE_S), "the first job never reached the rendezvous"
        (state, file_id, job_id) = rows(
            db, "SELECT state, input_file_id, provider_job_id FROM provider_jobs"
        )[0]
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if point == "poll":
        assert state == "submitted" and job_id is not None
    else:
        assert state == "submitting" and job_id is None  # the id never came back
        assert (file_id is not None) == (provider == "openai")
    # before_create: the create request never arrived; after_create: the job exists
    hold.release("drop")
    created_before = len(server.batches.created)
    assert created_before == (0 if point == "before_create" else 1)
    assert rows(db, "SELECT COUNT(*) FROM comparisons WHERE status = 'sent'") == [(12,)]

    summary = resume(db)
    assert summary["status"] == "COMPLETED" and summary["calls_sent"] == 48
    keys = job_keys(server)
    assert len(keys) == len(set(keys)) == 4  # every job submitted exactly once
    assert rows(db, "SELECT COUNT(*) FROM provider_jobs") == [(4,)]
    assert summary["successful_comparisons"] == 48
    check_no_answer_lost_or_paid_twice(db, summary)


def test_ctrl_c_while_a_job_runs_exits_130_and_resume_collects_it(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    db = tmp_path / "cj.db"
    server = serve(polls_to_end=0)
    server.batches.gate.clear()  # jobs keep running until the gate opens
    profile = write_profile(tmp_path / "p.yaml", SETTINGS, judge("anthropic", server, batch=True))
    hold = server.batches.hold("poll")
    process = start(db, profile)
    try:
        assert hold.arrived.wait(PATIENCE_S)
        process.send_signal(signal.SIGINT)
        hold.release()
        _out, err = process.communicate(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "Resume with: cj-run resume" in err
    assert rows(db, "SELECT status FROM batches") == [("INTERRUPTED",)]
    # the job's calls are still coming: not lost, not asked again
    assert dict(rows(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status")) == {
        "sent": 12
    }
    server.batches.gate.set()
    summary = resume(db)
    assert summary["status"] == "COMPLETED"
    assert len(server.batches.created) == 4
    assert Counter(job_keys(server)).most_common(1)[0][1] == 1
    check_no_answer_lost_or_paid_twice(db, summary)


def test_anthropic_lookup_that_picks_a_foreign_job_never_reads_its_answers(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Message Batches carry no metadata: after a lost create answer the runner takes the
    oldest batch of the same size created since. Here another client's batch of 12, made
    just before, is taken: its answers (other custom ids) are never read, and the job's 12
    requests are asked again in the next job (counted against the budget)."""
    import anthropic

    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    db = tmp_path / "cj.db"
    server = serve(polls_to_end=0)
    with anthropic.Anthropic(base_url=server.root_url, api_key=KEY, max_retries=0) as client:
        foreign = client.messages.batches.create(
            requests=[
                {
                    "custom_id": f"other-{i}",
                    "params": {
                        "model": "mock-model",
                        "max_tokens": 100,
                        "messages": [{"role": "user", "content": f"Essay A: x{i}. Essay B: y."}],
                    },
                }
                for i in range(12)
            ]
        )
    settings = {**SETTINGS, "MAX_PAIRWISE_COMPARISONS": 60}
    profile = write_profile(tmp_path / "p.yaml", settings, judge("anthropic", server, batch=True))
    hold = server.batches.hold("after_create")
    process = start(db, profile)
    try:
        assert hold.arrived.wait(PATIENCE_S)
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    hold.release("drop")
    summary = resume(db)
    assert summary["status"] == "COMPLETED"
    ((adopted,),) = rows(db, "SELECT provider_job_id FROM provider_jobs WHERE job_no = 1")
    assert adopted == foreign.id  # the guess was wrong ...
    expired = rows(
        db,
        "SELECT COUNT(*) FROM comparisons WHERE wave = 1 AND error_kind = 'expired'",
    )
    assert expired == [(12,)]  # ... so nothing of it was read: all 12 asked again
    assert summary["calls_sent"] == 60 and summary["successful_comparisons"] == 48
    check_no_answer_lost_or_paid_twice(db, summary)


def test_plan_shows_both_estimates_and_a_mock_judge_is_refused(tmp_path: Path) -> None:
    result = run(
        ["plan", "-i", str(REGULAR24), "--judge", "anthropic", "--batch-api", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["batch_api"] is True
    assert plan["estimated_batch_cost_usd"] == pytest.approx(plan["estimated_sync_cost_usd"] / 2)
    assert plan["estimated_cost_usd"] == pytest.approx(plan["estimated_batch_cost_usd"])
    sync = json.loads(
        run(["plan", "-i", str(REGULAR24), "--judge", "anthropic", "--format", "json"]).stdout
    )
    assert sync["batch_api"] is False
    assert sync["estimated_cost_usd"] == pytest.approx(plan["estimated_sync_cost_usd"])
    db = tmp_path / "cj.db"
    refused = run(["execute", "-i", str(REGULAR24), "--batch-api", "--db", str(db)])
    assert refused.exit_code == 2
    assert "batch: true (--batch-api) needs an openai_compatible or anthropic judge" in (
        refused.stderr
    )
    assert "Traceback" not in refused.output and not db.exists()
