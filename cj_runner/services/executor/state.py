"""The executor's state: what a run holds between judge calls, and the helpers every part
of the executor shares (progress events, token counts, the state values it stores).

:class:`ExecutorState` is the base of :class:`~cj_runner.services.executor.BatchExecutor`;
the parts of the run (resume, dispatch, waves, endings) are its subclasses, one module
each.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cj_runner.config import Settings
from cj_runner.core.models import GradeScale
from cj_runner.core.workflow import WorkflowState
from cj_runner.judges.base import AssignmentText, EssayText, Judge
from cj_runner.judges.batch_api import BatchAPI
from cj_runner.judges.config import (
    JudgeConfig,
    judge_config_from_mapping,
    token_cost,
)
from cj_runner.judges.retry import RetryPolicy
from cj_runner.services.batch_jobs import JobRunner
from cj_runner.services.calls import CallOutcome, CallRunner, Slot
from cj_runner.services.executor.budget import SlotOrderBudget, send_window
from cj_runner.services.workflow_setup import batch_workflow
from cj_runner.storage import Store
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import AttemptResult, Recorder

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
class OpenWave:
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


@dataclass
class RunResult:
    """How a run ended."""

    batch_id: str
    status: str
    stop_reason: str | None
    interrupted: bool = False
    unreachable: str | None = None
    """Set when the run stopped because its first calls could not reach the judge (or,
    in batch-API mode, the batch endpoints kept failing or refused the key)."""
    outstanding: int = 0
    """Batch-API mode: calls still due from provider jobs that had not ended when the
    judge turned unusable (stored as ``sent``; ``cj-run resume`` collects them)."""
    unknown_job: int | None = None
    """Batch-API mode: set when the run stopped because the provider does not know a job
    the batch stored (another key's project or workspace, or the job deleted or past the
    provider's retention): the calls in that job, stored as ``sent``."""

    def stopped_line(self, then: str) -> str | None:
        """The one line saying why the run stopped at once (its judge unreachable or
        unusable: :attr:`unreachable`) and what is left (:attr:`outstanding`); ``then``
        names what goes on with it (e.g. ``cj-run resume ID``). ``None`` otherwise."""
        if not self.unreachable:
            return None
        if self.unknown_job is not None:
            return (
                f"{self.unreachable}; the batch stopped at once (INTERRUPTED, nothing else "
                f"sent): the key in use may belong to another project, workspace or "
                f"organisation than the key the batch was started with, or the job was "
                f"deleted or is past the provider's retention; its {self.unknown_job} calls "
                f"stay stored as sent and are not paid again: set the key the batch was "
                f"started with, then {then} asks for the job again (if the job is gone, "
                f"cj-run finalize {self.batch_id} ends the batch with what it has)"
            )
        if self.outstanding:
            return (
                f"{self.unreachable}; the batch stopped at once (INTERRUPTED, nothing else "
                f"sent); {self.outstanding} paid calls in provider jobs that have not ended "
                f"stay stored as sent: fix the judge (key, credit), then {then} collects "
                f"their answers"
            )
        return (
            f"{self.unreachable}; the batch stopped at once (INTERRUPTED, nothing else "
            f"sent): fix the server or start again with the right --judge-base-url; "
            f"{then} continues it once the server answers"
        )


def stored_panel(batch: repo.BatchRecord) -> JudgeConfig | None:
    """The batch's panel as stored with it (``None``: one judge)."""
    if not isinstance(batch.judge, dict) or not batch.judge.get("panel"):
        return None
    return judge_config_from_mapping(batch.judge, f"batch {batch.id}: judge")


class ExecutorState:
    """What a run of one batch (new or resumed) holds, and the helpers every part shares."""

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
        self.panel = stored_panel(batch)
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
        self.outstanding = 0  # see RunResult.outstanding
        self.unknown_job: int | None = None  # see RunResult.unknown_job
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
        # what the TARGET_RELIABILITY stop checked, at the wave that stopped the batch
        self.stop_check: dict[str, float | None] | None = None
        self.live = self._new_budget()
        # batch-API mode: one wave at a time, planned after the one before closed (a
        # job's answers arrive together)
        self.window = 1 if batch_api is not None else send_window(settings)
        self.depth = 1 if batch_api is not None else self.window + 1
        self.gate = 0  # the last wave whose calls may go out
        self.semaphore = asyncio.Semaphore(settings.MAX_CONCURRENT_REQUESTS)
        self.halt = asyncio.Event()  # no new sends: a stop decision or an interrupt
        self._changed = asyncio.Event()  # a comparison finished (or the run stops)
        self.open: dict[int, OpenWave] = {}
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

    def _new_budget(self) -> SlotOrderBudget:
        # batch-API mode sends one wave at a time as jobs: nothing to order across waves
        return SlotOrderBudget(
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
