"""A queue worker: claim a queued batch, run it through the executor, take the next.

Several workers (on several machines) share one queue on PostgreSQL; on SQLite one worker
at a time. A worker beats its claim (and the batch's run lock) every third of the stale
timeout; a batch whose worker stopped beating for the whole timeout is taken over by
another worker and resumed where it stopped (:mod:`cj_runner.storage.queue`). Without
``follow`` a worker stops when no batch is queued and no claimed batch is unfinished: it
waits while other workers run, so it can take over from one that dies.

With a PostgreSQL database and a judge profile that sets ``requests_per_minute`` or
``tokens_per_minute``, every worker waits on the same buckets in the database
(:class:`~cj_runner.storage.ratelimit.SharedRateLimiter`), keyed by endpoint and model, so
the workers together stay under the provider's limit. On SQLite each judge keeps its
in-process limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from cj_runner.errors import BatchLockedError, UserError
from cj_runner.judges.config import JudgeConfig
from cj_runner.judges.ratelimit import Limiter
from cj_runner.judges.registry import open_judge
from cj_runner.services.batches import batch_context, stored_executor, stored_judge_config
from cj_runner.services.executor import BatchExecutor, RunResult
from cj_runner.storage import Store, queue
from cj_runner.storage import repository as repo
from cj_runner.storage.ratelimit import SharedRateLimiter

DEFAULT_STALE_S = repo.LOCK_STALE_AFTER.total_seconds()
DEFAULT_POLL_S = 2.0


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs (the ``cj-run worker`` options)."""

    cohort: str | None = None
    follow: bool = False
    poll_s: float = DEFAULT_POLL_S
    stale_after_s: float = DEFAULT_STALE_S
    use_cache: bool = True
    max_batches: int | None = None


@dataclass
class WorkerResult:
    """What a worker did: (batch id, final status) per batch it ran, in order."""

    worker: str
    batches: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False


Notify = Callable[[str], None]


class JudgeStopped(UserError):
    """A batch stopped at once because its judge could not be reached or refused the
    account (:attr:`RunResult.unreachable`): the worker gave the batch back and stops
    (exit 2) with the line ``cj-run`` prints."""


def new_worker_id() -> str:
    """``host:pid:token``, the form the executor's lock owners have."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def limit_key(config: JudgeConfig) -> str:
    """The provider limit a judge draws from: its API kind, endpoint and model."""
    return f"{config.kind}|{config.effective_base_url or ''}|{config.model}"


class _Limiters:
    """One shared limiter per provider limit (PostgreSQL only; ``None`` elsewhere)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_key: dict[str, SharedRateLimiter] = {}

    def for_judge(self, config: JudgeConfig) -> Limiter | None:
        if self.store.dialect != "postgresql" or config.kind == "mock":
            return None
        if not (config.requests_per_minute or config.tokens_per_minute):
            return None
        key = limit_key(config)
        if key not in self._by_key:
            self._by_key[key] = SharedRateLimiter(
                self.store, key, config.requests_per_minute, config.tokens_per_minute
            )
        return self._by_key[key]


async def run_queued_batch(
    store: Store,
    batch_id: str,
    *,
    stop_event: asyncio.Event,
    limiter: Limiter | None = None,
    use_cache: bool = True,
    on_executor: Callable[[BatchExecutor], None] | None = None,
) -> RunResult:
    """Run one batch through the executor, as ``cj-run resume`` does, with ``limiter`` as
    the judge's rate limit when given."""
    context = await batch_context(store, batch_id)
    batch = context["batch"]
    config = stored_judge_config(batch)
    # batch-API mode as with cj-run execute/resume: a job's calls are never asked again
    # one by one (that would pay them twice)
    async with open_judge(config, limiter=limiter) as (judge, batch_api):
        executor = stored_executor(
            store,
            context,
            judge,
            use_cache=use_cache,
            stop_event=stop_event,
            batch_api=batch_api,
            batch_poll_s=config.batch_poll_s,
        )
        if on_executor is not None:
            on_executor(executor)
        return await executor.run()


class Worker:
    """Drains the queue (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        options: WorkerOptions,
        *,
        stop_event: asyncio.Event | None = None,
        notify: Notify | None = None,
        worker_id: str | None = None,
    ) -> None:
        if options.stale_after_s <= 0 or options.poll_s <= 0:
            raise UserError("--stale-after and --poll must be above 0 seconds")
        self.store = store
        self.options = options
        self.stop_event = stop_event or asyncio.Event()
        self.notify = notify or (lambda _message: None)
        self.result = WorkerResult(worker_id or new_worker_id())
        self.limiters = _Limiters(store)

    @property
    def worker_id(self) -> str:
        return self.result.worker

    async def run(self) -> WorkerResult:
        """Take batches until the queue is drained (or forever with ``follow``)."""
        opts = self.options
        stale = timedelta(seconds=opts.stale_after_s)
        while not self.stop_event.is_set():
            if opts.max_batches is not None and len(self.result.batches) >= opts.max_batches:
                break
            # a dead worker's batch first: it was started earlier than anything queued
            taken = await queue.take_over_stale(self.store, self.worker_id, stale, opts.cohort)
            batch_id: str | None
            if taken is not None:
                batch_id, how = taken[0], f"taken over from {taken[1]} (no heartbeat)"
            else:
                batch_id = await queue.claim_next(self.store, self.worker_id, opts.cohort)
                how = "claimed"
            if batch_id is None:
                if not opts.follow and not await queue.unfinished_claims(self.store, opts.cohort):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), timeout=opts.poll_s)
                continue
            await self._run_one(batch_id, how)
        self.result.interrupted = self.stop_event.is_set()
        return self.result

    async def _run_one(self, batch_id: str, how: str) -> None:
        # the executor's own stop: a lost lock stops the batch, not the worker
        batch_stop = asyncio.Event()
        owner: list[str] = []
        started = time.monotonic()

        async def relay_stop() -> None:
            await self.stop_event.wait()
            batch_stop.set()

        async def beat() -> None:
            every = self.options.stale_after_s / 3
            while True:
                await asyncio.sleep(every)
                try:
                    held = await queue.beat(
                        self.store, batch_id, self.worker_id, owner[0] if owner else None
                    )
                except Exception:  # a busy database: try again at the next beat
                    continue
                if not held:  # taken over; the executor's fence stops it
                    return

        record = await repo.find_batch(self.store, batch_id)
        label = f"{record.name or batch_id} ({batch_id})"
        self.notify(f"{label}: {how}")
        helpers = [asyncio.create_task(relay_stop()), asyncio.create_task(beat())]
        try:
            # a stored judge refused by today's validation is given back as a missing key is
            config = stored_judge_config(record)
            result = await run_queued_batch(
                self.store,
                batch_id,
                stop_event=batch_stop,
                limiter=self.limiters.for_judge(config),
                use_cache=self.options.use_cache,
                on_executor=lambda executor: owner.append(executor.owner),
            )
        except BatchLockedError as exc:
            self.notify(f"{label}: {exc}")
            return
        except UserError as exc:
            if (await repo.find_batch(self.store, batch_id)).status in queue.FINISHED:
                self.notify(f"{label}: skipped: {exc}")  # another worker finished it
                return
            # e.g. the judge's API key is not set on this machine: every batch would fail
            # the same way, so give the batch back and stop instead of spinning
            await queue.release(self.store, batch_id, self.worker_id)
            raise
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        stopped = result.stopped_line("the next cj-run worker (the batch is back in the queue)")
        if stopped is not None:
            # the judge cannot be reached or refuses the account: every batch of this
            # judge would stop the same way (and this one would be claimed again at once),
            # so give it back and stop, as cj-run does, with the line cj-run prints
            await queue.release(self.store, batch_id, self.worker_id)
            raise JudgeStopped(f"{label}: {stopped}")
        if result.interrupted:
            await queue.release(self.store, batch_id, self.worker_id)
            self.notify(f"{label}: interrupted, back in the queue")
            return
        self.result.batches.append((batch_id, result.status))
        self.notify(
            f"{label}: {result.status} ({result.stop_reason}) in {time.monotonic() - started:.1f} s"
        )
