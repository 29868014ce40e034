"""Batch-API mode's calls to a provider's batch endpoints (upload, create, poll, results):
tried again on transient failures and on a 404 about a stored job, stopping the run
(resumable) on a fatal answer; the waits between them. :class:`EndpointCalls` is the part
of :class:`cj_runner.services.batch_jobs.JobRunner` that does this."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from cj_runner.errors import JudgeError, JudgeUnavailable
from cj_runner.judges.batch_api import UNKNOWN_JOB
from cj_runner.judges.retry import RetryPolicy, SleepFn

__all__ = [
    "ACCOUNT_REFUSALS",
    "ENDPOINT_ATTEMPTS",
    "FIRST_POLL_S",
    "UNKNOWN_JOB_ATTEMPTS",
    "UNKNOWN_JOB_FIRST_WAIT_S",
    "EndpointCalls",
    "poll_wait",
]

#: Attempts at one batch-endpoint call (upload, create, poll) that fails transiently
#: before the run stops (INTERRUPTED; a resume goes on where it stopped).
ENDPOINT_ATTEMPTS = 6

#: Errors of a batch endpoint that make the judge unusable (the account is refused): the
#: run stops at once and sends nothing more. Other fatal answers there (an unknown job, a
#: request the endpoint cannot read) only stop the run (resumable).
ACCOUNT_REFUSALS = frozenset({"auth", "permission", "quota"})

#: Requests of a stored job's status or results the provider may answer 404 (it does not
#: know the job: reported for a short while after a job is created) before the run stops
#: (INTERRUPTED, resumable); the waits in between double from UNKNOWN_JOB_FIRST_WAIT_S
#: (capped at RETRY_MAX_DELAY_S): 2 + 4 + 8 + 16 s by default.
UNKNOWN_JOB_ATTEMPTS = 5
UNKNOWN_JOB_FIRST_WAIT_S = 2.0

#: The wait before the second status request of a job; it doubles up to ``batch_poll_s``.
FIRST_POLL_S = 0.5


def poll_wait(poll_s: float, polls: int) -> float:
    """The wait after a job's ``polls``-th status request that found it running (0 = the
    first): ``FIRST_POLL_S`` doubling up to ``poll_s``. (The exponent is bounded: a job
    polled a thousand times, e.g. 9 hours at 30 s, must not overflow a float.)"""
    return min(poll_s, FIRST_POLL_S * 2.0 ** min(polls, 60))


class EndpointCalls:
    """Batch-endpoint calls with their retries and waits (the runner sets the attributes)."""

    retry_policy: RetryPolicy
    stop_event: asyncio.Event
    sleep: SleepFn
    on_progress: Callable[[str], None]
    #: the error that made the judge unusable; set, no new job is sent
    fatal: JudgeError | None
    #: set when the batch endpoints kept failing: the run stops (resumable)
    stalled: str | None
    #: set when the run stopped because the provider does not know a stored job: the
    #: number of calls in that job (they stay ``sent``)
    unknown_job_calls: int | None

    def _stopping(self) -> bool:
        return self.stop_event.is_set() or self.stalled is not None

    async def _endpoint(self, call: Callable[[], Any], what: str, *, job_calls: int = 0) -> Any:
        """Run one batch-endpoint call; transient failures are tried again (a few times,
        waiting as the retry policy says); a 404 about a stored job (``unknown_job``: the
        provider may not know a job it has just created) is asked again a few times too;
        a fatal one stops the run (and the judge, when the account is refused).
        ``job_calls``: the calls held in the job the request is about (for the stop line
        when the provider does not know it)."""
        failures = unknown = 0
        while not self._stopping():
            try:
                return await call()
            except JudgeUnavailable as error:
                if error.kind == UNKNOWN_JOB and unknown < UNKNOWN_JOB_ATTEMPTS - 1:
                    unknown += 1
                    self.on_progress(f"{what}: {error.message}; asking again")
                    await self._backoff(
                        min(
                            self.retry_policy.max_delay_s,
                            UNKNOWN_JOB_FIRST_WAIT_S * 2.0 ** (unknown - 1),
                        )
                    )
                    continue
                # a job may be running and paid for: stop (resumable), never finalize here
                if error.kind in ACCOUNT_REFUSALS and self.fatal is None:
                    # the judge turned unusable (a revoked key, no credit): nothing more
                    # is sent; calls in jobs that have not ended stay ``sent``
                    # (_end_for_unusable_judge)
                    self.fatal = error
                tries = ""
                if error.kind == UNKNOWN_JOB:
                    tries = f" ({unknown + 1} times)"
                    self.unknown_job_calls = job_calls
                self.stalled = f"{what}: {error.message}{tries}"
                return None
            except JudgeError as error:
                failures += 1
                self.on_progress(f"{what} failed ({error.message}); trying again")
                if failures == ENDPOINT_ATTEMPTS:
                    self.stalled = f"{what}: {error.message}"
                    return None
                wait = error.retry_after if error.retry_after is not None else 2.0**failures
                await self._backoff(min(wait, self.retry_policy.max_delay_s))
        return None

    async def _backoff(self, seconds: float) -> None:
        """Wait ``seconds`` before asking a batch endpoint again (through the injected
        ``sleep``: tests wait no real time), or until the run stops."""
        if seconds <= 0:
            return
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        stopping = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, stopping):
                task.cancel()

    async def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` or until the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=max(seconds, 0.0))
