"""Hostile answers through ``cj-run execute``: a judge server on 127.0.0.1 that sends lone
surrogates, NUL bytes, absurd token counts, huge bodies, trickles, long Retry-Afters.
One bad answer never costs the others: every answer the server delivered is stored (as an
answer, or as the call's error), the batch ends, and nothing is paid twice.

SQLite and (with ``CJ_TEST_POSTGRES_URL``) PostgreSQL: PostgreSQL refuses NUL in text.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from cj_runner.storage import open_store, resolve_db_url
from cj_runner.storage import repository as repo
from tests.cli.helpers import LOWER5, run
from tests.hostile_server import HostileServer, Reply, Script, answer_body, error_body, winner_of

FAST = [
    "--set",
    "MAX_CONCURRENT_REQUESTS=4",
    "--set",
    "RETRY_BASE_DELAY_S=0",
    "--set",
    "RETRY_MAX_DELAY_S=0",
    "--max-comparisons",
    "100",
]


def judge_file(folder: Path, server: HostileServer, **fields: Any) -> Path:
    path = folder / "hostile.yaml"
    profile = {
        "kind": "openai_compatible",
        "name": "hostile",
        "model": "hostile-model",
        "base_url": server.url,
        "timeout_s": 30,
        **fields,
    }
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def attempts(db_url: str, batch_id: str) -> list[dict[str, Any]]:
    async def load() -> list[dict[str, Any]]:
        store = await open_store(resolve_db_url(db_url))
        try:
            return await repo.load_attempts(store, batch_id)
        finally:
            await store.close()

    return asyncio.run(load())


def execute(
    tmp_path: Path, db_url: str, script: Script, *extra: str, **judge: Any
) -> tuple[int, dict[str, Any], list[dict[str, Any]], HostileServer]:
    with HostileServer(script) as server:
        path = judge_file(tmp_path, server, **judge)
        result = run(["execute", "-i", str(LOWER5), "--profile", "mock_lower5", "--judge",
                      str(path), "--db", db_url, "--json", *FAST, *extra])  # fmt: skip
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)
    rows = attempts(db_url, summary["batch_id"])
    # the ledger: one stored row per request the server received, numbered 1..n
    calls = sorted(r["call_no"] for r in rows if r["call_no"] is not None)
    assert calls == list(range(1, server.requests + 1)) and summary["calls_sent"] == len(calls)
    assert not [r for r in rows if r["status"] == "sent"]
    return result.exit_code, summary, rows, server


def every(n: int, reply: Reply) -> Script:
    def script(number: int, request: dict[str, Any]) -> Reply | None:
        return reply if number % n == 0 else None

    return script


def with_winner(make: Any) -> Script:
    """Every 5th request gets ``make(winner)``'s body (a verdict with the right winner)."""

    def script(number: int, request: dict[str, Any]) -> Reply | None:
        if number % 5:
            return None
        return Reply(body=make(winner_of(request)))

    return script


def test_a_lone_surrogate_every_25th_answer_costs_nothing(db_url: str, tmp_path: Path) -> None:
    """The issue's "done when": exit 0, delivered = stored + lost."""

    def script(number: int, request: dict[str, Any]) -> Reply | None:
        if number % 25:
            return None
        return Reply(body=answer_body(winner=winner_of(request), justification="ok \ud83d bad"))

    code, summary, rows, server = execute(tmp_path, db_url, script)
    assert code == 0 and summary["status"] == "COMPLETED"
    answered = [r for r in rows if r["status"] == "success"]
    lost = [r for r in rows if r["error_kind"] == "lost"]
    assert server.delivered == len(answered) + len(lost) == summary["calls_sent"]
    replaced = [r for r in answered if "\ufffd" in (r["justification"] or "")]
    assert len(replaced) == server.requests // 25 >= 1
    assert all(r["justification"] == "ok \ufffd bad" for r in replaced)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda w: answer_body(winner=w, justification="nul \x00 here"), id="nul"),
        pytest.param(
            lambda w: answer_body(winner=w, justification="pair \ud83d\ude00 and \udc00"),
            id="surrogates",
        ),
        pytest.param(
            lambda w: answer_body(winner=w, justification="x" * 50_000), id="long-justification"
        ),
    ],
)
def test_unstorable_text_in_answers_is_replaced_visibly(
    db_url: str, tmp_path: Path, make: Any
) -> None:
    code, summary, rows, server = execute(tmp_path, db_url, with_winner(make))
    assert code == 0 and summary["status"] == "COMPLETED"
    answered = [r for r in rows if r["status"] == "success"]
    assert server.delivered == len(answered)
    odd = [r["justification"] for r in answered if r["justification"] != "A is clearer."]
    assert len(odd) == server.requests // 5
    for text in odd:
        assert "\x00" not in text and "\ud83d" not in text
        assert "\ufffd" in text or text.endswith("more characters cut]")
        assert len(text) <= 8000


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(error_body("bad \x00 byte"), id="nul"),
        pytest.param(error_body("bad \ud83d surrogate"), id="surrogate"),
    ],
)
def test_unstorable_text_in_error_bodies_is_replaced(
    db_url: str, tmp_path: Path, body: bytes
) -> None:
    code, summary, rows, _ = execute(tmp_path, db_url, every(7, Reply(status=500, body=body)))
    assert code == 0 and summary["status"] == "COMPLETED"
    errors = [r for r in rows if r["error_kind"] == "server_error"]
    assert errors and all("\ufffd" in r["error_message"] for r in errors)


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"prompt_tokens": 10**30, "completion_tokens": 5}, id="beyond-64-bits"),
        pytest.param({"prompt_tokens": 10, "completion_tokens": -4}, id="negative"),
        pytest.param({"prompt_tokens": 2**53 + 1, "completion_tokens": 1}, id="above-2**53"),
    ],
)
def test_an_absurd_token_count_is_an_error_of_its_own_kind(
    db_url: str, tmp_path: Path, usage: dict[str, int]
) -> None:
    script = with_winner(lambda w: answer_body(winner=w, usage=usage))
    code, summary, rows, _ = execute(tmp_path, db_url, script)
    assert code == 0 and summary["status"] == "COMPLETED"
    kinds = Counter(r["error_kind"] for r in rows if r["error_kind"])
    if usage["completion_tokens"] < 0:  # a judge may ignore a count it cannot read
        assert set(kinds) <= {"bad_usage"}
    else:
        assert kinds["bad_usage"] >= 1
    assert all(0 <= (r["tokens_in"] or 0) <= 2**53 for r in rows)
