"""Client-side rate limits: async token buckets for requests and tokens per minute.

Each bucket refills continuously at ``per_minute / 60`` units per second and holds at
most ``burst_s`` seconds' worth (at least one unit), so requests are spread evenly rather
than fired in a burst of a whole minute's allowance. A single request larger than the
bucket is let through when the bucket is full and leaves it in debt, so the long-run rate
is still respected. Waiters are served first come, first served. Time and sleep are
injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

ClockFn = Callable[[], float]
SleepFn = Callable[[float], Awaitable[None]]
_EPSILON = 1e-9


@runtime_checkable
class Limiter(Protocol):
    """What a judge needs from a rate limit: wait before each request.

    :class:`RateLimiter` is the in-process one; a limiter shared by several processes
    (``cj_runner.storage.ratelimit``) is given to a judge by the services.
    """

    @property
    def enabled(self) -> bool: ...

    async def acquire(self, tokens: int) -> float: ...


class TokenBucket:
    """A token bucket refilled at ``rate_per_s`` with room for ``capacity`` units."""

    def __init__(
        self,
        rate_per_s: float,
        capacity: float,
        *,
        clock: ClockFn = time.monotonic,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be > 0")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._level = capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` units, waiting until they are there; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                # within rounding of ``need`` is enough: a refill of exactly the delay
                # asked for can land a hair short (0.05 s x 20/s = 0.9999...)
                if self._level >= need - _EPSILON:
                    self._level -= amount
                    return waited
                delay = (need - self._level) / self.rate_per_s
                waited += delay
                await self._sleep(delay)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits of one judge (either may be off)."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        burst_s: float = 1.0,
        clock: ClockFn = time.monotonic,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        if requests_per_minute:
            rate = requests_per_minute / 60.0
            self.requests = TokenBucket(rate, max(1.0, rate * burst_s), clock=clock, sleep=sleep)
        if tokens_per_minute:
            rate = tokens_per_minute / 60.0
            self.tokens = TokenBucket(rate, max(1.0, rate * burst_s), clock=clock, sleep=sleep)

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.requests is not None or self.tokens is not None

    async def acquire(self, tokens: int) -> float:
        """Wait until one request of ``tokens`` tokens may be sent; returns seconds waited."""
        waited = 0.0
        if self.requests is not None:
            waited += await self.requests.acquire(1.0)
        if self.tokens is not None:
            waited += await self.tokens.acquire(float(tokens))
        return waited
