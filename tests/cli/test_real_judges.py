"""Issue 6 end to end: `cj-run execute --judge ...` against a real local HTTP server
speaking the OpenAI and Anthropic wire formats; cost, cache, rate limit, secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.server import Fault, FaultScript, MockJudgeServer
from tests.cli.helpers import LOWER5, REGULAR24, query, register_example_anchors, report, run

PLANTED_KEY = "sk-test-PLANTED-9f8e7d6c5b4a"


@pytest.fixture
def server() -> Iterator[MockJudgeServer]:
    with MockJudgeServer(JudgeConfig(seed=4, noise=1.0), api_key=PLANTED_KEY) as srv:
        yield srv


def judge_profile(tmp: Path, server: MockJudgeServer, kind: str, **extra: Any) -> Path:
    base = server.url if kind == "openai_compatible" else server.root_url
    data = {
        "kind": kind,
        "name": f"local-{kind}",
        "model": "served-mock",
        "base_url": base,
        "api_key_env": "CJ_TEST_PLANTED_KEY",
        "price_input_per_mtok": 2.5,
        "price_output_per_mtok": 10.0,
        # no test here is about timeouts: a slow answer on a loaded machine must not
        # become one (request counts are asserted exactly)
        "timeout_s": 60,
        **extra,
    }
    path = tmp / f"judge_{kind}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def execute(db: Path, args: list[str]) -> dict[str, Any]:
    result = run(
        [
            "execute",
            "--db",
            str(db),
            "--json",
            "--set",
            "RETRY_BASE_DELAY_S=0.01",
            "--set",
            "RETRY_MAX_DELAY_S=0.05",
            *args,
        ]
    )
    assert result.exit_code in (0, 1), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic"])
def test_both_apis_end_to_end_with_tokens_and_cost(
    tmp_path: Path, server: MockJudgeServer, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("CJ_TEST_PLANTED_KEY", PLANTED_KEY)
    db = tmp_path / "cj.db"
    register_example_anchors(db)
    judge = judge_profile(tmp_path, server, kind)
    s = execute(
        db,
        [
            "--inventory",
            str(REGULAR24),
            "--assignment-id",
            "phones",
            "--judge",
            str(judge),
            "--max-comparisons",
            "120",
        ],
    )
    assert s["status"] == "COMPLETED", s
    assert s["calls_sent"] == 120
    assert server.judge_requests == 120
    assert s["tokens_in"] > 100_000 and s["tokens_out"] > 0
    expected = (s["tokens_in"] * 2.5 + s["tokens_out"] * 10.0) / 1e6
    assert s["cost_usd"] == pytest.approx(expected, rel=1e-6)
    assert s["estimated_cost_usd"] > 0
    rows = query(db, "SELECT DISTINCT model, prompt_hash FROM comparisons WHERE status='success'")
    assert len(rows) == 1 and rows[0][0] == "served-mock" and len(rows[0][1]) == 64


def test_a_cache_hit_makes_no_request(
    tmp_path: Path, server: MockJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_PLANTED_KEY", PLANTED_KEY)
    db = tmp_path / "cj.db"
    judge = judge_profile(tmp_path, server, "openai_compatible")
    args = ["--inventory", str(LOWER5), "--profile", "mock_lower5", "--judge", str(judge)]
    first = execute(db, args)
    assert first["cache_hits"] == 0
    requests = server.judge_requests
    assert requests == first["calls_sent"] == 40
    second = execute(db, args)
    assert server.judge_requests == requests  # nothing was paid for again
    assert second["cache_hits"] == 40
    assert second["calls_sent"] == 0
    assert second["status"] == "COMPLETED"
    third = execute(db, [*args, "--no-cache"])
    assert third["cache_hits"] == 0
    assert server.judge_requests == requests + 40


def test_client_side_rate_limit_is_respected_at_the_server(
    tmp_path: Path, server: MockJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_PLANTED_KEY", PLANTED_KEY)
    judge = judge_profile(tmp_path, server, "openai_compatible", requests_per_minute=1200)
    s = execute(
        tmp_path / "cj.db",
        [
            "--inventory",
            str(REGULAR24),
            "--judge",
            str(judge),
            "--max-comparisons",
            "80",
            "--set",
            "MAX_CONCURRENT_REQUESTS=4",
        ],
    )
    assert s["status"] == "COMPLETED"
    assert server.judge_requests == 80
    # 1200/min = 20/s, with one second's allowance (20) as the most that can go at once:
    # any window of T seconds sees at most 20 + 20 T requests leave the client (+1 for the
    # edges). They are counted where they arrive, and a loaded machine can delay requests
    # that left apart and deliver them together: at most one per concurrency slot (4).
    # Without the limiter the 80 zero-latency calls all land within about a second.
    times = sorted(server.request_times)
    for window in (0.5, 1.0, 2.0):
        most = max(
            sum(1 for t in times[i:] if t - start <= window) for i, start in enumerate(times)
        )
        assert most <= 20 + 20 * window + 1 + 4, (window, most)


def test_retry_after_and_server_errors_are_retried_and_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_PLANTED_KEY", PLANTED_KEY)
    faults = FaultScript([Fault("rate_limit", retry_after=0.05)] * 3 + [Fault("server_error")] * 3)
    with MockJudgeServer(JudgeConfig(seed=1), api_key=PLANTED_KEY, faults=faults) as srv:
        judge = judge_profile(tmp_path, srv, "openai_compatible")
        db = tmp_path / "cj.db"
        s = execute(
            db, ["--inventory", str(LOWER5), "--profile", "mock_lower5", "--judge", str(judge)]
        )
        assert s["status"] == "COMPLETED"
        assert srv.judge_requests == s["calls_sent"] == 46  # 40 answers + 6 faults
    kinds = query(
        db,
        "SELECT error_kind, COUNT(*) FROM comparisons WHERE status='retried' "
        "GROUP BY error_kind ORDER BY error_kind",
    )
    assert kinds == [("rate_limit", 3), ("server_error", 3)]


def test_the_api_key_is_never_written_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CJ_TEST_PLANTED_KEY", PLANTED_KEY)
    # the server echoes the credentials it got in its error bodies, as some real ones do
    faults = FaultScript(
        [Fault("status", status=401, echo_credentials=True)] * 2
        + [Fault("server_error", echo_credentials=True)] * 2
    )
    outputs: list[str] = []
    db = tmp_path / "cj.db"
    with MockJudgeServer(JudgeConfig(seed=2), api_key=PLANTED_KEY, faults=faults) as srv:
        judge = judge_profile(tmp_path, srv, "openai_compatible")
        result = run(
            [
                "execute",
                "--db",
                str(db),
                "--inventory",
                str(LOWER5),
                "--profile",
                "mock_lower5",
                "--judge",
                str(judge),
                "--set",
                "RETRY_BASE_DELAY_S=0.01",
                "--set",
                "MIN_SUCCESS_RATE=0",
            ]
        )
        outputs += [result.output]
        envelope = tmp_path / "envelope"
        result = run(
            ["dry-run", "--inventory", str(LOWER5), "--judge", str(judge), "-o", str(envelope)]
        )
        outputs += [result.output]
    batch = query(db, "SELECT id FROM batches")[0][0]
    for name in ("summary", "fairness", "coverage", "ranking", "grades"):
        for fmt in ("table", "json", "csv"):
            out = report([name, batch, "--db", str(db), "--format", fmt])
            outputs.append(out.output)
    errors = query(db, "SELECT error_message FROM comparisons WHERE error_message IS NOT NULL")
    assert any("401" in e[0] or "auth" in e[0].lower() for e in errors)
    assert all(PLANTED_KEY not in out for out in outputs)
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path


def test_differently_configured_mocks_never_share_cached_answers(tmp_path: Path) -> None:
    db = tmp_path / "cj.db"
    args = ["--inventory", str(LOWER5), "--profile", "mock_lower5"]
    first = execute(db, args)
    assert first["status"] == "COMPLETED" and first["cache_hits"] == 0
    again = execute(db, args)
    assert again["cache_hits"] == 40  # the same mock: answers are reused
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {
                "settings": {"MAX_PAIRWISE_COMPARISONS": 20, "USE_ANCHORS": False},
                "judge": {"kind": "mock", "model": "mock-judge-1", "errors": {"refused": 1.0}},
            }
        ),
        encoding="utf-8",
    )
    s = execute(db, ["--inventory", str(LOWER5), "--profile", str(broken)])
    assert s["cache_hits"] == 0
    assert s["status"] == "FAILED" and s["stop_reason"] == "success_rate"
