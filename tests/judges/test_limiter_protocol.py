"""A judge waits on the limiter it is given (a rate limit shared by several workers)
instead of its own in-process buckets."""

from __future__ import annotations

from collections.abc import Callable

from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.ratelimit import Limiter, RateLimiter
from cj_runner.judges.registry import build_judge
from cj_runner.judges.server import MockJudgeServer

from .conftest import make_request


class CountingLimiter:
    """Records every request's token estimate; never waits."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    @property
    def enabled(self) -> bool:
        return True

    async def acquire(self, tokens: int) -> float:
        self.asked.append(tokens)
        return 0.0


async def test_each_request_waits_on_the_given_limiter(
    start_server: Callable[..., MockJudgeServer],
) -> None:
    server = start_server()
    limiter = CountingLimiter()
    assert isinstance(limiter, Limiter) and isinstance(RateLimiter(60), Limiter)
    for kind in ("openai_compatible", "anthropic"):
        config = JudgeConfig(
            kind=kind, name=kind, model="local-model", base_url=server.url,
            requests_per_minute=1,  # the judge's own bucket would make the 2nd call wait 60 s
        )  # fmt: skip
        judge = build_judge(config, env={}, limiter=limiter)
        for _ in range(2):
            await judge.judge(make_request())
        await judge.aclose()
    assert len(limiter.asked) == 4 == server.judge_requests
    assert all(tokens > 50 for tokens in limiter.asked)
