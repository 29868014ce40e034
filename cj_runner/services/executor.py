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
import bisect
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cj_runner.config import Settings
from cj_runner.core.continuation import Action, Decision, StopReason
from cj_runner.core.models import GradeScale, Mode, PlannedPair
from cj_runner.core.workflow import WorkflowState, exhausted_decision
from cj_runner.errors import BatchLockedError, ScoringError, UserError
from cj_runner.judges.base import AssignmentText, EssayText, Judge
from cj_runner.judges.batch_api import BatchAPI
from cj_runner.judges.config import (
    JudgeConfig,
    judge_config_from_mapping,
    token_cost,
)
from cj_runner.judges.panel import member_of
from cj_runner.judges.retry import RetryPolicy
from cj_runner.services.batch_jobs import JobRunner
from cj_runner.services.calls import CallOutcome, CallRunner, Slot
from cj_runner.services.finalize import fail_scoring, finalize_batch
from cj_runner.services.workflow_setup import batch_workflow
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import AttemptResult, PlannedRow, Recorder
from cj_runner.storage.scores_codec import SCORES_KEY, pack_scores, unpack_scores

HEARTBEAT_S = 10.0
GROUP_COMMIT_WINDOW_S = 0.01
"""Shortest time between two of a run's write transactions (they gather what came
meanwhile): at hundreds of answers a second, fewer and larger commits leave the event loop
free for the calls; an answer waits at most this long for its commit. Waited only while a
judge call is in flight: with none, no answer is on its way and the recorder waits at most
its ``IDLE_WINDOW_S`` (a zero-latency judge ran at 830 calls/s with the full window)."""
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
    job: str | None = None  # batch-API mode: the provider job's state, one line


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class _OpenWave:
    """A wave planned and not closed yet: its calls may be in flight or answered.

    Its results wait in ``results`` until every earlier wave is closed and its own
    comparisons all finished: the workflow sees waves whole and in order, whatever the
    order the answers came in.
    """

    no: int
    mode: str | None  # the wave's mode (None: only audit pairs; keep the current mode)
    slots: list[Slot]  # every comparison of the wave, in slot order
    unfinished: set[int] = field(default_factory=set)
    results: dict[int, tuple[str, str | None, bool]] = field(default_factory=dict)
    calls: int = 0  # calls its comparisons sent (the budget of the closed waves)
    successes: int = 0
    started: bool = False  # its calls may go out (the send window reached it)


class _SlotOrderBudget:
    """The budget, handed out to comparisons in slot order whatever the timing.

    Every call sent is counted at the moment it is sent (the budget is never exceeded).
    Each unfinished comparison has a worst case: the calls it may still send
    (``MAX_ATTEMPTS_PER_COMPARISON`` minus the judge attempts it has sent). A call of
    comparison ``s`` goes out when it fits even if every comparison of a lower slot sends
    its worst case; it is refused when no call fits at all; otherwise it waits until the
    earlier comparisons settle. So the calls sent are exactly those of asking the
    comparisons one after the other in slot order, retries included, and a planned
    comparison is never starved by a later one. (A fallback after a refused request form
    is a call beyond the worst case: with real providers, not the mock judge, the last
    calls of a binding budget may then go to a later comparison.)
    """

    def __init__(self, total_budget: int, max_attempts: int, *, ordered: bool = True) -> None:
        self.total_budget = total_budget
        self.max_attempts = max_attempts
        self.ordered = ordered  # False: any call fits while the budget lasts
        self.calls_sent = 0
        self._slots: list[int] = []  # unfinished comparisons, sorted
        self._worst: dict[int, int] = {}
        self._worst_total = 0  # sum of _worst: while the budget covers it, every call fits
        self._changed = asyncio.Event()

    def _set_worst(self, slot: int, worst: int) -> None:
        self._worst_total += worst - self._worst.get(slot, 0)
        self._worst[slot] = worst

    def add(self, slot: int, judge_attempt: int = 1) -> None:
        """An unfinished comparison whose next call is judge attempt ``judge_attempt``."""
        if not self.ordered:
            return
        if slot not in self._worst:
            bisect.insort(self._slots, slot)
        self._set_worst(slot, max(0, self.max_attempts - judge_attempt + 1))

    def _earlier(self, slot: int) -> int:
        return sum(self._worst[u] for u in self._slots[: bisect.bisect_left(self._slots, slot)])

    def fits(self, slot: int) -> bool | None:
        if self.calls_sent >= self.total_budget:
            return False
        # the worst case of every unfinished comparison bounds that of the earlier ones
        if self.calls_sent + 1 + self._worst_total <= self.total_budget:
            return True
        if self.calls_sent + 1 + self._earlier(slot) <= self.total_budget:
            return True
        return None

    async def turn(self, slot: int) -> bool:
        while True:
            fits = self.fits(slot)
            if fits is not None:
                return fits
            self._changed.clear()
            await self._changed.wait()

    def count_call(self, slot: int | None = None, judge_attempt: int = 1) -> int:
        self.calls_sent += 1
        if slot is not None and slot in self._worst:
            self._set_worst(slot, max(0, self.max_attempts - judge_attempt))
            self._changed.set()
        return self.calls_sent

    def finish(self, slot: int) -> None:
        worst = self._worst.pop(slot, None)
        if worst is not None:
            self._worst_total -= worst
            del self._slots[bisect.bisect_left(self._slots, slot)]
            self._changed.set()


def _stored_panel(batch: repo.BatchRecord) -> JudgeConfig | None:
    """The batch's panel as stored with it (``None``: one judge)."""
    if not isinstance(batch.judge, dict) or not batch.judge.get("panel"):
        return None
    return judge_config_from_mapping(batch.judge, f"batch {batch.id}: judge")


def _stored_doubles(attempts: Sequence[dict[str, Any]]) -> int:
    """Pairs a panel batch asked of two judges on purpose, in its stored waves: a wave
    holds an edge twice only then (selection never plans an edge in flight again)."""
    seen: set[tuple[int, int, int]] = set()
    doubles = 0
    for row in attempts:
        if int(row["attempt"]) != 1:
            continue
        a, b = int(row["a_idx"]), int(row["b_idx"])
        key = (int(row["wave"]), min(a, b), max(a, b))
        if key in seen:
            doubles += 1
        seen.add(key)
    return doubles


def send_window(settings: Settings) -> int:
    """How many waves past the last closed one may send (spec §5a): ``ceil(4 C / wave)``.

    After wave ``k`` closed, the calls of waves ``k + 1 .. k + window`` may go out. Those
    waves hold about ``4 C`` calls, so the ``C`` slots stay busy while the oldest open
    wave waits for its slowest answers (with heavy-tailed latencies a wave's last answer
    can take several times the median) and while it is refitted. The window depends only
    on the settings, so a seeded batch asks the same pairs whatever the timing
    (defaults, C = 8 and waves of 12: 3; C = 32: 11).
    """
    c = settings.MAX_CONCURRENT_REQUESTS
    w = settings.COMPARISONS_PER_STABILITY_CHECK_ITERATION
    return max(2, -(-4 * c // w))


def pipeline_depth(settings: Settings) -> int:
    """How many waves may be open (planned and not closed) at once: the send window + 1.

    Wave ``k + depth`` is planned from the state after wave ``k`` closed and stored, and
    may send once wave ``k + 1`` closes: its plan (the refit, pair selection and the
    plan's commit) is never on the path of a call.
    """
    return send_window(settings) + 1


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
        batch_api: BatchAPI | None = None,
        batch_poll_s: float = 30.0,
    ) -> None:
        self.store = store
        self.batch = batch
        self.nodes = list(nodes)
        self.judge = judge
        # a panel (as stored with the batch): the executor plans the judge of every
        # comparison and stores it; the panel judge asks the member a request names
        self.panel = _stored_panel(batch)
        self.settings = settings
        self.assignment = assignment or AssignmentText()
        self.grade_scale = grade_scale
        self.progress = progress
        self.use_cache = use_cache
        self.stop_event = stop_event or asyncio.Event()
        self._sleep = sleep
        self.call_log = call_log
        # batch-API mode: each wave goes out as provider jobs (services/batch_jobs.py)
        self.batch_api = batch_api
        self.batch_poll_s = batch_poll_s
        self.jobs: JobRunner | None = None
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
        self.live = self._new_budget()
        # batch-API mode: one wave at a time, planned after the one before closed (a
        # job's answers arrive together)
        self.window = 1 if batch_api is not None else send_window(settings)
        self.depth = 1 if batch_api is not None else self.window + 1
        self.gate = 0  # the last wave whose calls may go out
        self.semaphore = asyncio.Semaphore(settings.MAX_CONCURRENT_REQUESTS)
        self.halt = asyncio.Event()  # no new sends: a stop decision or an interrupt
        self._changed = asyncio.Event()  # a comparison finished (or the run stops)
        self.open: dict[int, _OpenWave] = {}
        self.next_wave = 1
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.stopped: dict[int, tuple[Slot, CallOutcome]] = {}
        self._send_order: list[int] = []  # first calls of planned comparisons, slot order
        self._order_index: dict[int, int] = {}
        self._released_upto = 0  # _send_order[:this] is released
        self._passed = 0  # _send_order[:this] passed their release (sent or about to be)
        self._releasing: asyncio.Future[None] | None = None
        self._prefetch: asyncio.Task[None] | None = None
        self._task_error: BaseException | None = None

    def _new_budget(self) -> _SlotOrderBudget:
        # batch-API mode sends one wave at a time as jobs: nothing to order across waves
        return _SlotOrderBudget(
            int(self.batch.state["total_budget"]),
            self._max_calls_per_comparison(),
            ordered=self.batch_api is None,
        )

    def _max_calls_per_comparison(self) -> int:
        """The most calls one comparison may send: its attempts, or one with a judge that
        cannot fail (the mock judge with no error rates)."""
        if getattr(self.judge, "retries_possible", True):
            return self.settings.MAX_ATTEMPTS_PER_COMPARISON
        return 1

    def _workflow(self, state: dict[str, Any]) -> WorkflowState:
        """The workflow state as stored after the last closed wave."""
        return batch_workflow(
            self.settings,
            self.nodes,
            seed=self.batch.seed,
            total_budget=int(state["total_budget"]),
            grade_scale=self.grade_scale,
            judge=self.panel,
            stored=state,
        )

    # ------------------------------------------------------------ helpers

    def _emit(self, kind: str, wave: int, **extra: Any) -> None:
        if self.progress is None:
            return
        self.progress(
            ProgressEvent(
                kind=kind,
                calls_sent=self.live.calls_sent,
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

    # ------------------------------------------------------------ rebuild

    async def _rebuild(self) -> dict[int, _OpenWave]:
        """Rebuild the workflow from the stored batch and attempts (after taking the lock).

        The workflow gets the results of the closed waves (in slot order); the waves
        planned and not closed (several when waves were pipelined) are returned with
        their finished results buffered and their unfinished comparisons to ask.
        """
        self.batch = await repo.find_batch(self.store, self.batch.id)
        if self.batch.status in FINISHED_BATCH_STATUSES:
            raise UserError(
                f"batch {self.batch.id} already finished ({self.batch.status}, "
                f"{self.batch.stop_reason}); nothing to resume"
            )
        self.wf = self._workflow(self.batch.state)
        self.live = self._new_budget()
        closed = self.wf.waves_completed
        self.lost_on_resume = await repo.mark_in_flight_lost(self.store, self.batch.id)
        attempts = await repo.load_attempts(self.store, self.batch.id)
        if self.use_cache:
            self.cache = await repo.cache_entries(self.store, self.judge.model)
        # a run that died (status still RUNNING) may have sent released calls unrecorded
        crashed = self.batch.status == "RUNNING"
        self.lost_on_resume += await self._possibly_sent(attempts, crashed)
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for row in attempts:
            by_slot.setdefault(row["slot"], []).append(row)
            if row["call_no"] is not None:
                self.live.calls_sent = max(self.live.calls_sent, int(row["call_no"]))
                if int(row["wave"]) <= closed:
                    self.wf.calls_sent += 1
            if not row["cached"]:
                self._add_tokens(
                    int(row["tokens_in"] or 0),
                    int(row["tokens_out"] or 0),
                    int(row.get("tokens_cached") or 0),
                )
        self.lost_total = sum(1 for r in attempts if r["error_kind"] == "lost")
        open_waves: dict[int, _OpenWave] = {}
        for slot_no in sorted(by_slot):
            rows = by_slot[slot_no]
            last = rows[-1]
            self.next_slot = max(self.next_slot, slot_no + 1)
            wave = int(last["wave"])
            pair = (int(last["a_idx"]), int(last["b_idx"]))
            ask_index = self.asks.get(pair, 0)
            self.asks[pair] = ask_index + 1
            slot = Slot(
                slot=slot_no,
                a=pair[0],
                b=pair[1],
                mode=last["mode"],
                wave=wave,
                repeat_index=last["repeat_index"],
                ask_index=ask_index,
                judge=last.get("judge"),
            )
            status = last["status"]
            if wave <= closed:
                if status == "success":
                    self.wf.record_success(pair[0], pair[1], last["winner"], slot.mode, key=slot_no)
                    self.cache_hits += int(bool(last["cached"]))
                elif status == "failed":
                    self.wf.record_failure()
                continue
            w = open_waves.get(wave)
            if w is None:
                w = open_waves[wave] = _OpenWave(wave, None, [])
            if w.mode is None and slot.mode != Mode.AUDIT.value:
                w.mode = slot.mode  # audit pairs come last in a wave
            w.slots.append(slot)
            # (a call still ``sent`` inside a provider job is counted when its answer
            # is stored, by _on_attempt)
            w.calls += sum(1 for r in rows if r["call_no"] is not None and r["status"] != "sent")
            if status in ("success", "failed", "cancelled"):
                winner = last["winner"] if status == "success" else None
                w.results[slot_no] = (status, winner, bool(last["cached"]))
            else:  # planned, lost or retried: asked again
                planned = status == "planned"
                # ``sent``: a call inside a provider job that has not ended (batch-API
                # mode; mark_in_flight_lost left it): its answer is still coming
                slot.next_attempt = int(last["attempt"]) + (0 if planned or status == "sent" else 1)
                slot.planned_row = planned
                # a resend after a refused form (or of an expired batch request) is the
                # same attempt for the judge
                slot.judge_attempt = 1 + sum(
                    1
                    for r in rows
                    if r["status"] == "retried"
                    and r["error_kind"] not in ("unsupported", "expired")
                )
                slot.truncations = sum(1 for r in rows if r["error_kind"] == "truncated")
                self.live.add(slot_no, slot.judge_attempt)
                w.unfinished.add(slot_no)
        self.wf.doubles_planned = _stored_doubles(attempts)
        extra = self.batch.state.get("extra_json") or {}
        scores = unpack_scores(extra, self.wf.n_nodes)
        if scores is not None:
            self.wf.scores = scores
            self.wf.have_fit = bool(extra.get("have_fit", True))
        waves = await repo.load_waves(self.store, self.batch.id)
        if waves and waves[-1]["decision"] and int(waves[-1]["wave"]) == closed:
            self._last_decision = (waves[-1]["decision"], waves[-1]["reason"])
        self.next_wave = max([closed, *open_waves]) + 1
        return open_waves

    async def _possibly_sent(self, attempts: list[dict[str, Any]], crashed: bool) -> int:
        """Comparisons stored as ``released`` whose first call may have gone out.

        After a crash (``crashed``) they count as sent and lost: each gets a call number
        (``attempts`` is updated in place). After a clean stop every call sent was
        stored, so they are planned again. Returns how many were counted as sent.
        """
        released = sorted(
            (r for r in attempts if r["status"] == "released"), key=lambda r: int(r["slot"])
        )
        if not released:
            return 0
        if not crashed:
            await repo.unrelease(self.store, self.batch.id)
            for row in released:
                row["status"] = "planned"
            return 0
        top = max((int(r["call_no"]) for r in attempts if r["call_no"] is not None), default=0)
        calls = []
        for offset, row in enumerate(released, start=1):
            row.update(status="lost", error_kind="lost", call_no=top + offset)
            calls.append((int(row["slot"]), top + offset))
        await repo.mark_possibly_sent(self.store, self.batch.id, calls)
        return len(calls)

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
        self.open[wave_no] = _OpenWave(
            wave_no, mode, list(slots), unfinished={s.slot for s in slots}
        )
        self.next_wave = wave_no + 1
        self._open_gate(self.gate)

    # ------------------------------------------------------------ batch-API mode

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
            # the batch endpoints keep failing: stop, resumable (a job may be running)
            self.unreachable = jobs.stalled
            self.stop_event.set()
        self._changed.set()

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

    def _apply_results(self, wave: _OpenWave) -> None:
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

    async def _close_wave(self, wave: _OpenWave) -> Decision:
        del self.open[wave.no]
        if wave.mode is not None:
            self.wf.mode = Mode(wave.mode)
        self._apply_results(wave)
        return await self._end_wave(wave.no, [(s.a, s.b) for s in wave.slots], wave.successes)

    # ------------------------------------------------------------ wave end

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

    def _judging(self) -> bool:
        """A judge call is in flight (its answer may come while a commit gathers)."""
        return self.calls is not None and self.calls.judging > 0

    def _state_values(self) -> dict[str, Any]:
        return {
            "calls_sent": self.live.calls_sent,
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
                open_waves = await self._rebuild()
                for wave in open_waves.values():
                    for slot in wave.slots:
                        if slot.slot in wave.unfinished and slot.planned_row:
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
