"""The async wave loop: select pairs, ask the judge, store every answer, refit, decide.

The executor owns the budget and the retries. Every call is stored as ``sent`` before it
goes out and its answer as soon as it arrives (:class:`~cj_runner.storage.recorder.Recorder`),
so a crash loses at most the calls in flight. The in-memory state is rebuilt from the
stored attempts when a run starts, so a new batch and a resumed one take the same path.
Nothing here prints: progress goes out through a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cj_runner.config import Settings, continuation_limits
from cj_runner.core.continuation import Action, Decision, StopReason
from cj_runner.core.models import GradeScale, Mode
from cj_runner.core.workflow import WorkflowState, exhausted_decision
from cj_runner.errors import JudgeError
from cj_runner.judges.base import AssignmentText, EssayText, Judge, JudgeRequest, Verdict
from cj_runner.judges.retry import RetryPolicy, sleep_before_retry
from cj_runner.services.finalize import finalize_batch
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import AttemptResult, PlannedRow, Recorder, SentAttempt

HEARTBEAT_S = 10.0
INTERRUPT_GRACE_S = 5.0
FINAL_STATUSES = ("success", "failed")


@dataclass(frozen=True)
class ProgressEvent:
    """What the executor reports to its caller (the CLI draws it)."""

    kind: str  # "start" | "wave_start" | "call" | "wave_end" | "finished"
    calls_sent: int
    total_budget: int
    wave: int
    mode: str
    successes: int
    failures: int
    max_score_change: float | None = None
    cache_hits: int = 0
    decision: str | None = None
    reason: str | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class _Slot:
    """One logical comparison of the current wave."""

    slot: int
    a: int
    b: int
    mode: str
    wave: int
    repeat_index: int
    next_attempt: int = 1
    planned_row: bool = True  # attempt 1 row exists as ``planned``


@dataclass
class RunResult:
    """How a run ended."""

    batch_id: str
    status: str
    stop_reason: str | None
    interrupted: bool = False


def lock_owner_alive(owner: str) -> bool:
    """Whether the process named in a lock (``host:pid:token``) may still be running."""
    try:
        host, pid_text, _ = owner.split(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BatchExecutor:
    """Runs one batch to its stop (new or resumed)."""

    def __init__(
        self,
        store: Store,
        batch: repo.BatchRecord,
        nodes: Sequence[repo.NodeRecord],
        judge: Judge,
        settings: Settings,
        *,
        assignment: AssignmentText | None = None,
        grade_scale: GradeScale | None = None,
        progress: ProgressCallback | None = None,
        use_cache: bool = True,
        stop_event: asyncio.Event | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.batch = batch
        self.nodes = list(nodes)
        self.judge = judge
        self.settings = settings
        self.assignment = assignment or AssignmentText()
        self.grade_scale = grade_scale
        self.progress = progress
        self.use_cache = use_cache
        self.stop_event = stop_event or asyncio.Event()
        self._sleep = sleep
        state = batch.state
        self.wf = WorkflowState(
            n_nodes=len(self.nodes),
            n_students=sum(1 for n in self.nodes if not n.is_anchor),
            total_budget=int(state["total_budget"]),
            limits=continuation_limits(settings),
            wave_size=settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION,
            strategy=settings.MATCHING_STRATEGY,
            seed=batch.seed,
            prior_precision=settings.BT_PRIOR_PRECISION,
            min_resampling_net_size=settings.MIN_RESAMPLING_NET_SIZE,
            mode=Mode(state.get("current_mode") or Mode.COVERAGE.value),
            waves_completed=int(state.get("iteration", 0)),
            pass_count=int(state.get("resampling_pass_count", 0)),
            pass_remaining={(int(p[0]), int(p[1])) for p in state.get("pass_remaining") or []},
        )
        self.texts = [
            EssayText(
                essay_id=node.essay_id,
                text=node.text,
                checksum=node.checksum,
                is_anchor=node.is_anchor,
                known_grade=node.known_grade,
                metadata={k: str(v) for k, v in node.metadata.items()},
            )
            for node in self.nodes
        ]
        self.retry_policy = RetryPolicy(
            max_attempts=settings.MAX_ATTEMPTS_PER_COMPARISON,
            base_delay_s=settings.RETRY_BASE_DELAY_S,
            max_delay_s=settings.RETRY_MAX_DELAY_S,
        )
        self.cache: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.recorder: Recorder | None = None
        self.lost_on_resume = 0
        self.cache_hits = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.next_slot = 1
        self._last_decision: tuple[str, str] | None = None

    # ------------------------------------------------------------ helpers

    def _emit(self, kind: str, wave: int, **extra: Any) -> None:
        if self.progress is None:
            return
        self.progress(
            ProgressEvent(
                kind=kind,
                calls_sent=self.wf.calls_sent,
                total_budget=self.wf.total_budget,
                wave=wave,
                mode=self.wf.mode.value,
                successes=self.wf.successes,
                failures=self.wf.failures,
                cache_hits=self.cache_hits,
                **extra,
            )
        )

    def _add_tokens(self, tokens_in: int, tokens_out: int) -> None:
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.wf.cost_usd = (
            self.tokens_in * self.judge.price_input_per_mtok
            + self.tokens_out * self.judge.price_output_per_mtok
        ) / 1e6

    # ------------------------------------------------------------ rebuild

    async def _rebuild(self) -> list[_Slot]:
        """Rebuild counters from stored attempts; return the unfinished current wave."""
        self.lost_on_resume = await repo.mark_in_flight_lost(self.store, self.batch.id)
        attempts = await repo.load_attempts(self.store, self.batch.id)
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for row in attempts:
            by_slot.setdefault(row["slot"], []).append(row)
            if row["call_no"] is not None:
                self.wf.calls_sent = max(self.wf.calls_sent, int(row["call_no"]))
            if not row["cached"]:
                self._add_tokens(int(row["tokens_in"] or 0), int(row["tokens_out"] or 0))
        unfinished: list[_Slot] = []
        for slot_no in sorted(by_slot):
            last = by_slot[slot_no][-1]
            self.next_slot = max(self.next_slot, slot_no + 1)
            if last["status"] == "success":
                self.wf.record_success(
                    last["a_idx"], last["b_idx"], last["winner"], last["mode"], key=slot_no
                )
                self.cache_hits += int(bool(last["cached"]))
            elif last["status"] == "failed":
                self.wf.record_failure()
            elif last["status"] in ("planned", "lost", "retried", "sent"):
                planned = last["status"] == "planned"
                unfinished.append(
                    _Slot(
                        slot=slot_no,
                        a=last["a_idx"],
                        b=last["b_idx"],
                        mode=last["mode"],
                        wave=last["wave"],
                        repeat_index=last["repeat_index"],
                        next_attempt=int(last["attempt"]) + (0 if planned else 1),
                        planned_row=planned,
                    )
                )
        scores = (self.batch.state.get("extra_json") or {}).get("scores")
        if scores is not None and len(scores) == self.wf.n_nodes:
            self.wf.scores = np.asarray(scores, dtype=float)
            self.wf.have_fit = True
        waves = await repo.load_waves(self.store, self.batch.id)
        if waves and waves[-1]["decision"]:
            self._last_decision = (waves[-1]["decision"], waves[-1]["reason"])
        if self.use_cache:
            self.cache = await repo.cache_entries(
                self.store, self.judge.model, self.judge.prompt_hash
            )
        return unfinished

    # ------------------------------------------------------------ main loop

    async def run(self) -> RunResult:
        """Run the batch to its stop; returns its final status and reason."""
        await repo.acquire_lock(self.store, self.batch.id, self.owner, owner_alive=lock_owner_alive)
        beat = asyncio.create_task(self._heartbeat())
        try:
            async with Recorder(self.store, self.batch.id) as recorder:
                self.recorder = recorder
                return await self._run()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await repo.release_lock(self.store, self.batch.id, self.owner)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await repo.heartbeat(self.store, self.batch.id, self.owner)

    async def _run(self) -> RunResult:
        unfinished = await self._rebuild()
        await repo.set_status(self.store, self.batch.id, "RUNNING")
        self._emit("start", self.wf.waves_completed)
        if unfinished:
            # the process stopped inside a wave: finish that wave first
            wave_no = unfinished[0].wave
            self.wf.mode = Mode(unfinished[0].mode)
            decision = await self._wave(wave_no, unfinished)
        elif self._last_decision is not None and self._last_decision[0] in (
            Action.FINALIZE_SCORING.value,
            Action.FINALIZE_FAILURE.value,
        ):
            # the process stopped between the last wave and finalization
            decision = Decision(Action(self._last_decision[0]), StopReason(self._last_decision[1]))
        else:
            decision = None
        while True:
            if self.stop_event.is_set():
                return await self._interrupted()
            if decision is not None and decision.is_final:
                return await self._finalize(decision)
            wave_no = self.wf.waves_completed + 1
            slots = self._plan_wave(wave_no)
            if not slots:
                return await self._finalize(exhausted_decision())
            assert self.recorder is not None
            await self.recorder.plan(
                [PlannedRow(s.slot, s.a, s.b, s.mode, s.wave, s.repeat_index) for s in slots]
            )
            decision = await self._wave(wave_no, slots)

    async def _wave(self, wave_no: int, slots: list[_Slot]) -> Decision | None:
        """Run a wave's calls, then end it; ``None`` when interrupted."""
        await self._run_wave(wave_no, slots)
        if self.stop_event.is_set():
            return None
        return await self._end_wave(wave_no, [(s.a, s.b) for s in slots])

    def _plan_wave(self, wave_no: int) -> list[_Slot]:
        pairs = self.wf.plan_wave()
        slots = []
        for pair in pairs:
            slots.append(
                _Slot(
                    slot=self.next_slot,
                    a=pair.a,
                    b=pair.b,
                    mode=self.wf.mode.value,
                    wave=wave_no,
                    repeat_index=self.wf.repeat_index(pair.a, pair.b),
                )
            )
            self.next_slot += 1
        return slots

    async def _run_wave(self, wave_no: int, slots: list[_Slot]) -> None:
        self._emit("wave_start", wave_no)
        semaphore = asyncio.Semaphore(self.settings.MAX_CONCURRENT_REQUESTS)
        tasks = [asyncio.create_task(self._run_slot(s, semaphore)) for s in slots]
        stop_wait = asyncio.create_task(self.stop_event.wait())
        try:
            pending: set[asyncio.Future[Any]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(
                    pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop_wait)
                if stop_wait in done:
                    if pending:
                        _, late = await asyncio.wait(pending, timeout=INTERRUPT_GRACE_S)
                        for task in late:
                            task.cancel()
                        await asyncio.gather(*late, return_exceptions=True)
                    break
                for task in done:
                    if task is not stop_wait and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            stop_wait.cancel()
        assert self.recorder is not None
        await self.recorder.flush()

    async def _run_slot(self, slot: _Slot, semaphore: asyncio.Semaphore) -> None:
        assert self.recorder is not None
        recorder = self.recorder
        attempt = slot.next_attempt
        a_text, b_text = self.texts[slot.a], self.texts[slot.b]
        cache_key = (a_text.checksum, b_text.checksum, slot.repeat_index)
        while True:
            if self.stop_event.is_set():
                return  # planned rows stay planned; resume sends them
            async with semaphore:
                if self.stop_event.is_set():
                    return
                if self.use_cache and attempt == 1 and cache_key in self.cache:
                    await self._record_cached(slot, self.cache[cache_key])
                    return
                if self.wf.calls_sent >= self.wf.total_budget:
                    if attempt == 1:
                        await recorder.cancel(slot.slot, 1)
                    else:
                        await recorder.mark_failed(slot.slot, attempt - 1)
                        self.wf.record_failure()
                    return
                call_no = self.wf.count_call()
                await recorder.sent(
                    SentAttempt(
                        slot=slot.slot,
                        attempt=attempt,
                        call_no=call_no,
                        a_idx=slot.a,
                        b_idx=slot.b,
                        mode=slot.mode,
                        wave=slot.wave,
                        repeat_index=slot.repeat_index,
                        model=self.judge.model,
                        prompt_hash=self.judge.prompt_hash,
                        sent_at=repo.utcnow(),
                    )
                )
                request = JudgeRequest(
                    essay_a=a_text,
                    essay_b=b_text,
                    assignment=self.assignment,
                    attempt=attempt,
                    repeat_index=slot.repeat_index,
                )
                started = time.perf_counter()
                error: JudgeError | None = None
                verdict: Verdict | None = None
                try:
                    verdict = await self.judge.judge(request)
                except JudgeError as exc:
                    error = exc
                except Exception as exc:  # a bug in a judge must not lose the batch
                    error = JudgeError("internal", f"{type(exc).__name__}: {exc}")
                latency = time.perf_counter() - started
            if verdict is not None:
                await self._record_success(slot, attempt, verdict, latency)
                return
            assert error is not None
            retry = (
                error.transient
                and attempt < self.retry_policy.max_attempts
                and self.wf.calls_sent < self.wf.total_budget
                and not self.stop_event.is_set()
            )
            await recorder.result(
                AttemptResult(
                    slot=slot.slot,
                    attempt=attempt,
                    status="retried" if retry else "failed",
                    received_at=repo.utcnow(),
                    error_kind=error.kind,
                    error_message=error.message[:2000],
                    latency_s=latency,
                )
            )
            self._emit("call", slot.wave)
            if not retry:
                self.wf.record_failure()
                return
            rng = random.Random(f"{self.batch.seed}:{slot.slot}:{attempt}")
            await sleep_before_retry(self.retry_policy, attempt, error, rng, sleep=self._sleep)
            attempt += 1

    async def _record_success(
        self, slot: _Slot, attempt: int, verdict: Verdict, latency: float
    ) -> None:
        assert self.recorder is not None
        a_sum, b_sum = self.texts[slot.a].checksum, self.texts[slot.b].checksum
        await self.recorder.result(
            AttemptResult(
                slot=slot.slot,
                attempt=attempt,
                status="success",
                received_at=repo.utcnow(),
                winner=verdict.winner,
                confidence=verdict.confidence,
                justification=verdict.justification,
                tokens_in=verdict.tokens_in,
                tokens_out=verdict.tokens_out,
                latency_s=verdict.latency_s or latency,
                cache_key=(
                    (self.judge.model, self.judge.prompt_hash, a_sum, b_sum, slot.repeat_index)
                    if self.use_cache
                    else None
                ),
            )
        )
        self._add_tokens(verdict.tokens_in, verdict.tokens_out)
        self.wf.record_success(slot.a, slot.b, verdict.winner, slot.mode, key=slot.slot)
        if self.use_cache:
            self.cache[(a_sum, b_sum, slot.repeat_index)] = {
                "winner": verdict.winner,
                "confidence": verdict.confidence,
                "justification": verdict.justification,
                "tokens_in": verdict.tokens_in,
                "tokens_out": verdict.tokens_out,
            }
        self._emit("call", slot.wave)

    async def _record_cached(self, slot: _Slot, hit: dict[str, Any]) -> None:
        assert self.recorder is not None
        await self.recorder.result(
            AttemptResult(
                slot=slot.slot,
                attempt=1,
                status="success",
                received_at=repo.utcnow(),
                winner=hit["winner"],
                confidence=hit["confidence"],
                justification=hit["justification"],
                tokens_in=hit["tokens_in"],
                tokens_out=hit["tokens_out"],
                latency_s=0.0,
                cached=True,
            )
        )
        self.cache_hits += 1
        self.wf.record_success(slot.a, slot.b, str(hit["winner"]), slot.mode, key=slot.slot)
        self._emit("call", slot.wave)

    # ------------------------------------------------------------ wave end

    async def _end_wave(self, wave_no: int, asked: list[tuple[int, int]]) -> Decision:
        mode = self.wf.mode
        end = self.wf.end_wave(wave_no, asked)
        await repo.save_wave_end(
            self.store,
            self.batch.id,
            wave={
                "wave": wave_no,
                "mode": mode.value,
                "size": len(asked),
                "successes": end.successes,
                "max_score_change": end.max_score_change,
                "ssr": end.ssr,
                "calls_sent": self.wf.calls_sent,
                "decision": end.decision.action.value,
                "reason": end.decision.reason.value,
            },
            state={
                **self._state_values(),
                "max_possible_pairs": self.wf.max_possible_pairs,
                "successful_pairs_count": self.wf.successful_pairs_count,
                "unique_coverage_complete": (
                    self.wf.successful_pairs_count == self.wf.max_possible_pairs
                ),
                "resampling_pass_count": self.wf.pass_count,
                "pass_remaining": sorted([a, b] for a, b in self.wf.pass_remaining),
                "current_mode": self.wf.mode.value,
                "extra_json": {"scores": [float(x) for x in self.wf.scores]},
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

    def _state_values(self) -> dict[str, Any]:
        return {
            "calls_sent": self.wf.calls_sent,
            "successes": self.wf.successes,
            "failures": self.wf.failures,
            "iteration": self.wf.waves_completed,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.wf.cost_usd,
        }

    # ------------------------------------------------------------ endings

    async def _interrupted(self) -> RunResult:
        assert self.recorder is not None
        await self.recorder.flush()
        await repo.save_wave_end(self.store, self.batch.id, wave=None, state=self._state_values())
        await repo.set_status(self.store, self.batch.id, "INTERRUPTED", "interrupted")
        self._emit("finished", self.wf.waves_completed, reason="interrupted")
        return RunResult(self.batch.id, "INTERRUPTED", "interrupted", interrupted=True)

    async def _finalize(self, decision: Decision) -> RunResult:
        status = "FAILED" if decision.action == Action.FINALIZE_FAILURE else "COMPLETED"
        await finalize_batch(
            self.store,
            self.batch.id,
            nodes=self.nodes,
            workflow=self.wf,
            settings=self.settings,
            grade_scale=self.grade_scale,
            status=status,
            stop_reason=decision.reason.value,
            state_values={
                **self._state_values(),
                "extra_json": {
                    "scores": [float(x) for x in self.wf.scores],
                    "cache_hits": self.cache_hits,
                    "lost_on_resume": self.lost_on_resume,
                },
            },
        )
        self._emit("finished", self.wf.waves_completed, reason=decision.reason.value)
        return RunResult(self.batch.id, status, decision.reason.value)
