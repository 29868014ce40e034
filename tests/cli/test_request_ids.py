"""The per-call log (`--log-file`, `--verbose`) names the provider's request id of every
call that got an answer: the `x-request-id` (OpenAI) or `request-id` (Anthropic) header,
else the answer's own `id`; errors included, a timeout has none (`-`). Served by the replay
server on 127.0.0.1 through `cj-run execute`, one call at a time so the log's order is the
server's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.cli.helpers import LOWER5, run
from tests.cli.test_provider_replay import KEY, profile
from tests.hostile_server import HostileServer
from tests.hostile_server import Reply as Hostile
from tests.replay import (
    Received,
    ReplayServer,
    Reply,
    anthropic_error,
    anthropic_message,
    openai_completion,
    openai_error,
)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CJ_REPLAY_KEY", KEY)


def _log_ids(log: Path) -> list[str]:
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if " slot=" in line]
    found = [re.search(r" request_id=(\S+)", line) for line in lines]
    assert all(found), lines
    return [m.group(1) for m in found if m is not None]


def _execute(tmp: Path, judge: Path, *extra: str) -> Path:
    log = tmp / "calls.log"
    result = run(
        [
            "execute",
            "--db",
            str(tmp / "cj.db"),
            "--inventory",
            str(LOWER5),
            "--profile",
            "mock_lower5",
            "--judge",
            str(judge),
            "--no-resampling",
            "--set",
            "MAX_CONCURRENT_REQUESTS=1",
            "--set",
            "RETRY_BASE_DELAY_S=0",
            "--set",
            "RETRY_MAX_DELAY_S=0",
            "--log-file",
            str(log),
            "--quiet",
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return log


def openai_ids(received: Received) -> Reply:
    """Call 1: a 503 with its id; then answers with an ``x-request-id`` header, every
    third without one (its ``id`` is logged), and one whose header echoes the key."""
    n = received.index
    if n == 0:
        return openai_error(
            503, "overloaded", type="server_error", headers={"x-request-id": "req_e0"}
        )
    reply = openai_completion(received)
    if n == 5:
        reply.headers["x-request-id"] = f"req_{KEY}_5"
    elif n % 3:
        reply.headers["x-request-id"] = f"req_{n:04d}"
    return reply


def anthropic_ids(received: Received) -> Reply:
    n = received.index
    if n == 0:
        return anthropic_error(529, "overloaded_error", "Overloaded")
    reply = anthropic_message(received)
    if n % 3:
        reply.headers["request-id"] = f"req_011A{n:04d}"
    return reply


@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic"])
def test_the_call_log_names_each_calls_request_id(tmp_path: Path, kind: str) -> None:
    case = openai_ids if kind == "openai_compatible" else anthropic_ids
    with ReplayServer(case) as server:
        judge = profile(tmp_path, server, kind, "replay-model")
        log = _execute(tmp_path, judge)
        served = len(server.requests)
    ids = _log_ids(log)
    assert len(ids) == served == 11  # 10 edges, the first asked twice
    if kind == "openai_compatible":
        expected = ["req_e0"] + [
            "req_***_5" if n == 5 else f"req_{n:04d}" if n % 3 else f"chatcmpl-replay{n}"
            for n in range(1, served)
        ]
    else:
        expected = ["req_011Replay"] + [
            f"req_011A{n:04d}" if n % 3 else f"msg_01Replay{n}" for n in range(1, served)
        ]
    assert ids == expected
    assert KEY not in log.read_text(encoding="utf-8")


def test_a_call_without_an_answer_has_no_request_id(tmp_path: Path) -> None:
    """A server that closes the connection gives no id: the log says ``-``; answers
    without a request-id header are logged by their ``id``."""
    with HostileServer(lambda n, _r: Hostile(close=True) if n == 1 else None) as server:
        judge = tmp_path / "judge.yaml"
        judge.write_text(
            yaml.safe_dump(
                {"kind": "openai_compatible", "name": "h", "model": "m", "base_url": server.url}
            ),
            encoding="utf-8",
        )
        log = _execute(tmp_path, judge)
    ids = _log_ids(log)
    assert len(ids) == 11 and ids[0] == "-" and set(ids[1:]) == {"hostile"}
