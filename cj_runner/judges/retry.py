"""Retry policy for judge calls: which errors to retry, and how long to wait in between.

Judges never retry; the executor owns the loop and the budget (every attempt counts)::

    for attempt in itertools.count(1):
        try:
            verdict = await judge.judge(replace(request, attempt=attempt))
            break
        except JudgeError as error:
            if not should_retry(policy, attempt, error):
                raise  # store as failed
            await sleep_before_retry(policy, attempt, error, rng)

The wait before attempt ``n + 1`` is ``min(max_delay_s, base_delay_s * 2 ** (n - 1))``
shrunk by a random share of up to ``jitter`` (so concurrent callers spread out), and never
less than the wait the server asked for (``retry_after`` of any
:class:`~cj_runner.errors.JudgeError`, capped at ``max_retry_after_s``). This module is
the only place that sleeps between attempts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cj_runner.errors import JudgeError

SleepFn = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed judge call is tried again.

    Attributes:
        max_attempts: attempts per comparison, the first included (1 = never retry).
        base_delay_s: wait before the second attempt, doubled for each further one.
        max_delay_s: upper bound of the exponential wait.
        jitter: share (0..1) by which a wait is randomly shortened.
        max_retry_after_s: upper bound on a server's ``Retry-After``.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.5
    max_retry_after_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("delays must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")


def should_retry(policy: RetryPolicy, attempt: int, error: JudgeError) -> bool:
    """Whether attempt number ``attempt`` (1 = first), which failed with ``error``, is
    followed by another: only transient errors, and only below ``max_attempts``."""
    return error.transient and attempt < policy.max_attempts


def retry_delay(policy: RetryPolicy, attempt: int, error: JudgeError, rng: random.Random) -> float:
    """Seconds to wait after attempt ``attempt`` (1 = first) failed with ``error``.

    Exponential backoff with jitter; the wait the provider asked for (an error's
    ``retry_after``: ``retry-after``, ``retry-after-ms``, ``x-ratelimit-reset-*``) is a
    lower bound (capped at ``policy.max_retry_after_s``).
    """
    exponent = max(0, attempt - 1)
    # Bound the exponent so huge attempt numbers cannot overflow a float.
    backoff = min(policy.max_delay_s, policy.base_delay_s * (2.0 ** min(exponent, 60)))
    delay = backoff * (1.0 - policy.jitter * rng.random())
    if error.retry_after is not None:  # the provider said how long (429, 503, 529...)
        delay = max(delay, min(max(0.0, error.retry_after), policy.max_retry_after_s))
    return delay


async def sleep_before_retry(
    policy: RetryPolicy,
    attempt: int,
    error: JudgeError,
    rng: random.Random,
    sleep: SleepFn = asyncio.sleep,
) -> None:
    """Sleep :func:`retry_delay` seconds (nothing at all when the delay is zero)."""
    delay = retry_delay(policy, attempt, error, rng)
    if delay > 0:
        await sleep(delay)
