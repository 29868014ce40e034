"""`cj-run worker` when a batch stops at once because its judge cannot go on: the server
cannot be reached, or (batch-API mode) the account is refused while a provider job holds
paid calls. The worker says so in the batch's line, as `cj-run` does (the error, and the
paid calls still due in provider jobs), gives the batch back to the queue and stops
(exit 2) instead of claiming the same batch again and again. On a real SQLite file.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.crash_resume import clean_env
from cj_runner.services.worker import JudgeStopped, Worker, WorkerOptions
from cj_runner.storage import open_store, resolve_db_url
from tests.cli.helpers import REGULAR24, query, run, write_profile
from tests.cli.test_batch_api import KEY, PATIENCE_S, SETTINGS, cj_run, judge, serve
from tests.cli.test_check_before_spending import closed_port_url

__all__ = ["serve"]  # the mock server fixture, shared with tests/cli/test_batch_api.py


def enqueue_one_class(tmp_path: Path, judge_config: dict[str, Any], **settings: Any) -> Path:
    """A SQLite database with cohort ``y7``: one class (``all``, the 24 regular essays)."""
    cohort_csv = tmp_path / "cohort.csv"
    cohort_csv.write_text(f"class_id,inventory\nall,{REGULAR24}\n", encoding="utf-8")
    profile = write_profile(tmp_path / "p.yaml", {**SETTINGS, **settings}, judge_config)
    db = tmp_path / "cj.db"
    queued = run(
        ["enqueue", str(cohort_csv), "--cohort", "y7", "--profile", str(profile), "--db", str(db)]
    )
    assert queued.exit_code == 0, queued.output
    return db


def test_a_worker_whose_judge_cannot_be_reached_gives_the_batch_back_and_stops(
    tmp_path: Path,
) -> None:
    url = closed_port_url()
    unreachable = {
        "kind": "openai_compatible",
        "name": "nowhere",
        "model": "m1",
        "base_url": url,
        "api_key_env": None,
        "timeout_s": 5,
    }
    db = enqueue_one_class(tmp_path, unreachable, RETRY_BASE_DELAY_S=0, RETRY_MAX_DELAY_S=0)
    ((batch_id,),) = query(db, "SELECT batch_id FROM cohort_queue")
    notes: list[str] = []
    stop = asyncio.Event()  # set only if the worker claims the batch again

    def notify(line: str) -> None:
        notes.append(line)
        if len([n for n in notes if "claimed" in n]) > 1:
            stop.set()  # the same batch claimed again: the worker would spin; end the test

    async def work() -> None:
        store = await open_store(resolve_db_url(str(db)))
        try:
            await Worker(store, WorkerOptions(), stop_event=stop, notify=notify).run()
        finally:
            await store.close()

    with pytest.raises(JudgeStopped) as raised:
        asyncio.run(work())
    line = str(raised.value)
    assert line.startswith(f"y7/all ({batch_id}): ")
    assert f"cannot reach the judge at {url}/chat/completions" in line
    assert "the batch stopped at once (INTERRUPTED, nothing else sent)" in line
    assert "the next cj-run worker (the batch is back in the queue)" in line
    assert notes == [f"y7/all ({batch_id}): claimed"]  # claimed once, not again
    assert query(db, "SELECT claimed_by, claims FROM cohort_queue") == [(None, 1)]
    assert query(db, "SELECT status FROM batches") == [("INTERRUPTED",)]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_worker_says_the_paid_calls_due_when_the_key_is_refused_during_a_job(
    tmp_path: Path, serve: Any, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch-API mode through the worker (it ran a batch-mode batch call by call before):
    the key is revoked while the first job runs; the worker's line names the error and
    the 12 paid calls still due, exit 2; once the key works, the next worker collects
    them: nothing lost, nothing paid twice."""
    monkeypatch.setenv("CJ_TEST_BATCH_KEY", KEY)
    server = serve(polls_to_end=0)
    server.batches.gate.clear()  # the job keeps running until the gate opens
    db = enqueue_one_class(tmp_path, judge(provider, server, batch=True))
    ((batch_id,),) = query(db, "SELECT batch_id FROM cohort_queue")
    hold = server.batches.hold("poll")
    process = subprocess.Popen(
        [cj_run(), "worker", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env(), "CJ_TEST_BATCH_KEY": KEY},
    )
    try:
        assert hold.arrived.wait(PATIENCE_S), "the job's first poll never came"
        server.api_key = "sk-another-key"  # every request is 401 from now on
        hold.release()
        _out, err = process.communicate(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: y7/all ({batch_id}): ")
    assert "HTTP 401" in line
    assert "12 paid calls in provider jobs that have not ended stay stored as sent" in line
    assert "the next cj-run worker (the batch is back in the queue) collects" in line
    assert query(db, "SELECT claimed_by, claims FROM cohort_queue") == [(None, 1)]
    assert query(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [("sent", 12)]

    server.api_key = KEY  # the user fixes the key
    server.batches.gate.set()
    again = run(["worker", "--db", str(db)])
    assert again.exit_code == 0, again.output
    assert query(db, "SELECT status FROM batches") == [("COMPLETED",)]
    assert [len(server.batches.jobs[j].requests) for j in server.batches.created] == [12] * 4
    assert query(db, "SELECT calls_sent FROM batch_state") == [(48,)]
    assert query(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status") == [
        ("success", 48)
    ]
