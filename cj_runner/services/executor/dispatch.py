"""Call dispatch: a comparison's calls go out (one task each, or provider jobs in batch-API
mode), their first calls are released in send order, and their results come back.

Every first call waits until its comparison's ``released`` mark is committed (groups of
``MAX_CONCURRENT_REQUESTS`` in send order, so a crash loses at most a bounded number of
calls); results are buffered in their open wave until it closes.
"""

from __future__ import annotations

import asyncio

from cj_runner.judges.batch_api import BatchAPI
from cj_runner.services.batch_jobs import JobRunner
from cj_runner.services.calls import CallOutcome, CallRunner, Slot
from cj_runner.services.executor.state import ExecutorState
from cj_runner.storage.recorder import AttemptResult

UNREACHABLE_AFTER = 3
"""Connection failures, before any answer, after which a run stops (nothing else sent)."""


class DispatchMixin(ExecutorState):
    """Sends the calls of the open waves and takes their results."""

    def _start(self, slot: Slot) -> None:
        calls = self.calls
        assert calls is not None
        if slot.planned_row and slot.next_attempt == 1:
            self._order_index[slot.slot] = len(self._send_order)
            self._send_order.append(slot.slot)
        task = asyncio.create_task(self._ask(calls, slot))
        self.tasks[slot.slot] = task

    async def _ask(self, calls: CallRunner, slot: Slot) -> None:
        try:
            outcome = await calls.run(slot, self.semaphore)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a storage error, a dying process: the run stops
            self._task_failed(exc)
            return
        if outcome.status == "stopped":
            self.stopped[slot.slot] = (slot, outcome)
        self._changed.set()

    def _task_failed(self, exc: BaseException) -> None:
        """A sending task died (storage error, lock lost, a dying process): no new sends;
        the driver re-raises the first such error."""
        if self._task_error is None:
            self._task_error = exc
        self.halt.set()
        self._changed.set()

    async def _ensure_released(self, slot: Slot) -> None:
        """Before a first call goes out: its comparison's ``released`` mark is committed.

        Releases go ``MAX_CONCURRENT_REQUESTS`` comparisons at a time in send order, one
        commit each. Once answers come back, the next group is released while fewer than
        that many released comparisons are left unsent (:meth:`_prefetch_if_low`), so a
        first call rarely waits for a commit. A crash leaves fewer than two groups
        released and unsent, and one group when no answer came back since the last
        release (resume counts them as sent: an overcount, never an undercount).
        """
        index = self._order_index[slot.slot]
        while index >= self._released_upto:
            await self._release_next()
        self._passed = max(self._passed, index + 1)

    def _prefetch_if_low(self) -> None:
        """An answer came back (a slot is about to free): release the next group early."""
        if (
            self._releasing is None
            and self._released_upto < len(self._send_order)
            and self._released_upto - self._passed < self.settings.MAX_CONCURRENT_REQUESTS
            and not self.halt.is_set()
        ):
            self._prefetch = asyncio.create_task(self._prefetch_release())

    async def _release_next(self) -> None:
        """Commit the release of the next group in send order (or wait for the one under way).

        A group tops the released and unsent comparisons up to ``2 x
        MAX_CONCURRENT_REQUESTS - 1`` (at least ``MAX_CONCURRENT_REQUESTS``), so that a
        fast judge gets up to twice as many calls out per group commit while fewer than
        ``2 C`` are ever released and unsent (the crash bound).
        """
        if self._releasing is not None:
            await asyncio.shield(self._releasing)
            return
        start = self._released_upto
        c = self.settings.MAX_CONCURRENT_REQUESTS
        size = max(c, 2 * c - 1 - (start - self._passed))
        group = self._send_order[start : start + size]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releasing = done
        try:
            assert self.recorder is not None
            await self.recorder.release(group)
            self._released_upto = start + len(group)
        finally:
            self._releasing = None
            done.set_result(None)

    async def _prefetch_release(self) -> None:
        try:
            await self._release_next()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a storage error: the run stops, as for a call
            if self._task_error is None:
                self._task_error = exc
            self.halt.set()
            self._changed.set()

    def _job_runner(self, api: BatchAPI, calls: CallRunner) -> JobRunner:
        assert self.recorder is not None
        return JobRunner(
            api=api,
            calls=calls,
            store=self.store,
            recorder=self.recorder,
            texts=self.texts,
            assignment=self.assignment,
            retry_policy=self.retry_policy,
            budget=self.live,
            stop_event=self.halt,
            batch_id=self.batch.id,
            owner=self.owner,
            poll_s=self.batch_poll_s,
            on_attempt=self._on_attempt,
            on_done=self._on_done,
            on_progress=lambda line: self._emit("job", self.wf.waves_completed + 1, job=line),
            sleep=self._sleep,
        )

    def _start_jobs(self, jobs: JobRunner, wave_no: int, slots: list[Slot]) -> None:
        """Batch-API mode: the wave's comparisons go out as provider jobs, in one task
        (keyed ``-wave_no`` among the slot tasks)."""
        if slots:
            self.tasks[-wave_no] = asyncio.create_task(self._ask_jobs(jobs, wave_no, slots))

    async def _ask_jobs(self, jobs: JobRunner, wave_no: int, slots: list[Slot]) -> None:
        try:
            await jobs.run(wave_no, slots)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a storage error, a dying process: the run stops
            self._task_failed(exc)
            return
        calls = self.calls
        if jobs.fatal is not None and calls is not None and calls.fatal is None:
            calls.fatal = jobs.fatal
        if jobs.stalled is not None and not self.stop_event.is_set():
            # the batch endpoints keep failing, or the judge turned unusable while a job
            # holds paid calls: stop, resumable (a job may be running)
            self.unreachable = jobs.stalled
            self.outstanding = jobs.outstanding
            self.unknown_job = jobs.unknown_job_calls
            self.stop_event.set()
        self._changed.set()

    def _on_attempt(self, slot: Slot, result: AttemptResult) -> None:
        """A call's result was stored: count its call and tokens; report a failed one."""
        if self.call_log is not None:
            self.call_log(slot, result)
        self._watch_connection(result)
        self._prefetch_if_low()
        wave = self.open.get(slot.wave)
        if wave is not None and not result.cached:
            wave.calls += 1
        if not result.cached:  # every billed attempt counts, whatever its answer
            self._add_tokens(
                result.tokens_in or 0, result.tokens_out or 0, result.tokens_cached or 0
            )
        if result.status != "success":
            self._emit("call", slot.wave)

    def _watch_connection(self, result: AttemptResult) -> None:
        """Stop at once when the run's first calls all fail to connect (no connection could
        be made: a wrong base URL, a server that is down), which would otherwise spend the
        budget on nothing."""
        # only "could not connect at all": a server that accepts and then drops the
        # connection is there, and its errors are retried as usual
        refused = result.error_kind == "connection" and "ConnectError" in (
            result.error_message or ""
        )
        if not refused or result.cached:
            self._judge_answered = True
            return
        if self._judge_answered or self.unreachable is not None:
            return
        self._connection_failures += 1
        if self._connection_failures >= UNREACHABLE_AFTER:
            url = getattr(self.judge, "url", None)
            where = f" at {url}" if url else ""
            self.unreachable = (
                f"cannot reach the judge{where}: {result.error_message or 'connection failed'}"
            )
            self.stop_event.set()

    def _on_done(self, slot: Slot, outcome: CallOutcome) -> None:
        """A comparison ended: buffer its result until its wave closes (in wave order)."""
        wave = self.open.get(slot.wave)
        if wave is None:  # pragma: no cover - every running slot belongs to an open wave
            return
        wave.unfinished.discard(slot.slot)
        if outcome.status == "success":
            assert outcome.verdict is not None
            wave.results[slot.slot] = ("success", outcome.verdict.winner, outcome.cached)
            self._emit("call", slot.wave)
        elif outcome.status in ("failed", "cancelled"):
            wave.results[slot.slot] = (outcome.status, None, False)
        self._changed.set()

    async def _drain(self, *, grace: float | None) -> None:
        """Wait for the calls in flight (at most ``grace`` seconds), then cancel the rest."""
        tasks = [t for t in self.tasks.values() if not t.done()]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=grace)
        finally:
            late = [t for t in self.tasks.values() if not t.done()]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for task in self.tasks.values():  # read every failure: none "never retrieved"
                if not task.cancelled():
                    task.exception()
            if self._prefetch is not None:  # a release commit under way: let it end
                await asyncio.gather(self._prefetch, return_exceptions=True)
        if self._task_error is not None:
            raise self._task_error
        assert self.recorder is not None
        await self.recorder.flush()
