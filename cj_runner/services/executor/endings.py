"""How a run ends: finalized (COMPLETED or FAILED), interrupted (resumable, provisional
results stored), or finalized early without another call (``cj-run finalize``).
"""

from __future__ import annotations

import contextlib

from cj_runner.core.continuation import Action, Decision, StopReason
from cj_runner.errors import BatchLockedError, ScoringError, UserError
from cj_runner.services.executor.resume import ResumeMixin, lock_owner_alive
from cj_runner.services.executor.state import RunResult
from cj_runner.services.finalize import fail_scoring, finalize_batch
from cj_runner.services.stop_check import STOP_CHECK_KEY
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import Recorder
from cj_runner.storage.scores_codec import SCORES_KEY, pack_scores


class EndingsMixin(ResumeMixin):
    """Stores a run's results as it ends."""

    async def _interrupted(self) -> RunResult:
        assert self.recorder is not None
        if self.lock_lost:
            raise BatchLockedError(
                f"batch {self.batch.id} was taken over by another process; this one stopped"
            )
        await self.recorder.flush()
        # calls still unanswered after the grace period: counted, asked again on resume;
        # every call sent is stored now, so the released ones not sent are planned again
        await repo.mark_in_flight_lost(self.store, self.batch.id, owner=self.owner)
        await repo.unrelease(self.store, self.batch.id, owner=self.owner)
        await repo.save_wave_end(
            self.store, self.batch.id, wave=None, state=self._state_values(), owner=self.owner
        )
        await repo.set_status(
            self.store, self.batch.id, "INTERRUPTED", "interrupted", owner=self.owner
        )
        if self.wf.successes:
            # provisional scores, intervals and grades from what the batch has; best
            # effort: the batch is INTERRUPTED (and resumable) whatever happens here
            with contextlib.suppress(Exception):
                await self._store_results("INTERRUPTED", "interrupted", provisional=True)
        self._emit("finished", self.wf.waves_completed, reason="interrupted")
        return RunResult(
            self.batch.id,
            "INTERRUPTED",
            "interrupted",
            interrupted=True,
            unreachable=self.unreachable,
            outstanding=self.outstanding,
            unknown_job=self.unknown_job,
        )

    async def _finalize(self, decision: Decision) -> RunResult:
        if not await repo.heartbeat(self.store, self.batch.id, self.owner):
            raise BatchLockedError(
                f"batch {self.batch.id} was taken over by another process; this one stopped"
            )
        status = "FAILED" if decision.action == Action.FINALIZE_FAILURE else "COMPLETED"
        try:
            await self._store_results(status, decision.reason.value)
        except (BatchLockedError, UserError):
            raise
        except Exception as exc:  # a failed fit must not leave the batch RUNNING
            raise ScoringError(
                f"batch {self.batch.id}: final scoring failed ({type(exc).__name__}: {exc}); "
                "the batch is marked FAILED"
            ) from exc
        self._emit("finished", self.wf.waves_completed, reason=decision.reason.value)
        return RunResult(self.batch.id, status, decision.reason.value)

    async def _store_results(self, status: str, reason: str, *, provisional: bool = False) -> None:
        await finalize_batch(
            self.store,
            self.batch.id,
            nodes=self.nodes,
            workflow=self.wf,
            settings=self.settings,
            grade_scale=self.grade_scale,
            status=status,
            stop_reason=reason,
            state_values={
                **self._state_values(),
                "extra_json": {
                    SCORES_KEY: pack_scores(self.wf.scores),
                    "have_fit": self.wf.have_fit,
                    "cache_hits": self.cache_hits,
                    "lost_on_resume": self.lost_on_resume,
                    "lost_calls": self.lost_total,
                    **({STOP_CHECK_KEY: self.stop_check} if self.stop_check else {}),
                    "judge_error": (
                        self.calls.fatal.message
                        if self.calls is not None and self.calls.fatal is not None
                        else None
                    ),
                },
            },
            provisional=provisional,
        )

    async def finalize_early(self) -> RunResult:
        """End the batch now with what it has (``cj-run finalize``): no judge call is sent,
        planned comparisons are cancelled, calls still waiting in provider jobs become
        ``lost`` (:func:`~cj_runner.storage.attempts.mark_unanswered_lost`); COMPLETED
        with stop reason ``finalized_early``.

        Raises:
            BatchLockedError: another live process runs this batch.
            UserError: the batch already finished.
            ScoringError: the final fit failed (the batch is then FAILED).
        """
        await repo.acquire_lock(self.store, self.batch.id, self.owner, owner_alive=lock_owner_alive)
        try:
            async with Recorder(self.store, self.batch.id, owner=self.owner) as recorder:
                self.recorder = recorder
                open_waves = await self._rebuild()
                for wave in open_waves.values():
                    for slot in wave.slots:
                        if slot.slot in wave.unfinished and slot.planned_row:
                            await recorder.cancel(slot.slot, slot.next_attempt)
                await recorder.flush()
                # calls still waiting in provider jobs (the provider no longer knows the
                # job, or its answers are given up) end as lost: answer never received
                self.lost_total += await repo.mark_unanswered_lost(
                    self.store, self.batch.id, owner=self.owner
                )
                decision = Decision(Action.FINALIZE_SCORING, StopReason.FINALIZED_EARLY)
                try:
                    return await self._finalize(decision)
                except ScoringError as exc:
                    await fail_scoring(self.store, self.batch.id, str(exc), self._state_values())
                    raise
        finally:
            with contextlib.suppress(Exception):
                await repo.release_lock(self.store, self.batch.id, self.owner)
