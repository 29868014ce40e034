"""Retry policy helpers and the client-side rate limiter (fake time)."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cj_runner.errors import FatalJudgeError, RateLimited, TransientJudgeError
from cj_runner.judges.ratelimit import RateLimiter, TokenBucket
from cj_runner.judges.retry import RetryPolicy, retry_delay, should_retry, sleep_before_retry


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_backoff_doubles_and_caps_without_jitter() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=3.0, jitter=0.0)
    rng = random.Random(0)
    error = TransientJudgeError("server_error")
    delays = [retry_delay(policy, n, error, rng) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert retry_delay(policy, 10_000, error, rng) == 3.0


@given(st.integers(1, 50), st.floats(0.0, 1.0), st.integers(0, 2**32))
def test_jitter_only_shortens(attempt: int, jitter: float, seed: int) -> None:
    policy = RetryPolicy(base_delay_s=0.25, max_delay_s=10.0, jitter=jitter)
    full = min(10.0, 0.25 * 2 ** (attempt - 1))
    delay = retry_delay(policy, attempt, TransientJudgeError("timeout"), random.Random(seed))
    assert full * (1 - jitter) - 1e-12 <= delay <= full + 1e-12


def test_jitter_spreads_delays() -> None:
    policy = RetryPolicy(base_delay_s=1.0, jitter=0.5)
    rng = random.Random(1)
    delays = {
        round(retry_delay(policy, 1, TransientJudgeError("timeout"), rng), 6) for _ in range(20)
    }
    assert len(delays) > 10


def test_retry_after_is_a_floor_and_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.1, jitter=0.0, max_retry_after_s=60)
    rng = random.Random(0)
    assert retry_delay(policy, 1, RateLimited(retry_after=7.5), rng) == 7.5
    assert retry_delay(policy, 1, RateLimited(retry_after=None), rng) == 0.1
    assert retry_delay(policy, 1, RateLimited(retry_after=0.0), rng) == 0.1
    assert retry_delay(policy, 1, RateLimited(retry_after=3600), rng) == 60
    assert retry_delay(policy, 8, RateLimited(retry_after=1.0), rng) == pytest.approx(12.8)


def test_should_retry() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert should_retry(policy, 1, TransientJudgeError("malformed"))
    assert should_retry(policy, 2, RateLimited())
    assert not should_retry(policy, 3, TransientJudgeError("timeout"))
    assert not should_retry(policy, 1, FatalJudgeError("refused"))
    assert not should_retry(RetryPolicy(max_attempts=1), 1, TransientJudgeError("timeout"))


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


async def test_sleep_before_retry_uses_injected_sleep() -> None:
    fake = FakeTime()
    policy = RetryPolicy(base_delay_s=0.0, jitter=0.0)
    await sleep_before_retry(
        policy, 1, TransientJudgeError("timeout"), random.Random(0), fake.sleep
    )
    assert fake.sleeps == []  # a zero delay does not sleep at all
    await sleep_before_retry(policy, 1, RateLimited(retry_after=2), random.Random(0), fake.sleep)
    assert fake.sleeps == [2]


async def test_request_bucket_spreads_requests() -> None:
    fake = FakeTime()
    limiter = RateLimiter(requests_per_minute=120, clock=fake.clock, sleep=fake.sleep)
    stamps = []
    for _ in range(21):
        await limiter.acquire(10)
        stamps.append(fake.now)
    # 2 requests/s, a burst of 2, then one every 0.5 s.
    assert stamps[:2] == [0.0, 0.0]
    assert stamps[-1] == pytest.approx(9.5)
    for window_start in [x * 0.25 for x in range(40)]:
        inside = [t for t in stamps if window_start <= t < window_start + 1.0]
        assert len(inside) <= 2 + 2


async def test_concurrent_waiters_respect_the_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(requests_per_minute=60, clock=fake.clock, sleep=fake.sleep)
    stamps: list[float] = []

    async def one() -> None:
        await limiter.acquire(1)
        stamps.append(fake.now)

    await asyncio.gather(*(one() for _ in range(10)))
    assert sorted(stamps) == pytest.approx([float(i) for i in range(10)])


async def test_token_bucket_limits_tokens_and_allows_oversized_requests() -> None:
    fake = FakeTime()
    limiter = RateLimiter(tokens_per_minute=6000, clock=fake.clock, sleep=fake.sleep)  # 100/s
    await limiter.acquire(100)
    assert fake.now == 0.0
    await limiter.acquire(50)
    assert fake.now == pytest.approx(0.5)
    # Larger than the bucket: goes once the bucket is full, leaving a debt.
    await limiter.acquire(1000)
    assert fake.now == pytest.approx(1.5)
    await limiter.acquire(100)
    assert fake.now == pytest.approx(1.5 + 10.0)
    assert not RateLimiter().enabled


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
