"""The async wave loop: :class:`BatchExecutor` runs one batch to its stop.

It takes the batch's lock (with a heartbeat), rebuilds the state, then plans ahead,
sends, and closes waves in order until the continuation decision stops it or the run is
interrupted; the parts it is made of live beside it (state, resume, dispatch, waves,
endings).
"""

from __future__ import annotations

import asyncio
import contextlib

from cj_runner.core.continuation import Action, Decision, StopReason
from cj_runner.core.workflow import exhausted_decision
from cj_runner.errors import ScoringError
from cj_runner.services.calls import CallRunner
from cj_runner.services.executor.endings import EndingsMixin
from cj_runner.services.executor.resume import lock_owner_alive
from cj_runner.services.executor.state import (
    GROUP_COMMIT_WINDOW_S,
    HEARTBEAT_S,
    INTERRUPT_GRACE_S,
    RunResult,
)
from cj_runner.services.executor.waves import WavesMixin
from cj_runner.services.finalize import fail_scoring
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import Recorder


class BatchExecutor(WavesMixin, EndingsMixin):
    """Runs one batch to its stop (new or resumed)."""

    async def run(self) -> RunResult:
        """Run the batch to its stop; returns its final status and reason.

        Raises:
            BatchLockedError: another live process runs this batch, or took it over.
            UserError: the batch already finished.
        """
        await repo.acquire_lock(self.store, self.batch.id, self.owner, owner_alive=lock_owner_alive)
        beat = asyncio.create_task(self._heartbeat())
        try:
            async with Recorder(
                self.store,
                self.batch.id,
                owner=self.owner,
                group_window_s=GROUP_COMMIT_WINDOW_S,
                gather_while=self._judging,
            ) as recorder:
                self.recorder = recorder
                try:
                    return await self._run()
                except ScoringError as exc:
                    await fail_scoring(self.store, self.batch.id, str(exc), self._state_values())
                    raise
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            with contextlib.suppress(Exception):
                await repo.release_lock(self.store, self.batch.id, self.owner)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                held = await repo.heartbeat(self.store, self.batch.id, self.owner)
            except Exception:  # a busy database: try again at the next beat
                continue
            if not held:
                self.lock_lost = True
                self.stop_event.set()
                return

    async def _run(self) -> RunResult:
        self.open = await self._rebuild()
        assert self.recorder is not None
        self.calls = CallRunner(
            judge=self.judge,
            recorder=self.recorder,
            texts=self.texts,
            assignment=self.assignment,
            retry_policy=self.retry_policy,
            budget=self.live,
            seed=self.batch.seed,
            stop_event=self.halt,
            sleep=self._sleep,
            cache=self.cache if self.use_cache else None,
            batch_id=self.batch.id,
            on_attempt=self._on_attempt,
            on_done=self._on_done,
            release=self._ensure_released,
            interrupt=self.stop_event,
        )
        if self.batch_api is not None:
            self.jobs = self._job_runner(self.batch_api, self.calls)
        await repo.set_status(self.store, self.batch.id, "RUNNING", owner=self.owner)
        self._emit("start", self.wf.waves_completed)
        watch = asyncio.create_task(self._watch_stop())
        try:
            decision = await self._drive()
        except BaseException:
            # a crash of this run (storage, lock, a bug): the calls in flight are abandoned
            # as a killed process would abandon them; resume counts them as lost
            self.halt.set()
            abandoned = [*self.tasks.values(), *([self._prefetch] if self._prefetch else [])]
            for task in abandoned:
                task.cancel()
            await asyncio.gather(*abandoned, return_exceptions=True)
            raise
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if decision is not None and not await self._finish_open_waves():
            decision = None
        if decision is None:
            await self._drain(grace=INTERRUPT_GRACE_S)
            return await self._interrupted()
        await self._drain(grace=None)
        await self._settle_unsent()
        return await self._finalize(decision)

    async def _finish_open_waves(self) -> bool:
        """After a stop decision: ask the waves already planned to the end.

        No wave is planned after the decision. The open waves were planned within the
        budget before it and most of their calls are in flight; asking the rest keeps a
        seeded batch the same call for call whatever the timing (which calls happen to
        be in flight at the decision is timing). Returns ``False`` when interrupted.
        """
        while any(not t.done() for t in self.tasks.values()):
            if self.stop_event.is_set():
                return False
            if self._task_error is not None:
                raise self._task_error
            self._changed.clear()
            await self._changed.wait()
        return not self.stop_event.is_set()

    async def _watch_stop(self) -> None:
        await self.stop_event.wait()
        self.halt.set()
        self._changed.set()

    async def _drive(self) -> Decision | None:
        """Plan ahead, send, close waves in order; the final decision (``None``: interrupted)."""
        closed = self.wf.waves_completed
        if self._last_decision is not None and self._last_decision[0] in (
            Action.FINALIZE_SCORING.value,
            Action.FINALIZE_FAILURE.value,
        ):
            # the last run stopped between its last closed wave and finalization: the
            # waves that could send before that decision are finished, no other
            self._open_gate(closed - 1 + self.window)
            return Decision(Action(self._last_decision[0]), StopReason(self._last_decision[1]))
        self._open_gate(closed + self.window)
        if not await self._plan_ahead():
            return exhausted_decision()
        while True:
            if self.stop_event.is_set():
                return None
            if self._task_error is not None:
                raise self._task_error
            wave = self.open.get(self.wf.waves_completed + 1)
            if wave is None or wave.unfinished:
                if wave is None and not self.open:  # pragma: no cover - planning keeps one
                    return exhausted_decision()
                self._changed.clear()
                await self._changed.wait()
                continue
            decision = await self._close_wave(wave)
            if self.calls is not None and self.calls.fatal is not None:
                # the judge cannot answer any call (bad key, no quota...): stop at once
                return Decision(Action.FINALIZE_FAILURE, StopReason.JUDGE_UNAVAILABLE)
            if decision.is_final:
                return decision
            self._open_gate(self.wf.waves_completed + self.window)
            if not await self._plan_ahead():
                return exhausted_decision()
