"""Rate limits shared by every worker on one PostgreSQL database: token buckets in rows.

Each bucket (requests per minute, or tokens per minute, of one provider model) is a row
of ``rate_buckets``: its level, refill rate, capacity and the time of its last update
on the *database's* clock, so workers on machines whose clocks disagree still share one
bucket. Taking from it is one ``UPDATE ... RETURNING`` that refills the level for the time
passed and subtracts the amount; PostgreSQL runs concurrent updates of a row one after
the other, so no two workers take the same units. The level may go below zero: a worker
that finds too little reserves its units anyway and sleeps until the bucket would have
held them, so waiters are served in the order they asked and one database round trip
per request is enough. Like the in-process bucket (:mod:`cj_runner.judges.ratelimit`),
a request larger than the bucket goes when the bucket is full and leaves it in debt.

The judges only see the small :class:`cj_runner.judges.ratelimit.Limiter` protocol that
:class:`SharedRateLimiter` satisfies; the services decide which limiter a judge gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from cj_runner.errors import ConfigError
from cj_runner.storage.engine import Store

SleepFn = Callable[[float], Awaitable[None]]

_NOW = "extract(epoch from clock_timestamp())::double precision"

_CREATE = text(
    f"""
    INSERT INTO rate_buckets (key, rate_per_s, capacity, level, stamp)
    VALUES (:key, :rate, :capacity, :capacity, {_NOW})
    ON CONFLICT (key) DO UPDATE
    SET rate_per_s = excluded.rate_per_s, capacity = excluded.capacity
    """
)

# refill for the time passed (never backwards), cap at the capacity, take the amount
_TAKE = text(
    f"""
    UPDATE rate_buckets
    SET level = least(capacity, level + greatest(0, {_NOW} - stamp) * rate_per_s) - :amount,
        stamp = greatest(stamp, {_NOW})
    WHERE key = :key
    RETURNING level, rate_per_s, capacity
    """
)


class SharedRateLimiter:
    """Requests and tokens per minute shared through the database (PostgreSQL).

    ``key`` names the provider limit (e.g. endpoint and model); every limiter built with
    the same key on the same database draws from the same buckets.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        burst_s: float = 1.0,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        if store.dialect != "postgresql":
            raise ConfigError("a shared rate limit needs a PostgreSQL database")
        self._store = store
        self._sleep = sleep
        self._buckets: list[tuple[str, float, float]] = []  # key, rate per s, capacity
        for kind, per_minute in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
            if per_minute:
                rate = per_minute / 60.0
                self._buckets.append((f"{key}|{kind}", rate, max(1.0, rate * burst_s)))
        self._ready = False

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return bool(self._buckets)

    @property
    def capacities(self) -> dict[str, float]:
        """Each bucket's capacity (its burst), by bucket key."""
        return {key: capacity for key, _, capacity in self._buckets}

    async def _create(self) -> None:
        async with self._store.engine.begin() as conn:
            for key, rate, capacity in self._buckets:
                await conn.execute(_CREATE, {"key": key, "rate": rate, "capacity": capacity})
        self._ready = True

    async def reserve(self, tokens: int) -> float:
        """Take one request of ``tokens`` tokens from the buckets now; returns how many
        seconds to wait before sending it."""
        if not self._buckets:
            return 0.0
        if not self._ready:
            await self._create()
        wait = 0.0
        async with self._store.engine.begin() as conn:
            # always the same order of rows, so two workers never deadlock
            for key, _, _ in self._buckets:
                amount = 1.0 if key.endswith("|requests") else float(tokens)
                row = (await conn.execute(_TAKE, {"key": key, "amount": amount})).one()
                before = float(row.level) + amount
                need = min(amount, float(row.capacity))
                wait = max(wait, (need - before) / float(row.rate_per_s))
        return max(0.0, wait)

    async def acquire(self, tokens: int) -> float:
        """Wait until one request of ``tokens`` tokens may be sent; returns seconds waited."""
        wait = await self.reserve(tokens)
        if wait > 0:
            await self._sleep(wait)
        return wait
