"""Both HTTP judges end to end against a real MockJudgeServer on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from cj_runner.errors import (
    FatalJudgeError,
    JudgeError,
    JudgeUnavailable,
    RateLimited,
    RequestRefused,
    TransientJudgeError,
)
from cj_runner.judges.anthropic import AnthropicJudge
from cj_runner.judges.base import Judge, JudgeRequest, Verdict
from cj_runner.judges.config import ErrorRates, JudgeConfig
from cj_runner.judges.openai_compat import OpenAICompatJudge
from cj_runner.judges.ratelimit import Limiter
from cj_runner.judges.registry import build_judge, judge_prompt_template
from cj_runner.judges.retry import RetryPolicy, should_retry, sleep_before_retry
from cj_runner.judges.server import Fault, FaultScript, MockJudgeServer

from .conftest import make_essay, make_request, past_the_deadline

StartServer = Callable[..., MockJudgeServer]
APIS = ["openai_compatible", "anthropic"]


def client_for(server: MockJudgeServer, kind: str, **fields: Any) -> Judge:
    config = JudgeConfig(
        kind=kind, name=f"{kind}-test", model="local-model", base_url=server.url, **fields
    )
    return build_judge(config, env={})


async def run_with_retries(
    judge: Judge, request: JudgeRequest, policy: RetryPolicy, sleeps: list[float]
) -> Verdict:
    """What the executor does: retry transient errors with the policy's waits."""

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    attempt = 1
    while True:
        try:
            return await judge.judge(replace(request, attempt=attempt))
        except JudgeError as error:
            if not should_retry(policy, attempt, error):
                raise
            await sleep_before_retry(policy, attempt, error, random.Random(0), record)
            attempt += 1


@pytest.mark.parametrize("kind", APIS)
async def test_success_with_usage(start_server: StartServer, kind: str) -> None:
    server = start_server()
    judge = client_for(server, kind)
    verdict = await judge.judge(make_request())
    assert verdict.winner in ("A", "B") and 1 <= verdict.confidence <= 5
    assert verdict.tokens_in > 50 and verdict.tokens_out > 5
    assert verdict.justification
    path = "/v1/chat/completions" if kind == "openai_compatible" else "/v1/messages"
    assert server.requests_seen[path] == 1
    body = server.requests[-1].body
    assert ("response_format" in body) if kind == "openai_compatible" else ("tools" in body)
    await judge.aclose()


@pytest.mark.parametrize("kind", APIS)
async def test_served_mock_follows_latents(start_server: StartServer, kind: str) -> None:
    strong, weak = make_essay("s", "Strong essay text."), make_essay("w", "Weak essay text.")
    latents = {strong.checksum: 3.0, weak.checksum: -3.0}
    server = start_server(JudgeConfig(seed=4), latent_by_checksum=latents)
    judge = client_for(server, kind)
    verdicts = [await judge.judge(make_request(strong, weak)) for _ in range(8)]
    verdicts += [await judge.judge(make_request(weak, strong)) for _ in range(8)]
    assert [v.winner for v in verdicts[:8]].count("A") >= 7
    assert [v.winner for v in verdicts[8:]].count("B") >= 7
    assert hashlib.sha256(strong.text.encode()).hexdigest() == strong.checksum
    await judge.aclose()


@pytest.mark.parametrize("kind", APIS)
async def test_429_retry_after_is_honoured(start_server: StartServer, kind: str) -> None:
    server = start_server(faults=FaultScript.first(2, Fault("rate_limit", retry_after="1")))
    judge = client_for(server, kind)
    with pytest.raises(RateLimited) as info:
        await judge.judge(make_request())
    assert info.value.retry_after == 1.0
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.01, jitter=0.0)
    verdict = await run_with_retries(judge, make_request(), policy, sleeps)
    assert verdict.winner in ("A", "B")
    assert sleeps == [1.0]  # the second 429 asked for 1 s, above the 0.01 s backoff
    assert server.judge_requests == 3
    await judge.aclose()


@pytest.mark.parametrize("kind", APIS)
async def test_500_burst_then_success(start_server: StartServer, kind: str) -> None:
    server = start_server(faults=FaultScript.first(2, Fault("server_error", status=503)))
    judge = client_for(server, kind)
    sleeps: list[float] = []
    verdict = await run_with_retries(
        judge, make_request(), RetryPolicy(max_attempts=3, base_delay_s=0.01), sleeps
    )
    assert verdict.winner in ("A", "B")
    assert len(sleeps) == 2 and server.judge_requests == 3
    await judge.aclose()


@pytest.mark.parametrize("kind", APIS)
async def test_retries_exhausted_raise_last_error(start_server: StartServer, kind: str) -> None:
    server = start_server(faults=FaultScript.always(Fault("server_error")))
    judge = client_for(server, kind)
    with pytest.raises(TransientJudgeError) as info:
        await run_with_retries(
            judge, make_request(), RetryPolicy(max_attempts=3, base_delay_s=0), []
        )
    assert info.value.kind == "server_error"
    assert server.judge_requests == 3
    await judge.aclose()


@pytest.mark.parametrize("kind", APIS)
async def test_client_timeout(
    start_server: StartServer, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that never answers: the whole-call deadline fires. No race with the
    machine's speed: the server holds the request until it stops, and once it holds it
    the test moves the event loop's clock past the 60 s deadline instead of waiting."""
    server = start_server(faults=FaultScript([Fault("delay", delay_s=3600.0)]))
    judge = client_for(server, kind, timeout_s=60.0)
    with pytest.raises(TransientJudgeError) as info:
        await past_the_deadline(server, judge.judge(make_request()), 60.0, monkeypatch)
    assert info.value.kind == "timeout"
    # The next call (no fault scripted) succeeds on a fresh connection, within its 60 s.
    assert (await judge.judge(make_request())).winner in ("A", "B")
    assert server.judge_requests == 2
    await judge.aclose()


FAULTS: list[tuple[Fault, type[JudgeError], str]] = [
    (Fault("malformed_body"), TransientJudgeError, "malformed"),
    (Fault("malformed_answer"), TransientJudgeError, "malformed"),
    (Fault("empty_answer"), TransientJudgeError, "malformed"),
    (Fault("refusal"), FatalJudgeError, "refused"),
    (Fault("close"), TransientJudgeError, "connection"),
    (Fault("status", status=401), JudgeUnavailable, "auth"),
    (Fault("status", status=400), JudgeUnavailable, "bad_request"),
    (Fault("status", status=529), TransientJudgeError, "server_error"),
]


@pytest.mark.parametrize("kind", APIS)
@pytest.mark.parametrize(
    ("fault", "error_type", "error_kind"),
    FAULTS,
    ids=[f"{f[0].kind}{f[0].status or ''}" for f in FAULTS],
)
async def test_scripted_faults(
    start_server: StartServer,
    kind: str,
    fault: Fault,
    error_type: type[JudgeError],
    error_kind: str,
) -> None:
    server = start_server(faults=FaultScript([fault]))
    judge = client_for(server, kind)
    with pytest.raises(error_type) as info:
        await judge.judge(make_request())
    assert info.value.kind == error_kind
    assert type(info.value) is error_type
    # Normal service afterwards, on the same client.
    assert (await judge.judge(make_request())).winner in ("A", "B")
    assert server.judge_requests == 2
    await judge.aclose()


@pytest.mark.parametrize(
    ("rates", "error_type", "error_kind"),
    [
        (ErrorRates(timeout=1.0), TransientJudgeError, "timeout"),
        (ErrorRates(rate_limit=1.0), RateLimited, "rate_limit"),
        (ErrorRates(server_error=1.0), TransientJudgeError, "server_error"),
        (ErrorRates(malformed=1.0), TransientJudgeError, "malformed"),
        (ErrorRates(refused=1.0), FatalJudgeError, "refused"),
    ],
)
@pytest.mark.parametrize("kind", APIS)
async def test_served_mock_error_rates(
    start_server: StartServer,
    kind: str,
    rates: ErrorRates,
    error_type: type[JudgeError],
    error_kind: str,
) -> None:
    server = start_server(JudgeConfig(errors=rates))
    judge = client_for(server, kind)
    with pytest.raises(error_type) as info:
        await judge.judge(make_request())
    assert info.value.kind == error_kind
    await judge.aclose()


async def test_structured_output_fallback_against_server(start_server: StartServer) -> None:
    server = start_server(faults=FaultScript(reject_response_format=True))
    judge = client_for(server, "openai_compatible")
    for _ in range(2):  # json_schema, then json_object: each one request, refused
        with pytest.raises(RequestRefused):
            await judge.judge(make_request())
    for _ in range(3):
        assert (await judge.judge(make_request())).winner in ("A", "B")
    bodies = [r.body for r in server.requests]
    assert ["response_format" in b for b in bodies] == [True, True, False, False, False]
    await judge.aclose()


@pytest.mark.parametrize("kind", APIS)
async def test_server_checks_the_key(start_server: StartServer, kind: str) -> None:
    server = start_server(api_key="right-key")
    config = JudgeConfig(kind=kind, base_url=server.url, api_key_env="K")
    wrong = build_judge(config, env={"K": "wrong-key"})
    with pytest.raises(FatalJudgeError) as info:
        await wrong.judge(make_request())
    assert info.value.kind == "auth"
    right = build_judge(config, env={"K": "right-key"})
    assert (await right.judge(make_request())).winner in ("A", "B")
    await wrong.aclose()
    await right.aclose()


async def test_connection_refused_is_transient() -> None:
    server = MockJudgeServer(JudgeConfig())
    url = server.url
    server.stop()  # the port is closed now
    judge = build_judge(JudgeConfig(kind="openai_compatible", base_url=url), env={})
    with pytest.raises(TransientJudgeError) as info:
        await judge.judge(make_request())
    assert info.value.kind == "connection"
    await judge.aclose()


class _VirtualTime:
    """A clock shared by a judge's rate limiter and the server, and the limiter's sleep.

    Time moves only when the limiter sleeps, and a sleep first waits (a rendezvous, not a
    deadline) until every request the limiter has let through has reached the server, so
    the server stamps each request with the moment the limiter released it, however slow
    the machine is.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.released = 0
        self.server: MockJudgeServer | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert self.server is not None
        while self.server.judge_requests < self.released:
            await asyncio.sleep(0.001)
        self.now += seconds


class _CountingLimiter:
    """Wraps a judge's own limiter and counts the requests it let through."""

    def __init__(self, inner: Limiter, time: _VirtualTime) -> None:
        self.inner, self.time = inner, time

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    async def acquire(self, tokens: int) -> float:
        waited = await self.inner.acquire(tokens)
        self.time.released += 1
        return waited


@pytest.mark.parametrize("kind", APIS)
async def test_rate_limit_counted_at_the_server(start_server: StartServer, kind: str) -> None:
    """1200 requests per minute (20 per second, a burst of 20): 40 concurrent calls reach
    the server as the bucket allows, 20 at once, then one every 0.05 s."""
    vtime = _VirtualTime()
    server = vtime.server = start_server(clock=vtime.clock)
    config = JudgeConfig(
        kind=kind,
        name=f"{kind}-test",
        model="local-model",
        base_url=server.url,
        requests_per_minute=1200,
        max_connections=8,
    )
    judge_class = OpenAICompatJudge if kind == "openai_compatible" else AnthropicJudge
    judge = judge_class(
        config,
        api_key=None,
        template=judge_prompt_template(config),
        sleep=vtime.sleep,
        clock=vtime.clock,
    )
    judge.use_limiter(_CountingLimiter(judge._limiter, vtime))
    n = 40
    await asyncio.gather(*(judge.judge(make_request(repeat_index=i)) for i in range(n)))
    times = sorted(server.request_times)
    assert len(times) == n
    assert times[:20] == [0.0] * 20
    assert times[20:] == pytest.approx([0.05 * k for k in range(1, 21)])
    assert server.max_requests_in_window(0.5) == 20 + 9  # t = 0 .. 0.45
    assert server.max_requests_in_window(100.0) == n
    await judge.aclose()


async def test_many_concurrent_calls_share_a_small_pool(start_server: StartServer) -> None:
    server = start_server(JudgeConfig(seed=2))
    judge = client_for(server, "openai_compatible", max_connections=3)
    essays = [make_essay(f"e{i}") for i in range(8)]
    requests = [make_request(a, b) for a in essays for b in essays if a is not b]
    verdicts = await asyncio.gather(*(judge.judge(r) for r in requests))
    assert len(verdicts) == len(requests) == server.judge_requests
    await judge.aclose()


def test_server_misc_routes(start_server: StartServer) -> None:
    server = start_server(JudgeConfig(model="served"))
    with httpx.Client(base_url=server.root_url) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "served"
        assert client.get("/health").json() == {"status": "ok"}
        assert client.post("/v1/nothing", json={}).status_code == 404
        assert client.post("/v1/chat/completions", content=b"{nope").status_code == 400
        # a prompt that is not the runner's template still gets an answer
        missing_blocks = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        response = client.post("/v1/chat/completions", json=missing_blocks)
        assert response.status_code == 200 and '"winner' in response.text
        no_version = client.post("/v1/messages", json={**missing_blocks, "max_tokens": 5})
        assert no_version.status_code == 400 and "anthropic-version" in no_version.text
    assert server.requests_seen["/v1/models"] == 1
    assert server.judge_requests == 3
