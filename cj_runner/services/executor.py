"""The async wave loop: select pairs, ask the judge, store every answer, refit, decide.

The executor owns the budget and the retries. Every call is stored as ``sent`` before it
goes out and its answer as soon as it arrives (:class:`~cj_runner.storage.recorder.Recorder`),
so a crash loses at most the calls in flight. The in-memory state is rebuilt from the
stored attempts when a run starts, so a new batch and a resumed one take the same path.
Nothing here prints: progress goes out through a callback.

Resuming (after a crash, a kill or Ctrl-C):

* Calls stored as ``sent`` without an answer become ``lost``: they count against the
  budget (they may have been billed) and are asked again while budget remains. A lost
  call is not a judge error: it does not use up one of ``MAX_ATTEMPTS_PER_COMPARISON``,
  and the call that replaces it carries the same attempt number to the judge, so a
  deterministic judge gives the answer the lost call would have given.
* The wave that was under way (its comparisons are stored as ``planned`` before the
  first call) is finished first: its unanswered comparisons are asked, then the wave is
  closed as an uninterrupted run would have closed it. Wave ``k`` draws its pairs from
  ``default_rng([seed, k])`` and the fit adds comparisons in slot order, so a resumed
  batch asks the same pairs as an uninterrupted one.
* One process at a time: a lock on the batch row with a heartbeat. It is taken over
  when its process is gone (same host, pid not running) or its heartbeat is stale; every
  write of a run checks that it still holds the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cj_runner.config import Settings, continuation_limits
from cj_runner.core.continuation import Action, Decision, StopReason
from cj_runner.core.models import GradeScale, Mode
from cj_runner.core.workflow import WorkflowState, exhausted_decision, robust_reliability_hook
from cj_runner.errors import BatchLockedError, ScoringError, UserError
from cj_runner.judges.base import AssignmentText, EssayText, Judge
from cj_runner.judges.config import token_cost
from cj_runner.judges.retry import RetryPolicy
from cj_runner.services.calls import CallOutcome, CallRunner, Slot
from cj_runner.services.finalize import fail_scoring, finalize_batch
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import AttemptResult, PlannedRow, Recorder

HEARTBEAT_S = 10.0
INTERRUPT_GRACE_S = 5.0
FINAL_STATUSES = ("success", "failed")
FINISHED_BATCH_STATUSES = ("COMPLETED", "FAILED")


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
class _OpenWave:
    """A wave that was planned but not closed when the last run stopped."""

    wave: int
    mode: str | None  # the wave's mode (None: only audit pairs; keep the stored mode)
    asked: list[tuple[int, int]]
    unfinished: list[Slot]


UNREACHABLE_AFTER = 3
"""Connection failures, before any answer, after which a run stops (nothing else sent)."""


@dataclass
class RunResult:
    """How a run ended."""

    batch_id: str
    status: str
    stop_reason: str | None
    interrupted: bool = False
    unreachable: str | None = None
    """Set when the run stopped because its first calls could not reach the judge."""


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
    # a killed process whose parent has not reaped it yet is a zombie: it holds nothing
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


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
        call_log: Callable[[Slot, AttemptResult], None] | None = None,
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
        self.call_log = call_log
        self.unreachable: str | None = None
        self._connection_failures = 0
        self._judge_answered = False
        self.wf = self._workflow(batch.state)
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
            # a server's Retry-After never sleeps longer than RETRY_MAX_DELAY_S
            max_retry_after_s=settings.RETRY_MAX_DELAY_S,
        )
        # the judgment cache: answers by request key (see Judge.cache_key)
        self.cache: dict[str, dict[str, Any]] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.recorder: Recorder | None = None
        self.calls: CallRunner | None = None
        self.lost_on_resume = 0
        self.lost_total = 0
        self.cache_hits = 0
        self.asks: dict[tuple[int, int], int] = {}
        self.tokens_in = 0
        self.tokens_out = 0
        self.tokens_cached = 0
        self.next_slot = 1
        self.lock_lost = False
        self._last_decision: tuple[str, str] | None = None
        self._wave_successes: dict[int, int] = {}

    def _workflow(self, state: dict[str, Any]) -> WorkflowState:
        """The workflow state as stored after the last closed wave."""
        settings = self.settings
        students = [n.idx for n in self.nodes if not n.is_anchor]
        anchor_grades: dict[int, int] = {}
        if self.grade_scale is not None:
            anchor_grades = {
                n.idx: self.grade_scale.index(n.known_grade)
                for n in self.nodes
                if n.is_anchor and n.known_grade in self.grade_scale.grades
            }
        return WorkflowState(
            n_nodes=len(self.nodes),
            n_students=sum(1 for n in self.nodes if not n.is_anchor),
            total_budget=int(state["total_budget"]),
            limits=continuation_limits(settings),
            wave_size=settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION,
            strategy=settings.MATCHING_STRATEGY,
            seed=self.batch.seed,
            prior_precision=settings.BT_PRIOR_PRECISION,
            min_resampling_net_size=settings.MIN_RESAMPLING_NET_SIZE,
            mode=Mode(state.get("current_mode") or Mode.COVERAGE.value),
            waves_completed=int(state.get("iteration") or 0),
            pass_count=int(state.get("resampling_pass_count") or 0),
            pass_remaining={(int(p[0]), int(p[1])) for p in state.get("pass_remaining") or []},
            audit_share=settings.AUDIT_SHARE,
            order_effect=settings.FIT_ORDER_EFFECT,
            anchor_grades=anchor_grades,
            n_grades=len(self.grade_scale.grades) if self.grade_scale is not None else 0,
            robust_reliability_fn=(
                robust_reliability_hook(students)
                if settings.TARGET_RELIABILITY is not None
                else None
            ),
        )

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

    def _add_tokens(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> None:
        """Count the tokens of one billed attempt (any outcome) in the batch's cost."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.tokens_cached += tokens_cached
        self.wf.cost_usd = token_cost(
            self.tokens_in,
            self.tokens_out,
            self.tokens_cached,
            price_in=self.judge.price_input_per_mtok,
            price_out=self.judge.price_output_per_mtok,
            price_cached=getattr(self.judge, "price_cached_input_per_mtok", None),
        )

    def _count_ask(self, slot: Slot) -> None:
        """A comparison of this ordered pair finished (success or for good failed)."""
        key = (slot.a, slot.b)
        self.asks[key] = self.asks.get(key, 0) + 1

    # ------------------------------------------------------------ rebuild

    async def _rebuild(self) -> _OpenWave | None:
        """Rebuild the workflow from the stored batch and attempts (after taking the lock).

        Returns the wave that was under way when the last run stopped, if any.
        """
        self.batch = await repo.find_batch(self.store, self.batch.id)
        if self.batch.status in FINISHED_BATCH_STATUSES:
            raise UserError(
                f"batch {self.batch.id} already finished ({self.batch.status}, "
                f"{self.batch.stop_reason}); nothing to resume"
            )
        self.wf = self._workflow(self.batch.state)
        self.lost_on_resume = await repo.mark_in_flight_lost(self.store, self.batch.id)
        attempts = await repo.load_attempts(self.store, self.batch.id)
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for row in attempts:
            by_slot.setdefault(row["slot"], []).append(row)
            if row["call_no"] is not None:
                self.wf.calls_sent = max(self.wf.calls_sent, int(row["call_no"]))
            if not row["cached"]:
                self._add_tokens(
                    int(row["tokens_in"] or 0),
                    int(row["tokens_out"] or 0),
                    int(row.get("tokens_cached") or 0),
                )
        self.lost_total = sum(1 for r in attempts if r["error_kind"] == "lost")
        open_wave: _OpenWave | None = None
        for slot_no in sorted(by_slot):
            rows = by_slot[slot_no]
            last = rows[-1]
            self.next_slot = max(self.next_slot, slot_no + 1)
            wave = int(last["wave"])
            if wave > self.wf.waves_completed:
                if open_wave is None:
                    open_wave = _OpenWave(wave, None, [], [])
                if open_wave.mode is None and last["mode"] != Mode.AUDIT.value:
                    open_wave.mode = last["mode"]  # audit pairs come last in a wave
                open_wave.asked.append((last["a_idx"], last["b_idx"]))
            pair = (int(last["a_idx"]), int(last["b_idx"]))
            if last["status"] in ("success", "failed"):
                self.asks[pair] = self.asks.get(pair, 0) + 1
            if last["status"] == "success":
                self.wf.record_success(
                    last["a_idx"], last["b_idx"], last["winner"], last["mode"], key=slot_no
                )
                self._wave_successes[wave] = self._wave_successes.get(wave, 0) + 1
                self.cache_hits += int(bool(last["cached"]))
            elif last["status"] == "failed":
                self.wf.record_failure()
            elif last["status"] in ("planned", "lost", "retried") and open_wave is not None:
                # only the open wave can hold unfinished comparisons: a wave is closed
                # after every one of its comparisons finished
                planned = last["status"] == "planned"
                open_wave.unfinished.append(
                    Slot(
                        slot=slot_no,
                        a=last["a_idx"],
                        b=last["b_idx"],
                        mode=last["mode"],
                        wave=wave,
                        repeat_index=last["repeat_index"],
                        next_attempt=int(last["attempt"]) + (0 if planned else 1),
                        planned_row=planned,
                        # a resend after a refused form is the same attempt for the judge
                        judge_attempt=1
                        + sum(
                            1
                            for r in rows
                            if r["status"] == "retried" and r["error_kind"] != "unsupported"
                        ),
                        truncations=sum(1 for r in rows if r["error_kind"] == "truncated"),
                        ask_index=self.asks.get(pair, 0),
                    )
                )
        extra = self.batch.state.get("extra_json") or {}
        scores = extra.get("scores")
        if scores is not None and len(scores) == self.wf.n_nodes:
            self.wf.scores = np.asarray(scores, dtype=float)
            self.wf.have_fit = bool(extra.get("have_fit", True))
        waves = await repo.load_waves(self.store, self.batch.id)
        if waves and waves[-1]["decision"] and open_wave is None:
            self._last_decision = (waves[-1]["decision"], waves[-1]["reason"])
        if self.use_cache:
            self.cache = await repo.cache_entries(self.store, self.judge.model)
        return open_wave

    # ------------------------------------------------------------ main loop

    async def run(self) -> RunResult:
        """Run the batch to its stop; returns its final status and reason.

        Raises:
            BatchLockedError: another live process runs this batch, or took it over.
            UserError: the batch already finished.
        """
        await repo.acquire_lock(self.store, self.batch.id, self.owner, owner_alive=lock_owner_alive)
        beat = asyncio.create_task(self._heartbeat())
        try:
            async with Recorder(self.store, self.batch.id, owner=self.owner) as recorder:
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
        open_wave = await self._rebuild()
        assert self.recorder is not None
        self.calls = CallRunner(
            judge=self.judge,
            recorder=self.recorder,
            texts=self.texts,
            assignment=self.assignment,
            retry_policy=self.retry_policy,
            budget=self.wf,
            seed=self.batch.seed,
            stop_event=self.stop_event,
            sleep=self._sleep,
            cache=self.cache if self.use_cache else None,
            batch_id=self.batch.id,
            on_attempt=self._on_attempt,
            on_done=self._on_done,
        )
        await repo.set_status(self.store, self.batch.id, "RUNNING", owner=self.owner)
        self._emit("start", self.wf.waves_completed)
        decision: Decision | None = None
        if open_wave is not None:
            # the last run stopped inside a wave: finish that wave first
            if open_wave.mode is not None:
                self.wf.mode = Mode(open_wave.mode)
            decision = await self._wave(open_wave.wave, open_wave.unfinished, open_wave.asked)
        elif self._last_decision is not None and self._last_decision[0] in (
            Action.FINALIZE_SCORING.value,
            Action.FINALIZE_FAILURE.value,
        ):
            # the last run stopped between its last wave and finalization
            decision = Decision(Action(self._last_decision[0]), StopReason(self._last_decision[1]))
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
            decision = await self._wave(wave_no, slots, [(s.a, s.b) for s in slots])

    async def _wave(
        self, wave_no: int, slots: list[Slot], asked: list[tuple[int, int]]
    ) -> Decision | None:
        """Run a wave's calls, then close it; ``None`` when interrupted.

        ``asked`` is every pair of the wave, ``slots`` the ones still to ask.
        """
        await self._run_wave(wave_no, slots)
        if self.stop_event.is_set():
            return None
        decision = await self._end_wave(wave_no, asked)
        if self.calls is not None and self.calls.fatal is not None:
            # the judge cannot answer any call (bad key, no quota...): stop at once
            return Decision(Action.FINALIZE_FAILURE, StopReason.JUDGE_UNAVAILABLE)
        return decision

    def _plan_wave(self, wave_no: int) -> list[Slot]:
        pairs = self.wf.plan_wave()
        slots = []
        for pair, mode in zip(pairs, self.wf.wave_modes, strict=True):
            slots.append(
                Slot(
                    slot=self.next_slot,
                    a=pair.a,
                    b=pair.b,
                    mode=mode.value,
                    wave=wave_no,
                    repeat_index=self.wf.repeat_index(pair.a, pair.b),
                    ask_index=self.asks.get((pair.a, pair.b), 0),
                )
            )
            self.next_slot += 1
        return slots

    async def _run_wave(self, wave_no: int, slots: list[Slot]) -> None:
        self._emit("wave_start", wave_no)
        semaphore = asyncio.Semaphore(self.settings.MAX_CONCURRENT_REQUESTS)
        calls = self.calls
        assert calls is not None
        tasks = [asyncio.create_task(calls.run(s, semaphore)) for s in slots]
        stop_wait = asyncio.create_task(self.stop_event.wait())
        try:
            pending: set[asyncio.Future[Any]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(
                    pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop_wait)
                for task in done:
                    if task is not stop_wait and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if stop_wait in done:
                    # stop sending; give the calls in flight a moment to answer
                    if pending:
                        await asyncio.wait(pending, timeout=INTERRUPT_GRACE_S)
                    break
        finally:
            stop_wait.cancel()
            late = [t for t in tasks if not t.done()]
            for task in late:
                task.cancel()
            await asyncio.gather(stop_wait, *late, return_exceptions=True)
            for task in tasks:  # read every failure, so none is reported "never retrieved"
                if not task.cancelled():
                    task.exception()
        assert self.recorder is not None
        await self.recorder.flush()

    def _on_attempt(self, slot: Slot, result: AttemptResult) -> None:
        """A call's result was stored: count its tokens; report a failed one."""
        if self.call_log is not None:
            self.call_log(slot, result)
        self._watch_connection(result)
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
        """A comparison ended: update the workflow state."""
        if outcome.status == "success":
            assert outcome.verdict is not None
            self.cache_hits += int(outcome.cached)
            self.wf.record_success(slot.a, slot.b, outcome.verdict.winner, slot.mode, key=slot.slot)
            self._count_ask(slot)
            self._wave_successes[slot.wave] = self._wave_successes.get(slot.wave, 0) + 1
            self._emit("call", slot.wave)
        elif outcome.status == "failed":
            self.wf.record_failure()
            self._count_ask(slot)

    # ------------------------------------------------------------ wave end

    async def _end_wave(self, wave_no: int, asked: list[tuple[int, int]]) -> Decision:
        mode = self.wf.mode
        # the refit runs in a thread so the lock's heartbeat keeps beating on big batches
        try:
            end = await asyncio.to_thread(self.wf.end_wave, wave_no, asked)
        except Exception as exc:  # a failed fit must not leave the batch RUNNING
            raise ScoringError(
                f"batch {self.batch.id}: scoring failed at the end of wave {wave_no} "
                f"({type(exc).__name__}: {exc}); the batch is marked FAILED"
            ) from exc
        await repo.save_wave_end(
            self.store,
            self.batch.id,
            owner=self.owner,
            wave={
                "wave": wave_no,
                "mode": mode.value,
                "size": len(asked),
                "successes": self._wave_successes.get(wave_no, 0),
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
                "extra_json": {
                    "scores": [float(x) for x in self.wf.scores],
                    "have_fit": self.wf.have_fit,
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
        if self.lock_lost:
            raise BatchLockedError(
                f"batch {self.batch.id} was taken over by another process; this one stopped"
            )
        await self.recorder.flush()
        # calls still unanswered after the grace period: counted, asked again on resume
        await repo.mark_in_flight_lost(self.store, self.batch.id)
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
                    "scores": [float(x) for x in self.wf.scores],
                    "have_fit": self.wf.have_fit,
                    "cache_hits": self.cache_hits,
                    "lost_on_resume": self.lost_on_resume,
                    "lost_calls": self.lost_total,
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
        planned comparisons are cancelled; COMPLETED with stop reason ``finalized_early``.

        Raises:
            BatchLockedError: another live process runs this batch.
            UserError: the batch already finished.
            ScoringError: the final fit failed (the batch is then FAILED).
        """
        await repo.acquire_lock(self.store, self.batch.id, self.owner, owner_alive=lock_owner_alive)
        try:
            async with Recorder(self.store, self.batch.id, owner=self.owner) as recorder:
                self.recorder = recorder
                open_wave = await self._rebuild()
                for slot in open_wave.unfinished if open_wave is not None else []:
                    if slot.planned_row:
                        await recorder.cancel(slot.slot, slot.next_attempt)
                await recorder.flush()
                decision = Decision(Action.FINALIZE_SCORING, StopReason.FINALIZED_EARLY)
                try:
                    return await self._finalize(decision)
                except ScoringError as exc:
                    await fail_scoring(self.store, self.batch.id, str(exc), self._state_values())
                    raise
        finally:
            with contextlib.suppress(Exception):
                await repo.release_lock(self.store, self.batch.id, self.owner)
