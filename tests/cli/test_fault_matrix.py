"""Fault matrix: a judge that times out, rate-limits, fails with 5xx, answers garbage or
nothing, drops connections, refuses, or always answers A. Every case runs LOWER5 through
``cj-run execute`` and must end in the right stop (COMPLETED, or FAILED with reason
``success_rate``) with every attempt stored: one row per call sent, and, over HTTP, exactly
as many rows as requests the server received.

Two judges: the in-process mock (error rates in its profile), and the real
OpenAI-compatible and Anthropic clients talking to ``MockJudgeServer`` on 127.0.0.1, with a
``FaultScript`` deciding what the server answers request by request.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.server import Fault, FaultScript, MockJudgeServer
from tests.cli.helpers import LOWER5, run
from tests.hostile_server import PATIENCE_S, HostileServer, Reply, Script, answer_body, error_body

ATTEMPTS = 3  # MAX_ATTEMPTS_PER_COMPARISON (default)
# at most 4 connections at once: MockJudgeServer's listen backlog is 5, and a connection
# beyond it waits a 1 s SYN retransmit (or, with a short client timeout, never arrives)
FAST_RETRIES = [
    "--set",
    "MAX_CONCURRENT_REQUESTS=4",
    "--set",
    "RETRY_BASE_DELAY_S=0.005",
    "--set",
    "RETRY_MAX_DELAY_S=0.02",
    "--max-comparisons",
    "100",  # retries never exhaust the budget: a run that completes stops at its cap
]


@dataclass(frozen=True)
class Case:
    """One row of the matrix."""

    status: str  # COMPLETED | FAILED
    error_kind: str | None  # the error the stored attempts must show
    mock_errors: dict[str, float] = field(default_factory=dict)
    faults: FaultScript | None = None
    always: str | None = None
    # far above any answer's time on a loaded machine: a case that does not test timeouts
    # must not see one (its error kinds and attempt counts are asserted exactly)
    timeout_s: float = 60.0
    fatal: bool = False  # failed comparisons were not retried
    sets: tuple[str, ...] = ()


def _burst(n: int, fault: Fault) -> FaultScript:
    return FaultScript.first(n, fault)


MOCK_CASES: dict[str, Case] = {
    # the mock draws per (pair, repeat, attempt): a pair that used up its attempts fails
    # again when asked again, so recoverable cases use modest rates
    "timeouts": Case("COMPLETED", "timeout", mock_errors={"timeout": 0.15}),
    "429 storm": Case("FAILED", "rate_limit", mock_errors={"rate_limit": 1.0}),
    "5xx": Case("COMPLETED", "server_error", mock_errors={"server_error": 0.15}),
    "mixed": Case(
        "COMPLETED",
        "malformed",
        mock_errors={"timeout": 0.05, "rate_limit": 0.05, "server_error": 0.05, "malformed": 0.05},
    ),
    "malformed answers": Case("FAILED", "malformed", mock_errors={"malformed": 1.0}),
    "refusals": Case("FAILED", "refused", mock_errors={"refused": 1.0}, fatal=True),
    "always A": Case("COMPLETED", None, always="A"),
}

HTTP_CASES: dict[str, Case] = {
    # a client timeout well above what a loaded machine needs for an answer, a delay
    # far beyond it (the server wakes the delayed requests when the test ends)
    "timeouts": Case(
        "COMPLETED", "timeout", faults=_burst(6, Fault("delay", delay_s=60.0)), timeout_s=2.0
    ),
    "429 burst": Case(
        "COMPLETED", "rate_limit", faults=_burst(12, Fault("rate_limit", retry_after="0"))
    ),
    "429 storm": Case("FAILED", "rate_limit", faults=FaultScript.always(Fault("rate_limit"))),
    "5xx burst": Case(
        "COMPLETED", "server_error", faults=_burst(10, Fault("server_error", status=503))
    ),
    "5xx storm": Case("FAILED", "server_error", faults=FaultScript.always(Fault("server_error"))),
    "malformed bodies": Case("COMPLETED", "malformed", faults=_burst(5, Fault("malformed_body"))),
    "malformed answers": Case(
        "FAILED", "malformed", faults=FaultScript.always(Fault("malformed_answer"))
    ),
    "empty answers": Case("COMPLETED", "malformed", faults=_burst(5, Fault("empty_answer"))),
    "closed connections": Case("COMPLETED", "connection", faults=_burst(6, Fault("close"))),
    "always closes": Case("FAILED", "connection", faults=FaultScript.always(Fault("close"))),
    "refusals": Case("FAILED", "refused", faults=FaultScript.always(Fault("refusal")), fatal=True),
    "always A": Case("COMPLETED", None, always="A"),
}
ANTHROPIC = (
    "429 burst",
    "5xx burst",
    "empty answers",
    "closed connections",
    "refusals",
    "always A",
)


def stored(db: Path, batch_id: str) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT slot, attempt, status, call_no, error_kind, winner FROM comparisons "
            "WHERE batch_id = ?",
            (batch_id,),
        ).fetchall()
        (calls_sent,) = conn.execute(
            "SELECT calls_sent FROM batch_state WHERE batch_id = ?", (batch_id,)
        ).fetchone()
    calls = sorted(r[3] for r in rows if r[3] is not None)
    per_slot = Counter(r[0] for r in rows if r[3] is not None)
    return {
        "calls": calls,
        "calls_sent": calls_sent,
        "statuses": Counter(r[2] for r in rows),
        "kinds": Counter(r[4] for r in rows if r[4]),
        "winners": Counter(r[5] for r in rows if r[2] == "success"),
        "attempts_of_failed": {
            per_slot[r[0]] for r in rows if r[2] == "failed" and r[3] is not None
        },
    }


def _settle(count: Callable[[], int], expected: int) -> None:
    """Wait until a server has counted ``expected`` requests: one the client timed out on
    may reach the server's thread after the run ended. A guard, not a race: reaching
    ``PATIENCE_S`` means a request really is missing (and the equality below fails)."""
    deadline = time.monotonic() + PATIENCE_S
    while count() < expected and time.monotonic() < deadline:
        time.sleep(0.01)


def check(db: Path, args: list[str], case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    result = run(["execute", "-i", str(LOWER5), "--profile", "mock_lower5", "--db", str(db),
                  "--json", *FAST_RETRIES, *case.sets, *args])  # fmt: skip
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert result.exit_code == (0 if case.status == "COMPLETED" else 1), result.output
    assert summary["status"] == case.status
    assert summary["stop_reason"] == (
        "resampling_cap" if case.status == "COMPLETED" else "success_rate"
    )
    book = stored(db, summary["batch_id"])
    # every call is one stored attempt, numbered 1..n, and counted
    assert book["calls"] == list(range(1, summary["calls_sent"] + 1))
    assert book["calls_sent"] == summary["calls_sent"]
    assert "sent" not in book["statuses"] and "lost" not in book["statuses"]
    if case.error_kind is not None:
        assert book["kinds"][case.error_kind] > 0, book["kinds"]
        assert summary["attempt_errors"].get(case.error_kind, 0) > 0
    else:
        assert not book["kinds"]
    if case.status == "COMPLETED":
        assert summary["success_rate"] is not None and summary["success_rate"] >= 0.8
        assert summary["successful_comparisons"] + summary["failed_comparisons"] >= 40
    else:
        assert summary["success_rate"] is not None and summary["success_rate"] < 0.8
        # a transient error is tried ATTEMPTS times, a refusal once
        assert book["attempts_of_failed"] == {1 if case.fatal else ATTEMPTS}
        assert summary["grades"]["projected"] is False
    if case.always is not None:
        assert book["winners"] == {case.always: 40}
        assert summary["position_a_share"]["share"] == 1.0
    return summary, book


@pytest.mark.parametrize("name", list(MOCK_CASES))
def test_mock_judge_faults(tmp_path: Path, name: str) -> None:
    case = MOCK_CASES[name]
    judge: dict[str, Any] = {
        "kind": "mock",
        "name": "faulty-mock",
        "seed": 5,
        "errors": case.mock_errors,
        "latency": {"distribution": "zero"},
    }
    if case.always:
        judge["always"] = case.always
    path = tmp_path / "judge.yaml"
    path.write_text(yaml.safe_dump(judge), encoding="utf-8")
    check(tmp_path / "cj.db", ["--judge", str(path)], case)


HTTP_PARAMS = [pytest.param("openai_compatible", n, id=f"openai-{n}") for n in HTTP_CASES] + [
    pytest.param("anthropic", n, id=f"anthropic-{n}") for n in ANTHROPIC
]


@pytest.mark.parametrize(("kind", "name"), HTTP_PARAMS)
def test_http_judge_faults(tmp_path: Path, kind: str, name: str) -> None:
    case = HTTP_CASES[name]
    server_config = JudgeConfig.model_validate({"seed": 5, "always": case.always})
    faults = case.faults
    if faults is not None:  # a fresh script per test: it counts requests
        faults = FaultScript(faults.faults, then=faults.then)
    with MockJudgeServer(server_config, faults=faults) as server:
        profile = {
            "kind": kind,
            "name": f"local-{kind}",
            "model": "local-model",
            "base_url": server.url,
            "timeout_s": case.timeout_s,
            "max_connections": 8,
        }
        path = tmp_path / "judge.yaml"
        path.write_text(yaml.safe_dump(profile), encoding="utf-8")
        summary, book = check(tmp_path / "cj.db", ["--judge", str(path)], case)
        # the server saw exactly the calls stored: none unrecorded, none sent twice
        _settle(lambda: server.judge_requests, summary["calls_sent"])
        assert server.judge_requests == summary["calls_sent"] == len(book["calls"])


# ---------------------------------------------------------------- a hostile server

MIB = 1024 * 1024


def _first(n: int, reply: Reply) -> Script:
    def script(number: int, _request: dict[str, Any]) -> Reply | None:
        return reply if number <= n else None

    return script


HOSTILE_CASES: dict[str, tuple[Case, Script]] = {
    # one byte every 0.1 s, forever: no read ever waits timeout_s, only the whole-call
    # deadline ends the call (without it the batch would never end)
    "trickled body": (
        Case("FAILED", "timeout", timeout_s=0.5),
        lambda n, r: Reply(trickle_s=0.1),
    ),
    "headers never end": (
        Case("FAILED", "timeout", timeout_s=0.5),
        lambda n, r: Reply(stall_headers=True),
    ),
    "10 MiB answers": (
        Case("COMPLETED", "malformed"),
        _first(4, Reply(body=answer_body(justification="x" * (10 * MIB)))),
    ),
    "Retry-After 100000": (
        Case("COMPLETED", "rate_limit"),
        _first(8, Reply(status=429, headers={"Retry-After": "100000"}, body=error_body("wait"))),
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE_CASES))
def test_hostile_server_faults(tmp_path: Path, name: str) -> None:
    case, script = HOSTILE_CASES[name]
    with HostileServer(script) as server:
        profile = {
            "kind": "openai_compatible",
            "name": "hostile",
            "model": "hostile-model",
            "base_url": server.url,
            "timeout_s": case.timeout_s,
        }
        path = tmp_path / "judge.yaml"
        path.write_text(yaml.safe_dump(profile), encoding="utf-8")
        summary, book = check(tmp_path / "cj.db", ["--judge", str(path)], case)
        assert summary["calls_sent"] == len(book["calls"])
        if case.error_kind == "timeout":
            # every call begun counts, but on a loaded machine the 0.5 s deadline can run
            # out before a call's request was written: that request never reaches the
            # server. What must hold: the server never sees a request the budget missed.
            server.wait_for(1)
            assert server.requests <= summary["calls_sent"]
        else:
            # a request may reach the server's thread after the run ended (a loaded
            # machine): wait for it rather than race it
            server.wait_for(summary["calls_sent"])
            assert server.requests == summary["calls_sent"]
    with sqlite3.connect(tmp_path / "cj.db") as conn:
        messages = [r[0] for r in conn.execute("SELECT error_message FROM comparisons")]
    if case.error_kind == "timeout":
        assert any("timeout_s = 0.5 s" in (m or "") for m in messages), messages[:3]
    if name == "10 MiB answers":
        assert any("larger than 1048576 bytes" in (m or "") for m in messages)
    if name == "Retry-After 100000":
        assert any("asked to wait 100000 s" in (m or "") for m in messages)


def test_the_whole_call_deadline_holds_through_a_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy from the environment gets its own transport in httpx: the deadline (and the
    body cap and scrubbing) must apply through it too. The "proxy" trickles forever."""
    with HostileServer(lambda n, r: Reply(trickle_s=0.1)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        profile = {
            "kind": "openai_compatible",
            "name": "proxied",
            "model": "m",
            "base_url": "http://judge.invalid/v1",
            "timeout_s": 0.5,
        }
        path = tmp_path / "judge.yaml"
        path.write_text(yaml.safe_dump(profile), encoding="utf-8")
        summary, _ = check(tmp_path / "cj.db", ["--judge", str(path)], Case("FAILED", "timeout"))
        proxy.wait_for(summary["calls_sent"])
        assert proxy.requests == summary["calls_sent"] > 0
