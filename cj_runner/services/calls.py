"""One comparison's calls: cache lookup, budget, the stored ``sent`` row, the judge, retries.

The executor schedules comparisons (:class:`Slot`) and owns the batch's state; a
:class:`CallRunner` asks the judge for one comparison until it has an answer, fails for
good, runs out of budget or is stopped, and stores every attempt on the way:

* the call is stored as ``sent`` (with its ``call_no``) before it goes out, and its answer
  the moment it arrives;
* every stored attempt result is passed to ``on_attempt`` (tokens, progress), and the
  comparison's end to ``on_done`` (the executor updates its workflow state there);
* retries wait as :mod:`cj_runner.judges.retry` says; the budget (``CallBudget``) is
  checked before each call: every HTTP request is one stored attempt and one unit of
  budget, a resend after a refused form included;
* every attempt stores the tokens the provider reported, whatever became of the answer.

What an error means for the comparison:

* ``unsupported`` (:class:`~cj_runner.errors.RequestRefused`): the server refused a
  request form or parameter and the judge switched; asked again at once, without using
  up one of ``MAX_ATTEMPTS_PER_COMPARISON``;
* ``truncated``: asked once more at once with the judge's larger token allowance; a
  second truncation fails the comparison;
* :class:`~cj_runner.errors.JudgeUnavailable` (bad key, no quota, unknown model...): no
  call can succeed. :attr:`CallRunner.fatal` is set before any other call can start, so
  no new call is sent; calls in flight finish; the executor ends the batch;
* other transient errors are retried after a wait (the provider's, capped), others fail
  the comparison.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cj_runner.errors import CJError, JudgeError, JudgeUnavailable, TransientJudgeError
from cj_runner.judges.base import (
    AssignmentText,
    EssayText,
    Judge,
    JudgeRequest,
    Verdict,
    cache_key_of,
)
from cj_runner.judges.retry import RetryPolicy, SleepFn, sleep_before_retry
from cj_runner.storage import repository as repo
from cj_runner.storage.recorder import (
    AttemptResult,
    CacheKey,
    Recorder,
    SentAttempt,
    UnstorableAnswer,
)
from cj_runner.storage.storable import valid_token_count

#: A cached answer: winner, confidence, justification, tokens_in, tokens_out and the
#: ``batch_id`` that paid for it, by the request key (:func:`cache_key_of`).
CachedAnswer = dict[str, Any]

#: Fallbacks (refused forms or parameters) one comparison may go through: a guard only;
#: each fallback changes the request, and there are few forms and parameters.
MAX_FALLBACKS = 8


@dataclass
class Slot:
    """One logical comparison of a wave."""

    slot: int
    a: int
    b: int
    mode: str
    wave: int
    repeat_index: int
    next_attempt: int = 1  # the stored row number of the next call
    planned_row: bool = True  # attempt 1 row exists as ``planned``
    judge_attempt: int = 1  # the attempt number the judge sees (lost calls do not count)
    ask_index: int = 0  # earlier comparisons of this ordered pair planned in the batch
    truncations: int = 0  # answers of this comparison cut off at the token limit so far
    judge: str | None = None  # a panel batch's judge for this comparison (stored with it)


class CallBudget(Protocol):
    """The batch's call budget, counted at the moment each call is sent, handed out to
    comparisons in slot order (see the executor's ``SlotOrderBudget``)."""

    calls_sent: int
    total_budget: int

    async def turn(self, slot: int) -> bool:
        """Wait until a call of ``slot`` surely fits (``True``) or surely does not."""
        ...

    def fits(self, slot: int) -> bool | None:
        """``True``: a call of ``slot`` fits now; ``False``: never; ``None``: not yet known."""
        ...

    def count_call(self, slot: int | None = None, judge_attempt: int = 1) -> int:
        """Count one call (of ``slot``) sent; returns its number (1 = first of the batch)."""
        ...

    def finish(self, slot: int) -> None:
        """``slot`` sends no more calls."""
        ...


@dataclass(frozen=True)
class CallOutcome:
    """How one comparison's calls ended.

    ``status``: ``success`` (``verdict`` set; ``cached`` when it came from the cache),
    ``failed`` (for good: a permanent error, retries used up, or no budget for a retry),
    ``cancelled`` (no budget for the first call), ``stopped`` (the run is stopping; the
    comparison stays unfinished and a resume asks it).
    """

    status: Literal["success", "failed", "cancelled", "stopped"]
    attempt: int = 0
    verdict: Verdict | None = None
    cached: bool = False


AttemptListener = Callable[[Slot, AttemptResult], None]
ReleaseGate = Callable[[Slot], Awaitable[None]]
DoneListener = Callable[[Slot, CallOutcome], None]


def checked_verdict(verdict: Verdict) -> Verdict:
    """``verdict``, when its token counts are believable.

    Raises:
        TransientJudgeError: kind ``bad_usage``: a token count that is negative, not an
            integer or absurdly large (see :func:`~cj_runner.storage.storable.valid_token_count`).
    """
    for name in ("tokens_in", "tokens_out", "tokens_cached"):
        value = getattr(verdict, name)
        if not valid_token_count(value):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            raise TransientJudgeError(
                "bad_usage", f"the judge reported an impossible token count: {name}={shown}"
            )
    return verdict


class CallRunner:
    """Runs the calls of one comparison at a time (many concurrently) for one batch run."""

    def __init__(
        self,
        *,
        judge: Judge,
        recorder: Recorder,
        texts: Sequence[EssayText],
        assignment: AssignmentText,
        retry_policy: RetryPolicy,
        budget: CallBudget,
        seed: int,
        stop_event: asyncio.Event,
        sleep: SleepFn,
        cache: dict[str, CachedAnswer] | None,
        batch_id: str,
        on_attempt: AttemptListener,
        on_done: DoneListener,
        release: ReleaseGate | None = None,
        interrupt: asyncio.Event | None = None,
    ) -> None:
        self.judge = judge
        self.recorder = recorder
        self.texts = texts
        self.assignment = assignment
        self.retry_policy = retry_policy
        self.budget = budget
        self.seed = seed
        self.stop_event = stop_event
        self.sleep = sleep
        self.cache = cache  # None: the cache is off
        self.batch_id = batch_id
        self.on_attempt = on_attempt
        self.on_done = on_done
        #: the error that made the judge unusable; set, no new call is sent
        self.fatal: JudgeError | None = None
        # set: a first call goes out once ``release`` committed its comparison's release,
        # without waiting for its sent row (Recorder.sent_ahead); None: always wait
        self.release = release
        # the run's interrupt (a signal): checked here directly, not only through
        # ``stop_event``, which a watcher sets a loop turn later -- a slot freed in that
        # turn must not send another call after the signal arrived
        self.interrupt = interrupt
        #: judge calls sent and not answered yet (the recorder gathers writes only then)
        self.judging = 0

    def _stopping(self) -> bool:
        """No new send: a stop decision, or an interrupt already received."""
        return self.stop_event.is_set() or (self.interrupt is not None and self.interrupt.is_set())

    def sent_attempt(self, slot: Slot, attempt: int, call_no: int) -> SentAttempt:
        """The row of one call about to go out (synchronous calls and batch-API jobs)."""
        return SentAttempt(
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
            judge=slot.judge,
        )

    def _cache_key(self, slot: Slot) -> str | None:
        """The request's key in the judgment cache (None when the cache is off)."""
        if self.cache is None:
            return None
        request = JudgeRequest(
            essay_a=self.texts[slot.a],
            essay_b=self.texts[slot.b],
            assignment=self.assignment,
            repeat_index=slot.repeat_index,
            judge=slot.judge,
        )
        return cache_key_of(self.judge, request)

    def _done(self, slot: Slot, outcome: CallOutcome) -> CallOutcome:
        self.on_done(slot, outcome)
        return outcome

    async def run(self, slot: Slot, semaphore: asyncio.Semaphore) -> CallOutcome:
        """Ask the judge for ``slot`` until it ends (see :class:`CallOutcome`)."""
        try:
            return await self._run(slot, semaphore)
        finally:
            self.budget.finish(slot.slot)

    async def _run(self, slot: Slot, semaphore: asyncio.Semaphore) -> CallOutcome:
        recorder = self.recorder
        budget = self.budget
        attempt = slot.next_attempt
        judge_attempt = slot.judge_attempt
        truncations = slot.truncations
        fallbacks = 0
        a_text, b_text = self.texts[slot.a], self.texts[slot.b]
        cache_key = self._cache_key(slot)
        while True:
            if self._stopping():
                return CallOutcome("stopped", attempt)  # planned rows stay planned
            # outside the semaphore: a comparison waiting for earlier ones to finish
            # holds no slot, so they can send their retries
            fits: bool | None = await budget.turn(slot.slot) if self.fatal is None else False
            async with semaphore:
                if self._stopping():
                    return CallOutcome("stopped", attempt)
                if self.cache is not None and attempt == 1 and cache_key in self.cache:
                    assert cache_key is not None
                    return await self._record_cached(slot, self.cache[cache_key])
                ahead = self.release is not None and attempt == 1 and slot.planned_row
                if ahead:
                    assert self.release is not None
                    await self.release(slot)
                    if self._stopping():
                        return CallOutcome("stopped", attempt)
                if fits:
                    fits = budget.fits(slot.slot)  # calls sent while waiting for a slot
                    if fits is None:
                        continue  # an earlier comparison may still need the budget: wait
                if self.fatal is not None or not fits:
                    if attempt == 1:
                        await recorder.cancel(slot.slot, 1)
                        return self._done(slot, CallOutcome("cancelled", attempt))
                    await recorder.mark_failed(slot.slot, attempt - 1)
                    return self._done(slot, CallOutcome("failed", attempt - 1))
                call_no = budget.count_call(slot.slot, judge_attempt)
                sent = self.sent_attempt(slot, attempt, call_no)
                if ahead:
                    # its release is on disk: no commit round trip before the call
                    recorder.sent_ahead(sent)
                else:
                    await recorder.sent(sent)
                request = JudgeRequest(
                    essay_a=a_text,
                    essay_b=b_text,
                    assignment=self.assignment,
                    attempt=judge_attempt,
                    repeat_index=slot.repeat_index,
                    ask_index=slot.ask_index,
                    after_truncation=truncations > 0,
                    judge=slot.judge,
                )
                started = time.perf_counter()
                error: JudgeError | None = None
                verdict: Verdict | None = None
                self.judging += 1
                try:
                    verdict = checked_verdict(await self.judge.judge(request))
                except JudgeError as exc:
                    error = exc
                    if isinstance(exc, JudgeUnavailable) and self.fatal is None:
                        self.fatal = exc  # before the semaphore lets another call start
                except Exception as exc:  # a bug in a judge must not lose the batch
                    error = JudgeError("internal", f"{type(exc).__name__}: {exc}")
                finally:
                    self.judging -= 1
                latency = time.perf_counter() - started
            if verdict is not None:
                try:
                    return await self._record_success(slot, attempt, verdict, latency, cache_key)
                except UnstorableAnswer as exc:
                    self.on_attempt(slot, exc.result)
                    return self._done(slot, CallOutcome("failed", attempt))
                except CJError:
                    raise  # the store itself failed, or the lock was taken over
                except Exception as exc:  # handling one answer must not lose the batch
                    return await self._record_internal(slot, attempt, exc, latency)
            assert error is not None
            # an interrupt does not turn a retryable error into a failure: the attempt
            # is stored as ``retried`` and the next run asks again
            # whether the retry gets a call is settled when it is due (earlier comparisons
            # first); it is stored as failed then if it does not
            budget_left = budget.calls_sent < budget.total_budget
            if isinstance(error, JudgeUnavailable):
                retry = False
            elif error.kind == "unsupported":
                fallbacks += 1
                retry = fallbacks <= MAX_FALLBACKS and budget_left
            elif error.kind == "truncated":
                truncations += 1
                retry = (
                    truncations == 1
                    and judge_attempt < self.retry_policy.max_attempts
                    and budget_left
                )
            else:
                retry = (
                    error.transient
                    and judge_attempt < self.retry_policy.max_attempts
                    and budget_left
                )
            usage = error.usage
            if usage is not None and not all(
                valid_token_count(n)
                for n in (usage.tokens_in, usage.tokens_out, usage.tokens_cached)
            ):
                usage = None  # an impossible count is not stored (nor billed)
            result = AttemptResult(
                slot=slot.slot,
                attempt=attempt,
                status="retried" if retry else "failed",
                received_at=repo.utcnow(),
                error_kind=error.kind,
                error_message=self._with_wait(error),
                tokens_in=usage.tokens_in if usage is not None else None,
                tokens_out=usage.tokens_out if usage is not None else None,
                tokens_cached=usage.tokens_cached if usage is not None else None,
                latency_s=latency,
                request_id=error.request_id,
            )
            try:
                await recorder.result(result)
            except UnstorableAnswer as exc:
                self.on_attempt(slot, exc.result)
                return self._done(slot, CallOutcome("failed", attempt))
            self.on_attempt(slot, result)
            if not retry:
                return self._done(slot, CallOutcome("failed", attempt))
            if self._stopping():
                return CallOutcome("stopped", attempt)
            attempt += 1
            if error.kind == "unsupported":
                continue  # the same question in the next form: at once, same attempt number
            if error.kind != "truncated":
                rng = random.Random(f"{self.seed}:{slot.slot}:{attempt - 1}")
                await sleep_before_retry(
                    self.retry_policy, judge_attempt, error, rng, sleep=self.sleep
                )
            judge_attempt += 1

    def _with_wait(self, error: JudgeError) -> str:
        """The error's message, saying so when a server's Retry-After was cut short."""
        cap = self.retry_policy.max_retry_after_s
        if error.retry_after is not None and error.retry_after > cap:
            return (
                f"{error.message} (the server asked to wait {error.retry_after:g} s; "
                f"waiting at most RETRY_MAX_DELAY_S = {cap:g} s)"
            )
        return error.message

    async def _record_internal(
        self, slot: Slot, attempt: int, exc: Exception, latency: float
    ) -> CallOutcome:
        """Store an unexpected error while handling an answer as that call's failure."""
        result = AttemptResult(
            slot=slot.slot,
            attempt=attempt,
            status="failed",
            received_at=repo.utcnow(),
            error_kind="internal",
            error_message=f"handling the answer failed: {type(exc).__name__}: {exc}",
            latency_s=latency,
        )
        try:
            await self.recorder.result(result)
        except UnstorableAnswer as again:
            result = again.result
        self.on_attempt(slot, result)
        return self._done(slot, CallOutcome("failed", attempt))

    async def store_success(
        self,
        slot: Slot,
        attempt: int,
        verdict: Verdict,
        latency: float | None,
        cache_key: str | None,
    ) -> None:
        """Store a successful attempt (and its judgment-cache entry); used by the
        synchronous calls and by the batch-API jobs."""
        a_sum, b_sum = self.texts[slot.a].checksum, self.texts[slot.b].checksum
        result = AttemptResult(
            slot=slot.slot,
            attempt=attempt,
            status="success",
            received_at=repo.utcnow(),
            winner=verdict.winner,
            confidence=verdict.confidence,
            justification=verdict.justification,
            tokens_in=verdict.tokens_in,
            tokens_out=verdict.tokens_out,
            tokens_cached=verdict.tokens_cached,
            latency_s=latency,
            request_id=verdict.request_id,
            cache_key=(
                CacheKey(cache_key, self.judge.model, a_sum, b_sum, slot.repeat_index)
                if cache_key is not None
                else None
            ),
        )
        await self.recorder.result(result)
        self.on_attempt(slot, result)
        if self.cache is not None and cache_key is not None:
            self.cache[cache_key] = {
                "winner": verdict.winner,
                "confidence": verdict.confidence,
                "justification": verdict.justification,
                "tokens_in": verdict.tokens_in,
                "tokens_out": verdict.tokens_out,
                "batch_id": self.batch_id,
            }

    async def _record_success(
        self, slot: Slot, attempt: int, verdict: Verdict, latency: float, cache_key: str | None
    ) -> CallOutcome:
        await self.store_success(slot, attempt, verdict, verdict.latency_s or latency, cache_key)
        return self._done(slot, CallOutcome("success", attempt, verdict))

    async def _record_cached(self, slot: Slot, hit: CachedAnswer) -> CallOutcome:
        result = AttemptResult(
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
            cache_source=hit.get("batch_id"),
        )
        await self.recorder.result(result)
        self.on_attempt(slot, result)
        verdict = Verdict(
            winner="A" if hit["winner"] == "A" else "B",
            confidence=int(hit["confidence"]),
            justification=str(hit["justification"] or ""),
            tokens_in=int(hit["tokens_in"] or 0),
            tokens_out=int(hit["tokens_out"] or 0),
            cached=True,
        )
        return self._done(slot, CallOutcome("success", 1, verdict, cached=True))
