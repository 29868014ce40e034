"""Wave planning and pipelining: waves are planned ahead (selection in a worker thread),
opened as the send window reaches them, and closed in order (their results enter the
workflow in slot order, then the refit and the continuation decision).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cj_runner.core.continuation import Decision, StopReason, reliability_lower_bound
from cj_runner.core.models import Mode, PlannedPair
from cj_runner.errors import ScoringError
from cj_runner.judges.panel import member_of
from cj_runner.services.calls import Slot
from cj_runner.services.executor.dispatch import DispatchMixin
from cj_runner.services.executor.state import OpenWave
from cj_runner.services.stop_check import STOP_CHECK_KEY
from cj_runner.storage.recorder import PlannedRow
from cj_runner.storage.scores_codec import SCORES_KEY, pack_scores


class WavesMixin(DispatchMixin):
    """Plans, opens and closes the waves."""

    def _open_gate(self, gate: int) -> None:
        """Let the calls of the open waves up to ``gate`` go out, in slot order."""
        self.gate = max(self.gate, gate)
        for no in sorted(self.open):
            wave = self.open[no]
            if no > self.gate or wave.started:
                continue
            wave.started = True
            self._emit("wave_start", no)
            if self.jobs is not None:
                self._start_jobs(
                    self.jobs, no, [s for s in wave.slots if s.slot in wave.unfinished]
                )
                continue
            for slot in wave.slots:
                if slot.slot in wave.unfinished:
                    self._start(slot)

    async def _plan_ahead(self) -> bool:
        """Plan and store waves up to ``depth`` ahead of the last closed one.

        Selection runs in a worker thread, so calls keep going out and answers keep being
        stored while it runs (the workflow state does not change meanwhile: answers wait
        in their open wave until it closes, on this task). A wave within the send window
        starts sending once its plan is committed. Returns ``False`` when nothing is open
        and the mode can produce no pair (the batch is exhausted). A wave that finds no
        pair while others are open is planned again after the next wave closes.
        """
        limit = min(self.wf.waves_completed + self.depth, self.settings.MAX_ITERATIONS)
        while self.next_wave <= limit and not self.halt.is_set():
            no = self.next_wave
            pending = [(s.a, s.b) for w in self.open.values() for s in w.slots]
            pairs, modes, judges = await asyncio.to_thread(self._select, no, pending)
            slots = self._slots(no, pairs, modes, judges)
            if not slots:
                return bool(self.open)
            assert self.recorder is not None
            # not awaited: the plan commits before the wave's release (writes commit in
            # order), and so before any of its calls
            self.recorder.plan_ahead(
                [
                    PlannedRow(s.slot, s.a, s.b, s.mode, s.wave, s.repeat_index, s.judge)
                    for s in slots
                ]
            )
            await self._send_wave(no, slots)
        return True

    async def _send_wave(self, wave_no: int, slots: Sequence[Slot]) -> None:
        """A wave's plan is stored: open it; its calls go out once the send window reaches it."""
        for slot in slots:
            self.live.add(slot.slot)
        mode = next((s.mode for s in slots if s.mode != Mode.AUDIT.value), None)
        self.open[wave_no] = OpenWave(
            wave_no, mode, list(slots), unfinished={s.slot for s in slots}
        )
        self.next_wave = wave_no + 1
        self._open_gate(self.gate)

    def _select(
        self, wave_no: int, pending: Sequence[tuple[int, int]]
    ) -> tuple[list[PlannedPair], list[Mode], list[int | None]]:
        """The pairs of wave ``wave_no``, their modes and their planned judges (pure;
        runs in a worker thread)."""
        pairs = self.wf.plan_wave(wave_no, pending)
        return pairs, list(self.wf.wave_modes), list(self.wf.wave_judges)

    def _slots(
        self,
        wave_no: int,
        pairs: Sequence[PlannedPair],
        modes: Sequence[Mode],
        judges: Sequence[int | None],
    ) -> list[Slot]:
        slots = []
        for pair, mode, judge in zip(pairs, modes, judges, strict=True):
            key = (pair.a, pair.b)
            ask_index = self.asks.get(key, 0)
            self.asks[key] = ask_index + 1
            repeat_index = self.wf.repeat_index(pair.a, pair.b)
            slots.append(
                Slot(
                    slot=self.next_slot,
                    a=pair.a,
                    b=pair.b,
                    mode=mode.value,
                    wave=wave_no,
                    repeat_index=repeat_index,
                    ask_index=ask_index,
                    judge=self._judge_name(pair, repeat_index, judge),
                )
            )
            self.next_slot += 1
        return slots

    def _judge_name(self, pair: PlannedPair, repeat_index: int, judge: int | None) -> str | None:
        """A panel comparison's judge: the one planned (a pair asked of two judges), else
        the panel's seeded choice; ``None`` for one judge."""
        if self.panel is None:
            return None
        if judge is not None:
            return self.panel.panel[judge].judge.name
        return member_of(
            self.panel, self.texts[pair.a].checksum, self.texts[pair.b].checksum, repeat_index
        )

    def _apply_results(self, wave: OpenWave) -> None:
        """Enter a wave's results into the workflow, in slot order."""
        for slot in wave.slots:
            result = wave.results.pop(slot.slot, None)
            if result is None:
                continue
            status, winner, cached = result
            if status == "success":
                assert winner is not None
                self.wf.record_success(slot.a, slot.b, winner, slot.mode, key=slot.slot)
                self.cache_hits += int(cached)
                wave.successes += 1
            elif status == "failed":
                self.wf.record_failure()
        self.wf.calls_sent += wave.calls
        wave.calls = 0

    async def _close_wave(self, wave: OpenWave) -> Decision:
        del self.open[wave.no]
        if wave.mode is not None:
            self.wf.mode = Mode(wave.mode)
        self._apply_results(wave)
        return await self._end_wave(wave.no, [(s.a, s.b) for s in wave.slots], wave.successes)

    async def _end_wave(
        self, wave_no: int, asked: list[tuple[int, int]], successes: int
    ) -> Decision:
        mode = self.wf.mode
        # the refit runs in a thread so the lock's heartbeat keeps beating on big batches
        try:
            end = await asyncio.to_thread(self.wf.end_wave, wave_no, asked)
        except Exception as exc:  # a failed fit must not leave the batch RUNNING
            raise ScoringError(
                f"batch {self.batch.id}: scoring failed at the end of wave {wave_no} "
                f"({type(exc).__name__}: {exc}); the batch is marked FAILED"
            ) from exc
        if end.decision.reason == StopReason.TARGET_RELIABILITY:
            limits = self.wf.limits
            assert end.robust_reliability is not None and limits.target_reliability is not None
            self.stop_check = {
                "robust_reliability": end.robust_reliability,
                "posterior_sd": end.robust_reliability_sd,
                "z": limits.target_reliability_z,
                "lower_bound": reliability_lower_bound(
                    end.robust_reliability, end.robust_reliability_sd, limits.target_reliability_z
                ),
                "target": limits.target_reliability,
                "comparisons": self.wf.successes,
            }
        assert self.recorder is not None
        self.recorder.wave_end(
            wave={
                "wave": wave_no,
                "mode": mode.value,
                "size": len(asked),
                "successes": successes,
                "max_score_change": end.max_score_change,
                "ssr": end.ssr,
                # the calls of the waves closed so far: the same whatever the timing
                "calls_sent": self.wf.calls_sent,
                "decision": end.decision.action.value,
                "reason": end.decision.reason.value,
            },
            state={
                # calls_sent is kept by the recorder: it never counts a call not stored
                **{k: v for k, v in self._state_values().items() if k != "calls_sent"},
                "max_possible_pairs": self.wf.max_possible_pairs,
                "successful_pairs_count": self.wf.successful_pairs_count,
                "unique_coverage_complete": (
                    self.wf.successful_pairs_count == self.wf.max_possible_pairs
                ),
                "resampling_pass_count": self.wf.pass_count,
                "pass_remaining": sorted([a, b] for a, b in self.wf.pass_remaining),
                "current_mode": self.wf.mode.value,
                "extra_json": {
                    SCORES_KEY: pack_scores(self.wf.scores),
                    "have_fit": self.wf.have_fit,
                    **({STOP_CHECK_KEY: self.stop_check} if self.stop_check else {}),
                },
            },
        )
        self._emit(
            "wave_end",
            wave_no,
            max_score_change=end.max_score_change,
            decision=end.decision.action.value,
            reason=end.decision.reason.value,
        )
        return end.decision

    async def _settle_unsent(self) -> None:
        """After a stop decision: the open waves' results enter the final fit.

        Their comparisons were all asked (:meth:`_finish_open_waves`); the waves are not
        closed (no decision is taken on them). Anything left unasked is settled: planned
        and never sent ``cancelled``, stopped before a retry ``failed``.
        """
        assert self.recorder is not None
        for no in sorted(self.open):
            wave = self.open[no]
            for slot in wave.slots:
                if slot.slot not in wave.unfinished:
                    continue
                stopped = self.stopped.get(slot.slot)
                attempt = stopped[1].attempt if stopped is not None else slot.next_attempt
                if attempt > slot.next_attempt:  # this run sent it; a retry was due
                    await self.recorder.mark_failed(slot.slot, attempt - 1)
                    wave.results[slot.slot] = ("failed", None, False)
                elif slot.planned_row:
                    await self.recorder.cancel(slot.slot, attempt)
            self._apply_results(wave)
        await self.recorder.flush()
