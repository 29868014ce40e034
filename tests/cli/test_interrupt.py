"""Ctrl-C and SIGTERM on a real ``cj-run execute`` process: stop sending, let the calls in
flight answer, store them, mark the batch INTERRUPTED, print how to resume, exit 130; then
``cj-run resume`` finishes the batch."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.crash_resume import clean_env
from tests.cli.helpers import LOWER5, run, write_profile
from tests.hostile_server import PATIENCE_S, HostileServer

CONCURRENCY = 2
SETTINGS = {
    "MAX_PAIRWISE_COMPARISONS": 60,
    "MIN_RESAMPLING_NET_SIZE": 5,
    "MAX_RESAMPLING_PASSES_FOR_SMALL_NET": 3,
    "SCORE_STABILITY_THRESHOLD": 0.0,
    "MAX_ITERATIONS": 100,
    "MAX_CONCURRENT_REQUESTS": CONCURRENCY,
    "USE_ANCHORS": False,
    "SEED": 5,
}
HELD_FROM = 7  # the server holds calls 7 and 8 (two in flight) until the signal is sent


def cj_run() -> str:
    """The installed console script (the one a user runs)."""
    return str(Path(sys.executable).with_name("cj-run"))


def calls(db: Path) -> int:
    """Calls stored so far (0 before the database or its schema exists)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            row = conn.execute("SELECT COALESCE(MAX(call_no), 0) FROM comparisons").fetchone()
    except sqlite3.OperationalError:  # no schema yet
        return 0
    return int(row[0])


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_batch_cleanly_and_resume_finishes_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Rendezvous, not timing: the server holds calls 7 and 8, so exactly 8 calls have been
    sent when the signal goes out; they are released right after it (the grace period)."""
    db = tmp_path / "cj.db"
    with HostileServer() as server:
        judge = {
            "kind": "openai_compatible",
            "name": "held",
            "model": "held-model",
            "base_url": server.url,
            "timeout_s": 3600,
        }
        profile = write_profile(tmp_path / "held.yaml", SETTINGS, judge)
        server.hold(HELD_FROM)
        process = subprocess.Popen(
            [cj_run(), "execute", "-i", str(LOWER5), "--profile", str(profile), "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**clean_env(), "COLUMNS": "200"},
        )
        try:
            server.wait_for(HELD_FROM + CONCURRENCY - 1)
            sent_at_signal = calls(db)
            process.send_signal(sig)
            server.release()
            _stdout, stderr = process.communicate(timeout=PATIENCE_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        # a first call goes out before its sent row commits (at most CONCURRENCY of them
        # unconfirmed): the rows of the held calls may still be on their way
        assert sent_at_signal <= HELD_FROM + CONCURRENCY - 1
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr
        ((batch_id, status, reason),) = rows(db, "SELECT id, status, stop_reason FROM batches")
        assert (status, reason) == ("INTERRUPTED", "interrupted")
        assert f"Resume with: cj-run resume {batch_id}" in stderr
        # stop sending: at most the calls already on their way when the signal arrived
        stopped_at = calls(db)
        assert stopped_at == HELD_FROM + CONCURRENCY - 1
        # what was in flight answered within the grace period and is stored; nothing is lost
        statuses: dict[str, int] = dict(
            rows(db, "SELECT status, COUNT(*) FROM comparisons GROUP BY status")
        )
        assert statuses.get("success", 0) == stopped_at
        assert "sent" not in statuses and "lost" not in statuses
        assert statuses.get("planned", 0) > 0  # the rest of the wave waits for the resume
        assert rows(db, "SELECT calls_sent FROM batch_state") == [(stopped_at,)]
        assert rows(db, "SELECT lock_owner FROM batches") == [(None,)]

        resumed = run(["resume", batch_id, "--db", str(db), "--json"])
        assert resumed.exit_code == 0, resumed.output
        summary = json.loads(resumed.stdout)
        assert summary["status"] == "COMPLETED" and summary["stop_reason"] == "resampling_cap"
        assert summary["calls_sent"] == summary["successful_comparisons"] == 40  # none paid twice
        assert summary["max_skew"] == 0.0
